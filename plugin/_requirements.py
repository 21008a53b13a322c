"""The declarations of the drivers one plugin serves, merged: what they ask of
``config.json`` together (``requirements``).

Used by the builder, which renders config.json from it, and by the dev-mode
supervisor (``plugin._dev``), which recreates its plugin when it changes; a
plugin serving the daemon never imports it. Its own module (not
``plugin.manifest``, which ``plugin._driver`` imports): merging needs the
driver classes, declaring does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ._driver import Driver
from .manifest import LOG_LEVEL, Args, Device, Env, Mount

__all__ = ["Requirements", "requirements"]

T = TypeVar("T")


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
