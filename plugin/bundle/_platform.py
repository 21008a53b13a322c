"""Architectures: which one a rootfs is for, which one a tag names, which one
a daemon runs.

A managed plugin is one rootfs for one architecture, and the daemon neither
records nor checks which: a plugin for another architecture fails to start
and the daemon reports only ``dial unix .../x.sock: no such file or
directory``. So the builder checks it itself. It reads the architecture from
the rootfs's own ELF files, records it in ``config.json`` as the fixed
environment variable ``PLUGIN_PLATFORM`` (``linux/arm64``: the one place a
plugin's config keeps through create, push and pull, and that ``docker plugin
inspect`` shows), and compares it with the tag before a push and with the
daemon before an enable.

The tag convention: ``1.0-arm64`` or ``arm64`` names an architecture; a tag
that names none (``1.0``, ``latest``) is amd64, the architecture most hosts
run, unless ``--arch`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import resolve_in_rootfs
from ._errors import BuildError, BundleError

__all__ = [
    "ARCHES",
    "DEFAULT_TAG_ARCH",
    "PLATFORM_ENV",
    "Arch",
    "arch_of_platform",
    "arch_output",
    "arch_tag",
    "check_platform",
    "daemon_arch",
    "elf_arch",
    "foreign_elf_files",
    "get_arch",
    "record_platform",
    "recorded_platform",
    "rootfs_arch",
    "tag_arch",
    "target_arch",
]


@dataclass(frozen=True)
class Arch:
    """One architecture under its names: Go's (Docker's), the kernel's
    (``uname -m``, wheel tags), Debian's, and the ELF ``e_machine``."""

    name: str
    machine: str
    debian: str
    elf_machine: int

    @property
    def platform(self) -> str:
        return f"linux/{self.name}"


#: The architectures the builder makes plugins for: the kit's runtime has
#: binary wheels for them and Debian has a Python for them.
ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("amd64", "x86_64", "amd64", 62),
        Arch("arm64", "aarch64", "arm64", 183),
    )
}
_ALIASES = {a.machine: a.name for a in ARCHES.values()}
#: Other ELF machines, to name them in errors (never built for).
_OTHER_ELF = {3: "386", 8: "mips", 20: "ppc", 21: "ppc64le", 22: "s390x", 40: "arm", 243: "riscv64"}
#: The fixed environment variable of config.json that records the platform.
PLATFORM_ENV = "PLUGIN_PLATFORM"
#: The architecture of a tag that names none.
DEFAULT_TAG_ARCH = "amd64"


def get_arch(name: str) -> Arch:
    """``arm64``, ``linux/arm64`` or ``aarch64`` -> the Arch;
    BundleError naming the supported ones otherwise."""
    key = name.strip().lower().removeprefix("linux/").split("/")[0]
    key = _ALIASES.get(key, key)
    if key not in ARCHES:
        known = ", ".join(ARCHES)
        raise BundleError(f"architecture {name!r} is not supported (supported: {known})")
    return ARCHES[key]


def arch_of_platform(platform: str) -> str:
    """``linux/arm64`` -> ``arm64`` (the name as it is, even when unsupported)."""
    return platform.strip().lower().removeprefix("linux/")


def arch_output(output: str, arch: str) -> str:
    """The bundle directory of ``build --arch ARCH``: ``rootfs-build-arm64``."""
    return f"{output.rstrip('/')}-{arch}"


def tag_arch(tag: str) -> str | None:
    """The architecture a tag names by the convention (``1.0-arm64``,
    ``arm64``), or None."""
    last = tag.rsplit("-", 1)[-1].lower()
    return last if last in ARCHES else None


def arch_tag(name: str, arch: str) -> str:
    """``acme/vol:1.0-arm64`` -> ``acme/vol:1.0-amd64`` for ``amd64``: the
    same tag for another architecture, by the convention."""
    repo, _, tag = name.rpartition(":")
    if not repo or "/" in tag:
        repo, tag = name, "latest"
    named = tag_arch(tag)
    if named is not None:
        base = tag[: -len(named)].rstrip("-")
        return f"{repo}:{base}-{arch}" if base else f"{repo}:{arch}"
    return f"{repo}:{tag}-{arch}"


def elf_arch(path: Path) -> str | None:
    """The architecture of an ELF file (Go's name, or the ELF machine number
    as ``elf-<n>`` when unknown), or None if ``path`` is not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    for arch in ARCHES.values():
        if arch.elf_machine == machine:
            return arch.name
    return _OTHER_ELF.get(machine, f"elf-{machine}")


def _program(rootfs: Path, program: str) -> Path | None:
    resolved = resolve_in_rootfs(rootfs, program)
    if resolved is None or not resolved.is_file():
        return None
    return resolved


def rootfs_arch(rootfs: Path, entrypoint: Iterable[str]) -> str:
    """The architecture the plugin's entrypoint runs on in ``rootfs``: its
    ELF machine, or that of a script's ``#!`` interpreter."""
    program = next(iter(entrypoint), None)
    if not program:
        raise BundleError(f"{rootfs}: no entrypoint to read the architecture from")
    path = _program(rootfs, program)
    if path is None:
        raise BundleError(f"{rootfs}: the entrypoint {program} is not in the rootfs")
    arch = elf_arch(path)
    if arch is None:
        with open(path, "rb") as f:
            first = f.readline(256)
        if first.startswith(b"#!") and first[2:].split():
            interpreter = os.fsdecode(first[2:].split()[0])
            inner = _program(rootfs, interpreter)
            arch = elf_arch(inner) if inner is not None else None
    if arch is None:
        raise BundleError(
            f"{rootfs}: cannot tell the architecture of the entrypoint {program} "
            "(neither an ELF program nor a script with an ELF interpreter)"
        )
    return arch


def foreign_elf_files(rootfs: Path, arch: str, limit: int = 5) -> list[str]:
    """ELF files of ``rootfs`` built for another architecture than ``arch``
    (at most ``limit``), as ``/path (arch)``."""
    found: list[str] = []
    for dirpath, _dirs, files in os.walk(rootfs):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            other = elf_arch(path)
            if other is not None and other != arch:
                found.append(f"/{path.relative_to(rootfs)} ({other})")
                if len(found) >= limit:
                    return found
    return found


def recorded_platform(config: Mapping[str, Any]) -> str | None:
    """``PLUGIN_PLATFORM`` of a config.json (``env``) or of the ``Config`` of
    ``docker plugin inspect`` (``Env``), or None."""
    for item in config.get("env") or config.get("Env") or []:
        if not isinstance(item, Mapping):
            continue
        name = item.get("name", item.get("Name"))
        value = item.get("value", item.get("Value"))
        if name == PLATFORM_ENV and isinstance(value, str) and value:
            return value
    return None


def daemon_arch(client: Any) -> str:
    """The daemon's architecture, by Go's name (``amd64``)."""
    return str(client.version().get("Arch") or "")


def target_arch(client: Any, project: Any) -> Arch:
    """What ``project`` builds for: its ``arch`` (``build --arch``), else
    the daemon's."""
    return get_arch(project.arch or daemon_arch(client))


def record_platform(
    config: dict[str, Any], rootfs: Path | None, image_attrs: Mapping[str, Any]
) -> str:
    """Record in ``config`` the platform of ``rootfs`` (its entrypoint's ELF
    machine), or of the image when there is no rootfs to read; returns it."""
    arch = None
    if rootfs is not None and rootfs.is_dir():
        try:
            arch = rootfs_arch(rootfs, config.get("entrypoint") or [])
        except BundleError:
            arch = None  # a missing entrypoint: the validator names it
    if arch is None:
        arch = str(image_attrs.get("Architecture") or "")
    if not arch:
        return ""
    platform = f"linux/{arch}"
    env = [
        item
        for item in config.get("env") or []
        if not (isinstance(item, Mapping) and item.get("name") == PLATFORM_ENV)
    ]
    env.append(
        {
            "name": PLATFORM_ENV,
            "description": "the platform this plugin's rootfs is built for (set by the builder)",
            "settable": [],
            "value": platform,
        }
    )
    config["env"] = env
    return platform


def check_platform(rootfs: Path, config: Mapping[str, Any], arch: str) -> None:
    """BuildError unless the rootfs, and every ELF file in it, is for ``arch``."""
    recorded = recorded_platform(config)
    if recorded != f"linux/{arch}":
        program = (config.get("entrypoint") or ["?"])[0]
        found = recorded or "an unknown platform"
        raise BuildError(
            f"the rootfs built for linux/{arch} runs {program} for {found}: "
            "the base image is for another architecture"
        )
    foreign = foreign_elf_files(rootfs, arch)
    if foreign:
        raise BuildError(
            f"{rootfs} has programs or libraries for another architecture than {arch}: "
            + ", ".join(foreign)
            + " (a wheel or a COPY made for another platform?)"
        )
