"""The trivial volume driver the benchmark serves through the SDK.

Its calls do no work, so the benchmark measures the SDK's request path:
the same answers as bench/bare.py and bench/goplugin/main.go.
"""

from __future__ import annotations

from plugin.volume import (
    CreateRequest,
    GetRequest,
    GetResponse,
    ListResponse,
    MountRequest,
    MountResponse,
    PathRequest,
    PathResponse,
    RemoveRequest,
    UnmountRequest,
    Volume,
    VolumeDriver,
)


class Trivial(VolumeDriver):
    """Answers Get for any name; ``capabilities`` is the SDK's default."""

    async def get(self, req: GetRequest) -> GetResponse:
        return GetResponse(Volume(req.name, mountpoint="/mnt/volumes/" + req.name))

    async def create(self, req: CreateRequest) -> None:
        return None

    async def remove(self, req: RemoveRequest) -> None:
        return None

    async def mount(self, req: MountRequest) -> MountResponse:
        return MountResponse("/mnt/volumes/" + req.name)

    async def unmount(self, req: UnmountRequest) -> None:
        return None

    async def path(self, req: PathRequest) -> PathResponse:
        return PathResponse()

    async def list(self) -> ListResponse:
        return ListResponse()


class TrivialThreaded(VolumeDriver):
    """The same with plain methods: each call runs in the thread pool."""

    def get(self, req: GetRequest) -> GetResponse:
        return GetResponse(Volume(req.name, mountpoint="/mnt/volumes/" + req.name))

    def create(self, req: CreateRequest) -> None:
        return None

    def remove(self, req: RemoveRequest) -> None:
        return None

    def mount(self, req: MountRequest) -> MountResponse:
        return MountResponse("/mnt/volumes/" + req.name)

    def unmount(self, req: UnmountRequest) -> None:
        return None

    def path(self, req: PathRequest) -> PathResponse:
        return PathResponse()

    def list(self) -> ListResponse:
        return ListResponse()
