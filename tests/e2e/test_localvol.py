"""The reference volume plugin on the real daemon, driven with the docker CLI.

Tests run in file order. The daemon restart happens on a private daemon of
that test's own (own_daemon), never the shared one.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import stat
import time
from pathlib import Path

import pytest

from plugin.bundle.__main__ import main

from .conftest import TEST_IMAGE, BuiltBundle, Plugin, docker, extra_plugin
from .private_daemon import PrivateDaemon

pytestmark = pytest.mark.e2e


def inspect_volume(name: str) -> dict:
    return json.loads(docker("volume", "inspect", name).stdout)[0]


def run(volume: str, script: str) -> str:
    """Run a throwaway container with ``volume`` on /data; its stdout."""
    return docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "sh", "-c", script).stdout


def test_bundle_is_rendered_from_the_driver(bundle: BuiltBundle) -> None:
    config = json.loads((bundle.path / "config.json").read_text())
    rootfs = bundle.path / "rootfs"
    assert config["interface"] == {"types": ["docker.volumedriver/1.0"], "socket": "localvol.sock"}
    assert config["propagatedMount"] == "/mnt/volumes"
    assert config["linux"]["capabilities"] == ["CAP_SYS_ADMIN"]
    assert [
        (m["name"], m["destination"], m["source"], m["settable"]) for m in config["mounts"]
    ] == [("data", "/data", "/var/lib/docker-localvol", ["source"])]
    entry = config["entrypoint"]
    assert entry[1:] == [
        "-u",
        "-m",
        "plugin",
        "--socket",
        "localvol.sock",
        "localvol.driver:LocalVolumes",
    ]
    assert os.path.lexists(rootfs / entry[0].lstrip("/"))
    for path in ("run/docker/plugins", "data", "mnt/volumes", "opt/plugin/plugin/volume.py"):
        assert (rootfs / path).exists(), path
    # The builder is not shipped inside the plugin.
    assert not (rootfs / "opt/plugin/plugin/bundle").exists()
    assert "==> docker build" in bundle.build_log


def test_plugin_is_enabled_with_its_settings(localvol: Plugin) -> None:
    info = json.loads(docker("plugin", "inspect", localvol.name).stdout)[0]
    assert info["Enabled"] is True
    assert info["Name"] == localvol.name
    mounts = {m["Name"]: m["Source"] for m in info["Settings"]["Mounts"]}
    assert mounts == {"data": str(localvol.data_dir)}
    assert "LOG_LEVEL=info" in info["Settings"]["Env"]


def test_create_and_inspect_with_options(localvol: Plugin) -> None:
    vol = localvol.create_volume("uid=1000", "gid=1001", "mode=0750")
    info = inspect_volume(vol)
    assert info["Driver"] == localvol.name
    assert info["Name"] == vol
    assert info["Scope"] == "local"
    created = datetime.datetime.fromisoformat(info["CreatedAt"])
    age = datetime.datetime.now(datetime.UTC) - created
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=5)
    assert info["Status"]["options"] == {"gid": "1001", "mode": "0750", "uid": "1000"}
    assert info["Status"]["mounts"] == 0
    st = (localvol.data_dir / "volumes" / vol).stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1001)


def test_one_container_writes_another_reads(localvol: Plugin) -> None:
    vol = localvol.create_volume()
    run(vol, "echo hello from a container > /data/greeting")
    assert run(vol, "cat /data/greeting") == "hello from a container\n"
    host_file = localvol.data_dir / "volumes" / vol / "greeting"
    assert host_file.read_text() == "hello from a container\n"
    # Every mount was released again.
    assert inspect_volume(vol)["Status"]["mounts"] == 0


def test_ls_and_rm(localvol: Plugin) -> None:
    a = localvol.create_volume(prefix="ls")
    b = localvol.create_volume(prefix="ls")
    listed = docker("volume", "ls", "-q", "--filter", f"driver={localvol.name}").stdout.split()
    assert {a, b} <= set(listed)
    docker("volume", "rm", a)
    listed = docker("volume", "ls", "-q", "--filter", f"driver={localvol.name}").stdout.split()
    assert a not in listed and b in listed
    assert not (localvol.data_dir / "volumes" / a).exists()
    assert (localvol.data_dir / "volumes" / b).is_dir()


def test_unknown_option_fails_with_the_drivers_message(localvol: Plugin) -> None:
    vol = localvol.volume()
    proc = docker("volume", "create", "-d", localvol.name, "-o", "color=red", vol, check=False)
    assert proc.returncode != 0
    assert 'VolumeDriver.Create: unknown option "color" (supported: gid, mode, uid)' in proc.stderr
    assert docker("volume", "inspect", vol, check=False).returncode != 0


def test_bad_option_value_fails_with_the_drivers_message(localvol: Plugin) -> None:
    vol = localvol.volume()
    proc = docker("volume", "create", "-d", localvol.name, "-o", "mode=999", vol, check=False)
    assert proc.returncode != 0
    assert 'VolumeDriver.Create: invalid value for option "mode": "999"' in proc.stderr


@pytest.mark.parametrize("bad", ["..", "a/b", "-rf", "x" * 256])
def test_hostile_names_are_refused(localvol: Plugin, bad: str) -> None:
    proc = docker("volume", "create", "-d", localvol.name, "--", bad, check=False)
    assert proc.returncode != 0
    shown = bad if len(bad) <= 64 else bad[:64] + "..."  # long names are cut in messages
    assert proc.stderr.strip() == (
        f"Error response from daemon: create {bad}: VolumeDriver.Create: invalid volume name "
        f"\"{shown}\": use letters, digits, '_', '.', '-', starting with a letter or digit "
        "(at most 255 characters)"
    )
    made = {p.name for p in (localvol.data_dir / "volumes").iterdir()}
    assert bad.split("/")[0] not in made


def test_disable_and_enable_keep_volumes(localvol: Plugin) -> None:
    vol = localvol.create_volume()
    run(vol, "echo kept > /data/file")
    # The daemon refuses a plain disable while volumes exist; the builder says
    # what to do about it.
    proc = docker("plugin", "disable", localvol.name, check=False)
    assert proc.returncode != 0 and "in use" in proc.stderr
    out = io.StringIO()
    assert main(["--name", localvol.name, "disable"], out=out) == 1
    assert out.getvalue().splitlines()[-1] == (
        f"error: disable {localvol.name}: plugin {localvol.name} is in use: volumes made with "
        "it exist. `disable --force` (docker plugin disable -f) disables it anyway and keeps "
        "the volumes and their data; they work again once the plugin is enabled"
    )
    assert json.loads(docker("plugin", "inspect", localvol.name).stdout)[0]["Enabled"] is True
    docker("plugin", "disable", "-f", localvol.name)
    docker("plugin", "enable", localvol.name)
    assert inspect_volume(vol)["Name"] == vol
    assert run(vol, "cat /data/file") == "kept\n"


def test_settings_per_host_move_the_data(localvol: Plugin, tmp_path: Path) -> None:
    """`docker plugin set data.source=...` points the plugin at another host dir."""
    info = json.loads(docker("plugin", "inspect", localvol.name).stdout)[0]
    assert info["Config"]["Mounts"][0]["Settable"] == ["source"]
    proc = docker("plugin", "set", localvol.name, "data.source=/elsewhere", check=False)
    assert proc.returncode != 0
    assert "cannot set on an active plugin" in proc.stderr


@pytest.mark.xdist_group("restart-localvol")
def test_daemon_restart_keeps_volumes_and_data(
    bundle: BuiltBundle, own_daemon: PrivateDaemon
) -> None:
    """The plugin (the bundle's, as the localvol fixture makes it) on a daemon
    of the test's own, restarted: the daemon enables it again by itself, and
    the volume keeps its options and data."""
    with (
        own_daemon.as_docker_host("restarting under localvol"),
        extra_plugin(bundle, "restart") as localvol,
    ):
        vol = localvol.create_volume("mode=0700")
        run(vol, "echo survives > /data/file")
        own_daemon.restart()
        deadline = time.monotonic() + 60
        while True:
            info = json.loads(docker("plugin", "inspect", localvol.name).stdout)[0]
            if info["Enabled"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert info["Enabled"] is True
        assert inspect_volume(vol)["Status"]["options"] == {"mode": "0700"}
        assert run(vol, "cat /data/file") == "survives\n"
