"""Volume drivers: ``docker.volumedriver/1.0`` (``/VolumeDriver.*``).

Read top to bottom: wire constants, request/response models named after the
wire verb, the driver base class, the endpoint table, and a helper for the
daemon's mount reference counting.
"""

from __future__ import annotations

import datetime
import threading
from abc import abstractmethod
from collections import Counter
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ._driver import Driver, Endpoint
from ._wire import Model, wire

__all__ = [
    "Capabilities",
    "CapabilitiesResponse",
    "CreateRequest",
    "GetRequest",
    "GetResponse",
    "ListResponse",
    "MountRefs",
    "MountRequest",
    "MountResponse",
    "PathRequest",
    "PathResponse",
    "RemoveRequest",
    "UnmountRequest",
    "Volume",
    "VolumeDriver",
]

IMPLEMENTS = "VolumeDriver"
CAPABILITY = "docker.volumedriver/1.0"


# --- requests ---------------------------------------------------------------------


@dataclass(slots=True)
class CreateRequest(Model):
    """``docker volume create -d PLUGIN [-o key=value ...] NAME``."""

    name: str = wire("Name")
    #: The user's ``-o`` options, not validated by the daemon (``{}`` if none).
    options: dict[str, str] = wire("Opts", factory=dict)


@dataclass(slots=True)
class RemoveRequest(Model):
    name: str = wire("Name")


@dataclass(slots=True)
class MountRequest(Model):
    """A container (or other daemon operation) starts using the volume.

    ``id`` identifies the mount point; the daemon may mount the same ID more
    than once and unmounts once per successful mount (see ``MountRefs``).
    """

    name: str = wire("Name")
    id: str = wire("ID", "")


@dataclass(slots=True)
class UnmountRequest(Model):
    name: str = wire("Name")
    id: str = wire("ID", "")


@dataclass(slots=True)
class PathRequest(Model):
    name: str = wire("Name")


@dataclass(slots=True)
class GetRequest(Model):
    name: str = wire("Name")


# --- responses --------------------------------------------------------------------


@dataclass(slots=True)
class Volume(Model):
    """A volume as ``Get`` and ``List`` report it.

    ``mountpoint`` is a path inside the plugin (under ``propagated_mount`` for
    the daemon to see mounts made there). ``created_at`` is sent as RFC 3339;
    ``status`` is shown as ``Status`` by ``docker volume inspect``.
    """

    name: str = wire("Name")
    mountpoint: str | None = wire("Mountpoint", None)
    created_at: datetime.datetime | None = wire("CreatedAt", None)
    status: dict[str, Any] | None = wire("Status", None)


@dataclass(slots=True)
class MountResponse(Model):
    mountpoint: str = wire("Mountpoint")

    def __post_init__(self) -> None:
        # The daemon would resolve "" to the plugin's whole rootfs.
        if not self.mountpoint:
            raise ValueError("MountResponse.mountpoint must not be empty")


@dataclass(slots=True)
class PathResponse(Model):
    #: Empty when the volume is not mounted; the daemon asks again later.
    mountpoint: str = wire("Mountpoint", "")


@dataclass(slots=True)
class GetResponse(Model):
    volume: Volume = wire("Volume")


@dataclass(slots=True)
class ListResponse(Model):
    volumes: list[Volume] = wire("Volumes", factory=list)


@dataclass(slots=True)
class Capabilities(Model):
    #: ``"local"`` or ``"global"`` (one volume for a whole Swarm cluster).
    scope: str = wire("Scope", "local")


@dataclass(slots=True)
class CapabilitiesResponse(Model):
    capabilities: Capabilities = wire("Capabilities", factory=Capabilities)


# --- the driver ---------------------------------------------------------------------


class VolumeDriver(Driver):
    """Base class of a volume driver.

    Implement ``create``, ``remove``, ``mount``, ``unmount``, ``path``, ``get``
    and ``list``, each plain or ``async``: plain ones run in a thread pool and
    may block, ``async`` ones run on the event loop and must not. Raise
    ``PluginError`` to fail a call with a message for the user. Rules the
    daemon relies on:

    * ``get`` must raise ``PluginError`` for a name it does not know, or
      ``docker volume create`` skips ``create`` and adopts a phantom volume; it
      must *not* fail for a known volume on a passing backend problem, since
      the daemon then forgets the volume.
    * ``mount`` may see the same ``id`` twice; count references per
      ``(name, id)`` (``MountRefs``) and release on the last ``unmount``.
    * ``list`` and ``get`` are called very often: keep them cheap.
    """

    implements: ClassVar[str] = IMPLEMENTS
    prefix: ClassVar[str] = IMPLEMENTS
    capability: ClassVar[str] = CAPABILITY
    #: Answered by the default ``capabilities()``.
    scope: ClassVar[str] = "local"

    @abstractmethod
    def create(self, req: CreateRequest) -> Awaitable[None] | None: ...

    @abstractmethod
    def remove(self, req: RemoveRequest) -> Awaitable[None] | None: ...

    @abstractmethod
    def mount(self, req: MountRequest) -> MountResponse | Awaitable[MountResponse]: ...

    @abstractmethod
    def unmount(self, req: UnmountRequest) -> Awaitable[None] | None: ...

    @abstractmethod
    def path(self, req: PathRequest) -> PathResponse | Awaitable[PathResponse]: ...

    @abstractmethod
    def get(self, req: GetRequest) -> GetResponse | Awaitable[GetResponse]: ...

    @abstractmethod
    def list(self) -> ListResponse | Awaitable[ListResponse]: ...

    def capabilities(self) -> CapabilitiesResponse | Awaitable[CapabilitiesResponse]:
        return CapabilitiesResponse(Capabilities(self.scope))


# The daemon's per-call deadlines: 2 min for Create and Mount, 1 min for the rest.
VolumeDriver.endpoints = (
    Endpoint("Create", CreateRequest, None, deadline=120),
    Endpoint("Remove", RemoveRequest, None, deadline=60),
    Endpoint("Mount", MountRequest, MountResponse, deadline=120),
    Endpoint("Unmount", UnmountRequest, None, deadline=60),
    Endpoint("Path", PathRequest, PathResponse, deadline=60),
    Endpoint("Get", GetRequest, GetResponse, deadline=60),
    Endpoint("List", None, ListResponse, deadline=60),
    Endpoint("Capabilities", None, CapabilitiesResponse, deadline=60),
)


class MountRefs:
    """Reference counts of a driver's mounts, per volume and mount ID.

    The daemon counts every ``Mount`` call: the same ID can be mounted again
    while it is active (a running container plus ``docker cp``), and each
    successful ``Mount`` is answered by one ``Unmount``. So this is a
    multiset: ``add`` returns True on the volume's first reference (provision
    now); ``discard`` drops one reference of that ID and returns True when the
    volume's last one is gone (release now). Thread-safe, for plain
    (thread-pool) drivers.
    """

    def __init__(self, initial: Mapping[str, Iterable[str]] | None = None) -> None:
        self._refs: dict[str, Counter[str]] = {}
        for name, ids in (initial or {}).items():
            counts = Counter(ids)
            if counts:
                self._refs[name] = counts
        self._lock = threading.Lock()

    def add(self, name: str, mount_id: str) -> bool:
        with self._lock:
            counts = self._refs.setdefault(name, Counter())
            first = not counts
            counts[mount_id] += 1
            return first

    def discard(self, name: str, mount_id: str) -> bool:
        """Drop one reference; an ID never added changes nothing (False)."""
        with self._lock:
            counts = self._refs.get(name)
            if not counts or mount_id not in counts:
                return False
            counts[mount_id] -= 1
            if counts[mount_id] <= 0:
                del counts[mount_id]
            if counts:
                return False
            del self._refs[name]
            return True

    def held(self, name: str) -> list[str]:
        """The volume's references, one entry per reference (sorted), e.g.
        for saving them."""
        with self._lock:
            return sorted(self._refs.get(name, Counter()).elements())

    def count(self, name: str) -> int:
        with self._lock:
            return sum(self._refs.get(name, Counter()).values())

    def forget(self, name: str) -> None:
        with self._lock:
            self._refs.pop(name, None)
