"""The project config, ``plugin.toml``: what the driver cannot say about itself."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import ProjectError

__all__ = ["Project", "load_project", "normalize_name"]

# An image-style reference, lower case: [host[:port]/]path[:tag] (no digest).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)?"
_NAME_RE = re.compile(rf"{_HOST}{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?", re.ASCII)
_DRIVER_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
MAX_SOCKET = 23


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


@dataclass(frozen=True)
class Project:
    """A plugin project: plugin.toml, read by ``load_project``. ``root`` is
    the directory holding it (the Docker build context)."""

    root: Path
    name: str
    drivers: tuple[str, ...]
    socket: str
    description: str = ""
    documentation: str = ""
    dockerfile: str = "Dockerfile"
    base_image: str = "python:3.11-slim-bookworm"
    fallback_base_image: str = "docker-plugin-kit/python:bookworm"
    python: str = "python3"
    requirements: tuple[str, ...] = ()
    output: str = "rootfs-build"
    entrypoint: tuple[str, ...] | None = None
    #: Keep only the files the plugin uses (see plugin/bundle/_slim.py).
    slim: bool = False
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


_KNOWN = {
    "plugin": {"name", "drivers", "socket", "description", "documentation", "entrypoint"},
    "build": {
        "dockerfile",
        "base_image",
        "fallback_base_image",
        "python",
        "requirements",
        "output",
        "slim",
        "keep",
    },
}


def load_project(path: str | Path = "plugin.toml") -> Project:
    """Read and check plugin.toml; ProjectError names the offending key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProjectError(f"{path}: not found (the project config; see README)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path}: invalid TOML: {exc}") from None
    for table, value in data.items():
        if not isinstance(value, dict):
            if table in _KNOWN:
                raise ProjectError(f"{path}: {table} must be a table ([{table}])")
            raise ProjectError(
                f"{path}: unknown key {table!r} outside a table (known tables: plugin, build)"
            )
        if table not in _KNOWN:
            raise ProjectError(f"{path}: unknown table [{table}] (known: plugin, build)")
        for key in value:
            if key not in _KNOWN[table]:
                known = ", ".join(sorted(_KNOWN[table]))
                raise ProjectError(f"{path}: unknown key {table}.{key} (known: {known})")
    plugin = data.get("plugin", {})
    build = data.get("build", {})

    def text(table: dict[str, Any], where: str, key: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if value is None:
            raise ProjectError(f"{path}: {where}.{key} is required")
        if not isinstance(value, str):
            raise ProjectError(f"{path}: {where}.{key} must be a string")
        return value

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
    socket = text(plugin, "plugin", "socket")
    if not socket:
        raise ProjectError(f"{path}: plugin.socket is required")
    if "/" in socket:
        raise ProjectError(f"{path}: plugin.socket: must be a file name, not a path: {socket!r}")
    if len(socket) > MAX_SOCKET:
        raise ProjectError(
            f"{path}: plugin.socket: {socket!r} is {len(socket)} characters; the daemon's "
            f"limit is {MAX_SOCKET}"
        )
    slim = build.get("slim", False)
    if not isinstance(slim, bool):
        raise ProjectError(f"{path}: build.slim must be true or false")
    keep = strings(build, "build", "keep") or ()
    for pattern in keep:
        if not pattern.startswith("/"):
            raise ProjectError(
                f"{path}: build.keep: {pattern!r} must be an absolute path in the image "
                "(glob patterns allowed: *, ?, [...], ** for any depth)"
            )
    return Project(
        root=path.resolve().parent,
        name=name,
        drivers=drivers,
        socket=socket,
        description=text(plugin, "plugin", "description", ""),
        documentation=text(plugin, "plugin", "documentation", ""),
        entrypoint=strings(plugin, "plugin", "entrypoint"),
        dockerfile=text(build, "build", "dockerfile", Project.dockerfile),
        base_image=text(build, "build", "base_image", Project.base_image),
        fallback_base_image=text(
            build, "build", "fallback_base_image", Project.fallback_base_image
        ),
        python=text(build, "build", "python", Project.python),
        requirements=strings(build, "build", "requirements") or (),
        output=text(build, "build", "output", Project.output),
        slim=slim,
        keep=keep,
    )
