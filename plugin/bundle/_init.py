"""``docker-plugin-kit init DIR --type TYPE``: a new plugin project that works as is.

The files come from ``templates/init/``: ``common/`` for every type, then
``<type>/`` (a file there replaces the common file of the same path). Paths
and contents are Jinja2 templates with delimiters that leave Makefiles,
shell and GitHub Actions alone: ``[[ name ]]``, ``[% if ... %]``, ``[# ... #]``.
In paths, ``__package__`` becomes the package name and ``dot-`` a leading
dot; a ``.tmpl`` suffix is dropped. Files whose name starts with ``_`` are
fragments for other templates (``{% include %}``), never written.

A plugin type joins ``init`` with its template directory and one entry in
``TYPES``.
"""

from __future__ import annotations

import keyword
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import ProjectError
from ._project import MAX_SOCKET, TEMPLATES, normalize_name

__all__ = ["TYPES", "InitResult", "PluginType", "init_project", "project_names"]

INIT = TEMPLATES / "init"
#: What may already be in the target directory without --force.
ALLOWED = re.compile(r"(README|LICEN[CS]E|COPYING|NOTICE)([.-].*)?|\.git|\.github|\.gitattributes")


@dataclass(frozen=True)
class PluginType:
    """A plugin type ``init`` can write a project for: the template
    directory ``templates/init/<name>/`` and what the common files need."""

    name: str
    #: One line for ``init --help``.
    summary: str
    #: The driver class is ``<Package in CamelCase><class_suffix>``.
    class_suffix: str
    #: The kit's base class, for the README: ``plugin.volume.VolumeDriver``.
    base: str
    #: ``[build] keep`` of the project: what the slim rootfs keeps that no
    #: import shows (programs the driver runs), and why, for plugin.toml.
    keep: tuple[str, ...] = ()
    keep_why: str = ""


TYPES: dict[str, PluginType] = {
    "volume": PluginType(
        "volume",
        "a volume driver: docker volume create -d NAME",
        "Volumes",
        "plugin.volume.VolumeDriver",
    ),
    "network": PluginType(
        "network",
        "a network driver: docker network create -d NAME:TAG",
        "Networks",
        "plugin.network.NetworkDriver",
        (
            "/usr/sbin/ip",
            "/usr/bin/ip",
            "/usr/sbin/iptables-nft",
            "/usr/sbin/iptables-legacy",
            "/usr/sbin/xtables-nft-multi",
            "/usr/sbin/xtables-legacy-multi",
            "/usr/lib/*-linux-gnu/xtables",
        ),
        "the driver runs ip and iptables (host.py); iptables loads its extensions by name",
    ),
    "ipam": PluginType(
        "ipam",
        "an IPAM driver: docker network create --ipam-driver NAME:TAG",
        "Ipam",
        "plugin.ipam.IpamDriver",
    ),
    "logging": PluginType(
        "logging",
        "a log driver: docker run --log-driver NAME",
        "Logs",
        "plugin.logging.LogDriver",
    ),
    "metrics": PluginType(
        "metrics",
        "a metrics collector: reads the daemon's metrics",
        "Metrics",
        "plugin.metrics.MetricsCollector",
    ),
    "authz": PluginType(
        "authz",
        "an authorization plugin: the daemon's authorization-plugins",
        "Authz",
        "plugin.authz.AuthzPlugin",
    ),
    "secrets": PluginType(
        "secrets",
        "a Swarm secret provider: docker secret create --driver NAME",
        "Secrets",
        "plugin.secrets.SecretProvider",
    ),
}


@dataclass(frozen=True)
class InitResult:
    root: Path
    #: Paths relative to ``root``, in the order written.
    written: list[str]
    #: Files already there that init left as they were (README, LICENSE).
    kept: list[str]
    name: str
    package: str


def project_names(directory: Path, name: str | None) -> tuple[str, str]:
    """The plugin name (as in plugin.toml) and the Python package name, from
    ``name`` or else the directory's name; ProjectError when neither works."""
    given = name if name is not None else directory.resolve().name
    plugin = given if name is not None else re.sub(r"[^a-z0-9._-]+", "-", given.lower())
    try:
        normalize_name(plugin)
    except ProjectError as exc:
        hint = "" if name is not None else " (from the directory's name; give --name)"
        raise ProjectError(f"init: {exc}{hint}") from None
    short = plugin.rsplit("/", 1)[-1].split(":", 1)[0]
    package = re.sub(r"\W+", "_", short).strip("_").lower()
    if not package or package[0].isdigit() or keyword.iskeyword(package):
        raise ProjectError(
            f"init: {short!r} does not make a Python package name; give --name "
            "(letters, digits, - and _, starting with a letter)"
        )
    if len(f"{package}.sock") > MAX_SOCKET:
        raise ProjectError(
            f"init: the socket {package}.sock would be {len(package) + 5} characters; the "
            f"daemon's limit is {MAX_SOCKET}: give a shorter --name (at most "
            f"{MAX_SOCKET - 5} characters)"
        )
    return plugin, package


def _sources(kind: PluginType) -> dict[str, Path]:
    """Template path (relative, as stored) -> file; the type's replace common ones."""
    found: dict[str, Path] = {}
    for top in (INIT / "common", INIT / kind.name):
        if not top.is_dir():
            raise ProjectError(f"init: the template of type {kind.name!r} is missing ({top})")
        for dirpath, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                path = Path(dirpath) / name
                found[path.relative_to(top).as_posix()] = path
    return found


def _target(template: str, package: str) -> str | None:
    parts = []
    for part in template.split("/"):
        if part.startswith("_") and not part.startswith("__"):
            return None  # a fragment
        part = part.replace("__package__", package)
        if part.startswith("dot-"):
            part = "." + part[4:]
        parts.append(part.removesuffix(".tmpl"))
    return "/".join(parts)


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(INIT)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _existing(root: Path) -> Iterator[str]:
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            yield entry.name + ("/" if entry.is_dir() else "")


def init_project(
    directory: str | Path,
    type: str,
    *,
    name: str | None = None,
    force: bool = False,
    kit_version: str | None = None,
) -> InitResult:
    """Write a new project of plugin type ``type`` into ``directory``.

    The directory may be missing or hold only a README, a LICENSE, ``.git``
    and ``.github``; anything else needs ``force``. Without ``force`` no file
    is ever overwritten; a README or LICENSE already there is kept.
    """
    if type not in TYPES:
        known = ", ".join(sorted(TYPES))
        raise ProjectError(f"init: unknown plugin type {type!r} (known: {known})")
    kind = TYPES[type]
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ProjectError(f"init: {root} exists and is not a directory")
    plugin, package = project_names(root, name)
    if kit_version is None:
        from .. import __version__ as kit_version
    sources = _sources(kind)
    targets = {t: s for s, t in ((s, _target(s, package)) for s in sources) if t}
    keep = {t for t in targets if (root / t).exists() and ALLOWED.fullmatch(t.split("/")[0])}
    keep = {t for t in keep if "/" not in t}  # README.md, LICENSE: the author's own
    if not force:
        others = [e for e in _existing(root) if not ALLOWED.fullmatch(e.rstrip("/"))]
        collisions = sorted(t for t in targets if (root / t).exists() and t not in keep)
        if collisions:
            raise ProjectError(
                f"init: {root} already has {', '.join(collisions)} (init never overwrites a "
                "file; --force does)"
            )
        if others:
            raise ProjectError(
                f"init: {root} is not empty: {', '.join(others)} (init writes a new project "
                "next to a README, a LICENSE, .git and .github only; --force writes it anyway)"
            )
    context = {
        "name": plugin.rsplit(":", 1)[0] if ":" in plugin.rsplit("/", 1)[-1] else plugin,
        "short": plugin.rsplit("/", 1)[-1].split(":", 1)[0],
        "package": package,
        "class_name": package.title().replace("_", "") + kind.class_suffix,
        "socket": f"{package}.sock",
        "type": kind,
        "kit_version": kit_version,
    }
    env = _environment()
    rendered = {}
    for target, template in targets.items():
        if target in keep:
            continue
        rendered[target] = env.get_template(_loader_name(sources[template])).render(context)
    written = []
    for target, text in rendered.items():
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(target)
    return InitResult(root, written, sorted(keep), plugin, package)


def _loader_name(path: Path) -> str:
    """A template file's name for the loader (relative to ``INIT``)."""
    return path.relative_to(INIT).as_posix()
