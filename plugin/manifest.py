"""What a plugin needs from the host, declared next to the driver that needs it.

A driver class lists its mounts, devices, settable environment, capabilities
and network needs with these classes; the builder renders ``config.json`` from
the same declarations, so the code and the config cannot drift apart::

    DATA = Mount("data", destination="/data", source="/var/lib/localvol",
                 description="where volumes are stored on the host")

    class LocalVolumes(VolumeDriver):
        mounts = (DATA,)
        propagated_mount = "/mnt/volumes"

Typed per-host settings are declared with ``plugin.settings``; they render
as ``env`` entries too.

This module is imported inside the plugin: it has no dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ._driver import Driver

T = TypeVar("T")

__all__ = [
    "LOG_LEVEL",
    "PROPAGATED_MOUNT_ENV",
    "Args",
    "Device",
    "Env",
    "Mount",
    "Requirements",
    "propagated_mount_path",
    "requirements",
]


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the plugin (``config.json`` ``mounts[]``).

    With ``settable`` the host path can be changed per host:
    ``docker plugin set PLUGIN <name>.source=/srv/path``.
    """

    name: str
    destination: str
    source: str | None = None
    description: str = ""
    type: str = "bind"
    options: tuple[str, ...] = ("rbind",)
    settable: bool = True

    @property
    def host_env(self) -> str:
        """The variable that names this mount's directory when the plugin
        runs as a host service: ``PLUGIN_MOUNT_<NAME>``."""
        return "PLUGIN_MOUNT_" + "".join(c if c.isalnum() else "_" for c in self.name).upper()

    def path(self) -> str:
        """Where the plugin finds this mount: ``destination`` in a managed
        plugin. A plugin run as a host service (outside Docker's plugin
        manager) has no mounts: there ``PLUGIN_MOUNT_<NAME>``, which its
        service unit sets, names the host directory itself."""
        return os.environ.get(self.host_env, self.destination)


@dataclass(frozen=True)
class Device:
    """A host device made available to the plugin (``linux.devices[]``)."""

    name: str
    path: str | None
    description: str = ""
    settable: bool = True


@dataclass(frozen=True)
class Env:
    """An environment variable of the plugin (``env[]``), settable with
    ``docker plugin set PLUGIN NAME=value`` when ``settable``.

    ``get()`` reads it at run time with the declared default, since the daemon
    does not add new defaults to an upgraded plugin's settings.
    """

    name: str
    value: str | None = None
    description: str = ""
    settable: bool = True

    def get(self) -> str | None:
        return os.environ.get(self.name, self.value)


@dataclass(frozen=True)
class Args:
    """Extra command-line arguments (``args``), split on spaces by the daemon."""

    name: str
    value: tuple[str, ...] = ()
    description: str = ""
    settable: bool = True


#: Names the propagated mount's directory when the plugin runs as a host
#: service (see ``propagated_mount_path``).
PROPAGATED_MOUNT_ENV = "PLUGIN_PROPAGATED_MOUNT"


def propagated_mount_path(declared: str) -> str:
    """Where the plugin makes the mounts Docker must see: its declared
    ``propagated_mount`` in a managed plugin; as a host service, the host
    directory ``PLUGIN_PROPAGATED_MOUNT`` names (set by its service unit),
    since the daemon then takes the paths a driver answers as they are."""
    return os.environ.get(PROPAGATED_MOUNT_ENV, declared)


LOG_LEVEL = Env(
    "LOG_LEVEL",
    "info",
    "log level of the plugin process: debug (one line per request), info, warning, error",
)
"""Declared for every plugin served by the kit."""


@dataclass(frozen=True)
class Requirements:
    """Everything the drivers of one plugin ask of ``config.json``, merged."""

    interface_types: tuple[str, ...]
    linux_capabilities: tuple[str, ...]
    mounts: tuple[Mount, ...]
    devices: tuple[Device, ...]
    env: tuple[Env, ...]
    args: Args | None
    propagated_mount: str | None
    network: str
    ipc_host: bool
    pid_host: bool
    allow_all_devices: bool


def requirements(drivers: Iterable[type[Driver]]) -> Requirements:
    """Merge the declarations of the drivers served by one plugin process.

    Declarations shared by several drivers must agree: two mounts (devices,
    env variables) of the same name with different values, two mounts onto
    one destination, or two different propagated mounts, networks or args
    raise ValueError naming both drivers. ``LOG_LEVEL`` is always declared
    (a driver may declare its own, with another default).
    """
    drivers = list(drivers)
    if not drivers:
        raise ValueError("a plugin serves at least one driver")
    types: list[str] = []
    caps: set[str] = set()
    mounts = _merge("mount", [(d, m.name, m) for d in drivers for m in d.mounts])
    _merge("mount destination", [(d, m.destination, m.name) for d in drivers for m in d.mounts])
    devices = _merge("device", [(d, x.name, x) for d in drivers for x in d.devices])
    env = _merge("env", [(d, e.name, e) for d in drivers for e in _env(d)])
    if all(e.name != LOG_LEVEL.name for e in env):
        env.append(LOG_LEVEL)
    args = _merge_one("args", [(d, d.args) for d in drivers if d.args is not None])
    propagated = _merge_one(
        "propagated_mount", [(d, d.propagated_mount) for d in drivers if d.propagated_mount]
    )
    network = _merge_one("network", [(d, d.network) for d in drivers if d.network])
    for d in drivers:
        if d.capability not in types:
            types.append(d.capability)
        caps.update(d.linux_capabilities)
    return Requirements(
        interface_types=tuple(types),
        linux_capabilities=tuple(sorted(caps)),
        mounts=tuple(mounts),
        devices=tuple(devices),
        env=tuple(env),
        args=args,
        propagated_mount=propagated,
        network=network or "",
        ipc_host=any(d.ipc_host for d in drivers),
        pid_host=any(d.pid_host for d in drivers),
        allow_all_devices=any(d.allow_all_devices for d in drivers),
    )


def _env(driver: type[Driver]) -> tuple[Env, ...]:
    """A driver's untyped env entries, then those of its typed settings."""
    typed = driver.settings.env() if driver.settings is not None else ()
    return (*driver.env, *typed)


def _merge(kind: str, items: Sequence[tuple[type[Driver], str, T]]) -> list[T]:
    """Values keyed by name, first declaration first; equal repeats dropped."""
    seen: dict[str, tuple[type[Driver], T]] = {}
    out: list[T] = []
    for driver, key, value in items:
        if key in seen:
            other, before = seen[key]
            if before != value:
                raise ValueError(
                    f"{kind} {key!r} is declared differently by "
                    f"{other.__name__} ({before!r}) and {driver.__name__} ({value!r})"
                )
            continue
        seen[key] = (driver, value)
        out.append(value)
    return out


def _merge_one(kind: str, items: Sequence[tuple[type[Driver], T]]) -> T | None:
    """The one value several drivers may declare, or None if none does."""
    if not items:
        return None
    first, value = items[0]
    for driver, other in items[1:]:
        if other != value:
            raise ValueError(
                f"{kind} is declared differently by "
                f"{first.__name__} ({value!r}) and {driver.__name__} ({other!r})"
            )
    return value
