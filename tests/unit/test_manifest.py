"""Declarations merged into what config.json needs (plugin/manifest.py)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from plugin import Args, Device, Driver, Endpoint, Env, Mount
from plugin._requirements import Requirements, requirements
from plugin.manifest import LOG_LEVEL
from plugin.volume import VolumeDriver

DATA = Mount("data", destination="/data", source="/var/lib/vols", description="volumes")
FUSE = Device("fuse", "/dev/fuse")
TOKEN = Env("TOKEN", None, "API token")


class Vols(VolumeDriver):
    mounts = (DATA,)
    devices = (FUSE,)
    env = (TOKEN,)
    linux_capabilities = ("CAP_SYS_ADMIN",)
    propagated_mount = "/mnt/volumes"
    network = "host"


class Net(Driver):
    implements: ClassVar[str] = "NetworkDriver"
    prefix: ClassVar[str] = "NetworkDriver"
    capability: ClassVar[str] = "docker.networkdriver/1.0"
    endpoints: ClassVar[tuple[Endpoint, ...]] = ()
    mounts = (DATA, Mount("run", destination="/run/net"))
    env = (TOKEN, Env("MTU", "1500"))
    linux_capabilities = ("CAP_NET_ADMIN", "CAP_SYS_ADMIN")
    network = "host"
    pid_host = True


def test_one_driver() -> None:
    assert requirements([Vols]) == Requirements(
        interface_types=("docker.volumedriver/1.0",),
        linux_capabilities=("CAP_SYS_ADMIN",),
        mounts=(DATA,),
        devices=(FUSE,),
        env=(TOKEN, LOG_LEVEL),
        args=None,
        propagated_mount="/mnt/volumes",
        network="host",
        ipc_host=False,
        pid_host=False,
        allow_all_devices=False,
    )


def test_declarations_merge() -> None:
    req = requirements([Vols, Net])
    assert req.interface_types == ("docker.volumedriver/1.0", "docker.networkdriver/1.0")
    assert req.linux_capabilities == ("CAP_NET_ADMIN", "CAP_SYS_ADMIN")
    assert req.mounts == (DATA, Mount("run", destination="/run/net"))
    assert req.env == (TOKEN, Env("MTU", "1500"), LOG_LEVEL)
    assert (req.network, req.pid_host, req.ipc_host) == ("host", True, False)
    assert req.propagated_mount == "/mnt/volumes"


def test_log_level_is_always_declared() -> None:
    class Bare(VolumeDriver):
        pass

    assert requirements([Bare]).env == (LOG_LEVEL,)
    assert LOG_LEVEL.name == "LOG_LEVEL" and LOG_LEVEL.value == "info"

    class Chatty(VolumeDriver):
        env = (Env("LOG_LEVEL", "debug"),)

    # A driver's own LOG_LEVEL replaces the kit's default, in any position.
    assert requirements([Bare, Chatty]).env == (Env("LOG_LEVEL", "debug"),)


def test_conflicting_mounts_name_both_drivers() -> None:
    class Other(VolumeDriver):
        mounts = (Mount("data", destination="/srv"),)

    with pytest.raises(ValueError) as info:
        requirements([Vols, Other])
    assert str(info.value) == (
        f"mount 'data' is declared differently by Vols ({DATA!r}) "
        f"and Other ({Mount('data', destination='/srv')!r})"
    )


def test_two_mounts_onto_one_destination_conflict() -> None:
    class Other(VolumeDriver):
        mounts = (Mount("state", destination="/data"),)

    with pytest.raises(ValueError) as info:
        requirements([Vols, Other])
    assert str(info.value) == (
        "mount destination '/data' is declared differently by Vols ('data') and Other ('state')"
    )


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        (
            "propagated_mount",
            "/mnt/other",
            "propagated_mount is declared differently by Vols ('/mnt/volumes') "
            "and Other ('/mnt/other')",
        ),
        ("network", "none", "network is declared differently by Vols ('host') and Other ('none')"),
        (
            "env",
            (Env("TOKEN", "x"),),
            f"env 'TOKEN' is declared differently by Vols ({TOKEN!r}) and Other "
            f"({Env('TOKEN', 'x')!r})",
        ),
        (
            "devices",
            (Device("fuse", None),),
            f"device 'fuse' is declared differently by Vols ({FUSE!r}) and Other "
            f"({Device('fuse', None)!r})",
        ),
    ],
)
def test_other_conflicts_name_both_drivers(attr: str, value: object, message: str) -> None:
    other = type("Other", (VolumeDriver,), {attr: value})
    with pytest.raises(ValueError) as info:
        requirements([Vols, other])
    assert str(info.value) == message


def test_args_merge() -> None:
    args = Args("args", ("--verbose",), "extra flags")

    class A(VolumeDriver):
        pass

    class B(VolumeDriver):
        pass

    A.args = args
    B.args = args
    assert requirements([A, B]).args == args
    B.args = Args("args", ())
    with pytest.raises(ValueError, match=r"args is declared differently by A .* and B"):
        requirements([A, B])


def test_no_drivers() -> None:
    with pytest.raises(ValueError, match="a plugin serves at least one driver"):
        requirements([])


def test_env_reads_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    assert LOG_LEVEL.get() == "info"
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert LOG_LEVEL.get() == "debug"
