"""The project config, ``plugin.toml``: what the driver cannot say about itself.

Every key is listed once, in ``KEYS``, with its default and what it does:
the loader refuses any other key (with a did-you-mean), ``init`` writes a
commented ``plugin.toml`` that shows them all, and the README's table is
checked against the same list. Paths are relative to the project, the
directory holding ``plugin.toml``, wherever the command runs.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._socket import MAX_SOCKET_NAME, socket_name_problem
from ._errors import ProjectError

__all__ = ["KEYS", "Key", "Project", "find_project", "load_project", "normalize_name"]

# An image-style reference, lower case: [host[:port]/]path[:tag] (no digest).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)?"
_NAME_RE = re.compile(rf"{_HOST}{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?", re.ASCII)
_DRIVER_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
_PACKAGE_RE = re.compile(r"[A-Za-z_]\w*", re.ASCII)
MAX_SOCKET = MAX_SOCKET_NAME  # the daemon's limit (plugin._socket says why)
#: The kit's own files: the default Dockerfile and config.json.j2.
TEMPLATES = Path(__file__).with_name("templates")
PROJECT_FILE = "plugin.toml"


@dataclass(frozen=True)
class Key:
    """One key of plugin.toml: where it lives, its default and what it does
    (Markdown, as the README's table shows them)."""

    table: str
    name: str
    default: str
    doc: str

    @property
    def dotted(self) -> str:
        return f"{self.table}.{self.name}"

    def row(self) -> str:
        """The key's row in the README's table."""
        return f"| `{self.dotted}` | {self.default} | {self.doc} |"


KEYS = (
    Key("plugin", "name", "(required)",
        "the plugin's name, an image-style reference: `localvol`, `acme/localvol:1.0`, "
        "`registry.example.com/acme/localvol:1.0-amd64` (where `push` sends it); "
        "`--name` overrides it"),
    Key("plugin", "drivers", "(required)",
        "the driver classes the plugin serves, each `module:Class` "
        "(`localvol.driver:LocalVolumes`); one process serves them all on one socket"),
    Key("plugin", "socket", '`"<name>.sock"`',
        "the socket file the plugin listens on in `/run/docker/plugins` "
        "(at most 23 characters: the daemon's limit)"),
    Key("plugin", "description", '`""`',
        "`config.json`'s `description`, shown by `docker plugin ls`"),
    Key("plugin", "documentation", '`""`', "`config.json`'s `documentation`: a URL for users"),
    Key("plugin", "entrypoint", "`PYTHON -u -m plugin --socket SOCKET DRIVERS...`",
        "the plugin's command in the rootfs (PYTHON: `build.python`); the first word is looked up "
        "on the image's PATH"),
    Key("build", "requirements", "`[]`",
        "the drivers' own dependencies, as pip requirements (`requests>=2.31`, or a path to a "
        "wheel, relative to the project): downloaded as wheels on the host, installed into "
        "the rootfs offline, never needed on the build host"),
    Key("build", "packages", "the packages `plugin.drivers` names",
        "the project's top-level packages or modules copied into the rootfs (add the ones "
        "the drivers import that `plugin.drivers` does not name)"),
    Key("build", "dockerfile", "the project's `Dockerfile`, else the kit's",
        "the Dockerfile of the rootfs, relative to the project; the kit's default installs the "
        "wheelhouse, the kit's runtime and the project's packages into a Python base image"),
    Key("build", "config_template", "the project's `config.json.j2`, else the kit's",
        "the Jinja2 template of config.json, relative to the project; values come from the "
        "drivers' declarations, plugin.toml and the image"),
    Key("build", "base_image", '`"python:3.11-slim-bookworm"`',
        "the Dockerfile's `BASE_IMAGE`: needs python3 and pip"),
    Key("build", "fallback_base_image", '`"docker-plugin-kit/python:bookworm"`',
        "used when `base_image` is not here and cannot be pulled (air-gapped hosts); made from "
        "Debian's packages (`docker-plugin-kit base-image`) when missing"),
    Key("build", "python", '`"python3"`', "the interpreter of the default entrypoint"),
    Key("build", "slim", "`true`",
        "keep only what the plugin uses and every module of the standard library and of its "
        "distributions, with the libraries they link (traced in the image, then checked): "
        "about a seventh of the image; false exports the image's whole filesystem"),
    Key("build", "keep", "`[]`",
        "with `slim`: files of the image the slim rootfs keeps as they are, which no import "
        "shows: data read by path, libraries loaded by name (ctypes), programs run; glob "
        "patterns of absolute paths (`*`, `**` for any depth), directories whole, programs "
        "and libraries with the libraries they link; a pattern that matches nothing fails "
        "the build (`[\"/usr/share/zoneinfo/**\", \"/usr/lib/*-linux-gnu/libzstd.so.1*\"]`)"),
    Key("build", "output", '`"rootfs-build"`',
        "the bundle directory (`config.json` + `rootfs/`), relative to the project"),
    Key("init", "kit_version", "(written by init)",
        "the docker-plugin-kit version that wrote the project (informational)"),
    Key("init", "type", "(written by init)", "the plugin type init was asked for (informational)"),
    Key("init", "name", "(written by init)", "the name init was given (informational)"),
)  # fmt: skip

_TABLES = tuple(dict.fromkeys(k.table for k in KEYS))


def normalize_name(name: str) -> str:
    """``acme/vol`` -> ``acme/vol:latest``; ProjectError for an invalid reference."""
    if "@" in name:
        raise ProjectError(
            f"invalid plugin name {name!r}: a plugin name has a tag, not a digest "
            "(e.g. acme/myplugin:1.0)"
        )
    if not _NAME_RE.fullmatch(name) or len(name) > 255:
        raise ProjectError(
            f"invalid plugin name {name!r}: use an image-style reference in lower case, "
            "e.g. acme/myplugin:1.0 or localhost:5000/acme/myplugin"
        )
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def short_name(name: str) -> str:
    """``registry:5000/acme/vol:1.0`` -> ``vol``."""
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


@dataclass(frozen=True)
class Project:
    """A plugin project: plugin.toml, read by ``load_project``. ``root`` is
    the directory holding it; every path of the project is relative to it."""

    root: Path
    name: str
    drivers: tuple[str, ...]
    socket: str
    description: str = ""
    documentation: str = ""
    #: None: the project's ``Dockerfile`` if it has one, else the kit's.
    dockerfile: str | None = None
    #: None: the project's ``config.json.j2`` if it has one, else the kit's.
    config_template: str | None = None
    base_image: str = "python:3.11-slim-bookworm"
    fallback_base_image: str = "docker-plugin-kit/python:bookworm"
    python: str = "python3"
    requirements: tuple[str, ...] = ()
    #: None: the top-level packages of ``drivers``.
    packages: tuple[str, ...] | None = None
    output: str = "rootfs-build"
    entrypoint: tuple[str, ...] | None = None
    #: Keep only the files the plugin uses (see plugin/bundle/_slim.py).
    slim: bool = True
    #: Glob patterns of files of the image the slim rootfs keeps as they are.
    keep: tuple[str, ...] = ()
    #: The architecture to build for (``--arch``; not in plugin.toml), from
    #: an image tagged ``...:build-<arch>``; None is the daemon's own.
    arch: str | None = None

    @property
    def bundle_dir(self) -> Path:
        return self.root / self.output

    @property
    def image_tag(self) -> str:
        """The local tag of the image the rootfs is exported from."""
        repo = self.name.rsplit(":", 1)[0] if ":" in self.name.rsplit("/", 1)[-1] else self.name
        return f"{repo}-rootfs:build" + (f"-{self.arch}" if self.arch else "")

    @property
    def dockerfile_path(self) -> Path:
        return self._own_or_kit(self.dockerfile, "Dockerfile")

    @property
    def template_path(self) -> Path:
        return self._own_or_kit(self.config_template, "config.json.j2")

    def _own_or_kit(self, given: str | None, name: str) -> Path:
        if given is not None:
            return self.root / given
        own = self.root / name
        return own if own.exists() else TEMPLATES / name

    @property
    def own_packages(self) -> tuple[str, ...]:
        """The project's top-level packages or modules that go into the rootfs."""
        if self.packages is not None:
            return self.packages
        return tuple(dict.fromkeys(spec.split(":")[0].split(".")[0] for spec in self.drivers))

    def requirement_args(self) -> list[str]:
        """``requirements`` for pip: a local path made absolute (relative to
        the project), anything else as written."""
        out = []
        for req in self.requirements:
            if req.startswith(("./", "../", "/")) or req.endswith((".whl", ".tar.gz", ".zip")):
                out.append(str((self.root / req).resolve()))
            else:
                out.append(req)
        return out


def find_project(path: str | Path) -> Path:
    """``path`` itself, or ``path``/plugin.toml when it is a directory."""
    path = Path(path)
    return path / PROJECT_FILE if path.is_dir() else path


def _unknown(path: Path, where: str, key: str) -> ProjectError:
    known = [k.name for k in KEYS if k.table == where] if where else list(_TABLES)
    everywhere = {k.name: k.dotted for k in KEYS}
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        hint = f"did you mean {(where + '.') if where else '['}{close[0]}{'' if where else ']'}?"
    elif key in everywhere:
        hint = f"did you mean {everywhere[key]}?"
    else:
        hint = "known: " + ", ".join(sorted(known))
    if not where:
        return ProjectError(f"{path}: unknown table [{key}] ({hint})")
    return ProjectError(f"{path}: unknown key {where}.{key} ({hint})")


def load_project(path: str | Path = PROJECT_FILE) -> Project:
    """Read and check plugin.toml (or the one in directory ``path``);
    ProjectError names the offending key."""
    path = find_project(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProjectError(
            f"{path}: not found (a plugin project has a plugin.toml; "
            "`docker-plugin-kit init DIR` writes one)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path}: invalid TOML: {exc}") from None
    for table, value in data.items():
        if not isinstance(value, dict):
            if table in _TABLES:
                raise ProjectError(f"{path}: {table} must be a table ([{table}])")
            owner = next((k.dotted for k in KEYS if k.name == table), None)
            hint = f"did you mean {owner}?" if owner else "known tables: " + ", ".join(_TABLES)
            raise ProjectError(f"{path}: unknown key {table!r} outside a table ({hint})")
        if table not in _TABLES:
            raise _unknown(path, "", table)
        for key in value:
            if not any(k.table == table and k.name == key for k in KEYS):
                raise _unknown(path, table, key)
    plugin = data.get("plugin", {})
    build = data.get("build", {})
    for key, value in data.get("init", {}).items():
        if not isinstance(value, str):
            raise ProjectError(f"{path}: init.{key} must be a string")

    def text(table: dict[str, Any], where: str, key: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if value is None:
            raise ProjectError(f"{path}: {where}.{key} is required")
        if not isinstance(value, str):
            raise ProjectError(f"{path}: {where}.{key} must be a string")
        return value

    def optional(table: dict[str, Any], where: str, key: str) -> str | None:
        return text(table, where, key) if key in table else None

    def strings(table: dict[str, Any], where: str, key: str) -> tuple[str, ...] | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProjectError(f"{path}: {where}.{key} must be a list of strings")
        return tuple(value)

    given_name = text(plugin, "plugin", "name")
    try:
        name = normalize_name(given_name)
    except ProjectError as exc:
        raise ProjectError(f"{path}: plugin.name: {exc}") from None
    drivers = strings(plugin, "plugin", "drivers")
    if not drivers:
        raise ProjectError(f"{path}: plugin.drivers is required (e.g. ['mypkg.driver:MyVolumes'])")
    for spec in drivers:
        if not _DRIVER_RE.fullmatch(spec):
            raise ProjectError(f"{path}: plugin.drivers: {spec!r} must be written module:ClassName")
    socket = text(plugin, "plugin", "socket", f"{short_name(name)}.sock")
    if not socket:
        raise ProjectError(f"{path}: plugin.socket must not be empty")
    problem = socket_name_problem(socket)
    if problem is not None:
        where = "" if "socket" in plugin else " (the default, from plugin.name)"
        raise ProjectError(f"{path}: plugin.socket{where}: {problem}")
    slim = build.get("slim", Project.slim)
    if not isinstance(slim, bool):
        raise ProjectError(f"{path}: build.slim must be true or false")
    keep = strings(build, "build", "keep") or ()
    for pattern in keep:
        if not pattern.startswith("/"):
            raise ProjectError(
                f"{path}: build.keep: {pattern!r} must be an absolute path in the image "
                "(glob patterns allowed: *, ?, [...], ** for any depth)"
            )
    packages = strings(build, "build", "packages")
    for package in packages or ():
        if not _PACKAGE_RE.fullmatch(package):
            raise ProjectError(
                f"{path}: build.packages: {package!r} must be a top-level package or module "
                "name (no dots, no paths)"
            )
    return Project(
        root=path.resolve().parent,
        name=name,
        drivers=drivers,
        socket=socket,
        description=text(plugin, "plugin", "description", ""),
        documentation=text(plugin, "plugin", "documentation", ""),
        entrypoint=strings(plugin, "plugin", "entrypoint"),
        dockerfile=optional(build, "build", "dockerfile"),
        config_template=optional(build, "build", "config_template"),
        base_image=text(build, "build", "base_image", Project.base_image),
        fallback_base_image=text(
            build, "build", "fallback_base_image", Project.fallback_base_image
        ),
        python=text(build, "build", "python", Project.python),
        requirements=strings(build, "build", "requirements") or (),
        packages=packages,
        output=text(build, "build", "output", Project.output),
        slim=slim,
        keep=keep,
    )
