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
from dataclasses import dataclass

__all__ = [
    "LOG_LEVEL",
    "PROPAGATED_MOUNT_ENV",
    "Args",
    "Device",
    "Env",
    "Mount",
    "propagated_mount_path",
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
