"""Faults on the real daemon, with nothing lost: the plugin killed half-way
through Create and Mount, the daemon restarted under running containers, a
full disk under the state file; hostile bytes on the managed plugin's own
socket; a legacy plugin's socket; the built bundle under --strict.

The kills use localvol's test hook (localvol/driver.py, PAUSE_ENV), switched
on in a copy of the bundle's config.json for a plugin instance of these tests
only. Each fault injected is counted in the run's summary. The daemon restart
happens on a private daemon of that test's own (own_daemon), never the shared
one.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import io
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from localvol.driver import PAUSE_ENV

from tests.unit.test_fuzz import (
    RAW_CASES,
    _http,
    big_raw_cases,
    check_raw,
    parse_responses,
    raw_exchange,
)

from ..conftest import PYTHONPATH, REFERENCES, Tally
from .conftest import (
    ROOT,
    TEST_IMAGE,
    BuiltBundle,
    Plugin,
    built_bundle,
    docker,
    extra_plugin,
    wait_for,
)
from .private_daemon import PrivateDaemon

pytestmark = pytest.mark.e2e

ENOSPC = "No space left on device"


def run(volume: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return docker(
        "run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "sh", "-c", script, check=check
    )


def status(volume: str) -> dict[str, object]:
    info = json.loads(docker("volume", "inspect", volume).stdout)[0]
    return info["Status"]  # type: ignore[no-any-return]


def consistent(plugin: Plugin) -> set[str]:
    """What the daemon lists, what state.json says and what is on disk agree."""
    on_disk = set(os.listdir(plugin.data_dir / "volumes"))
    committed = set(plugin.state()["volumes"])
    assert plugin.listed() == committed == on_disk
    assert os.listdir(plugin.data_dir / "trash") == []
    return committed


def faults_plugin(bundle: BuiltBundle) -> contextlib.AbstractContextManager[Plugin]:
    """An instance of localvol with its test hook switched on (on the daemon
    of DOCKER_HOST)."""
    return extra_plugin(bundle, "faults", env={PAUSE_ENV: "1"})


@pytest.fixture(scope="module")
def faults(bundle: BuiltBundle) -> Iterator[Plugin]:
    with faults_plugin(bundle) as plugin:
        yield plugin


def kill_at(
    plugin: Plugin, call: str, volume: str, command: list[str], tally: Tally
) -> tuple[int, str]:
    """Run ``command``, SIGKILL the plugin once ``call`` of ``volume`` is half
    done, wait for the daemon to restart it; the command's status and stderr."""
    (plugin.data_dir / f"pause-{call}").write_text(volume)
    marker = plugin.data_dir / f"paused-{call}"
    cli = subprocess.Popen(
        ["docker", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(f"{call} of {volume} to pause", marker.exists, 60)
        pid = plugin.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        tally.add("faults injected")
        marker.unlink()
        _, err = cli.communicate(timeout=180)
    finally:
        if cli.poll() is None:
            cli.kill()
    wait_for("the daemon to restart the plugin", lambda: plugin.pid() not in (None, pid))
    wait_for("the restarted plugin to listen", lambda: os.path.exists(plugin.socket()))
    return cli.returncode, err.strip()


def test_kill_mid_create_lists_no_half_created_volume(faults: Plugin, tally: Tally) -> None:
    keep = faults.create_volume(prefix="keep")
    run(keep, "echo kept > /data/file")
    victim = faults.volume("victim")
    before = consistent(faults)
    command = ["volume", "create", "-d", faults.name, victim]
    code, err = kill_at(faults, "create", victim, command, tally)
    if code == 0:
        # A daemon that retries the call whole on the restarted plugin: it
        # lands, entirely (consistent() below checks state, disk and listing).
        assert consistent(faults) == {*before, victim}
    else:
        # dockerd 20.10 retries it without its body, which fails.
        assert err.startswith(f"Error response from daemon: create {victim}: VolumeDriver.Create:")
        # Start-up recovery removed the directory the create had made.
        assert consistent(faults) == before
        assert docker("volume", "inspect", victim, check=False).returncode != 0
        docker("volume", "create", "-d", faults.name, victim)  # the name is free
    assert run(keep, "cat /data/file").stdout == "kept\n"
    assert run(victim, "echo ok > /data/f; cat /data/f").stdout == "ok\n"


def test_kill_mid_mount_loses_nothing(faults: Plugin, tally: Tally) -> None:
    vol = faults.create_volume(prefix="mnt")
    run(vol, "echo kept > /data/file")
    before = consistent(faults)
    command = ["run", "--rm", "-v", f"{vol}:/data", TEST_IMAGE, "cat", "/data/file"]
    code, err = kill_at(faults, "mount", vol, command, tally)
    if code != 0:  # dockerd 20.10: the retried Mount comes without its body
        assert "VolumeDriver.Mount: " in err.splitlines()[0]
    assert consistent(faults) == before
    # The mount that did not commit holds no reference.
    assert status(vol)["mounts"] == 0
    assert faults.state()["volumes"][vol]["mounts"] == []
    assert run(vol, "cat /data/file").stdout == "kept\n"
    assert status(vol)["mounts"] == 0
    # No mount of the volume is left on the host.
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if f"/propagated-mount/{vol} " in line]


def test_hostile_bytes_on_the_managed_plugins_socket(faults: Plugin, tally: Tally) -> None:
    """The raw corpus of the unit fuzz suite, and random bytes, on the plugin
    as the daemon runs it (its rootfs, its HTTP parser): it never restarts."""
    pid = faults.pid()
    path = faults.socket()
    rng = random.Random(20)
    noise = [rng.randbytes(rng.randrange(1, 400)) for _ in range(40)]
    noise += [b"POST /VolumeDriver.Get HTTP/1.1\r\n" + rng.randbytes(60) for _ in range(20)]
    cases = [*RAW_CASES, *big_raw_cases()]
    for raw, statuses in cases:
        answer = raw_exchange(path, raw, wait=10 if statuses else 1.0, expect=len(statuses))
        check_raw(raw, answer, path)
        assert [status for status, _, _ in parse_responses(answer)] == statuses, raw[:80]
    for raw in noise:
        check_raw(raw, raw_exchange(path, raw, wait=0.5, half_close=True), path)
    tally.add("fuzz cases tried", len(cases) + len(noise))
    assert faults.pid() == pid
    # Volumes made behind the daemon's back by the corpus: removed the same way.
    for name in ("big1", "chunked1"):
        answer = raw_exchange(
            path, _http("/VolumeDriver.Remove", json.dumps({"Name": name}).encode())
        )
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    consistent(faults)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 1 MiB tmpfs: the data directory of a plugin instance, filled up below."""
    path = Path(f"/var/tmp/dpk-e2e-full-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "dpk-e2e", str(path)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        if docker("info", check=False).returncode == 0:  # else see remove_plugin()
            path.rmdir()


def fill(path: Path) -> Path:
    """Fill the filesystem of ``path`` up to its last page."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_fails_clearly_and_changes_nothing(
    bundle: BuiltBundle, small_disk: Path, tally: Tally
) -> None:
    with extra_plugin(bundle, "full", data_dir=small_disk) as plugin:
        before = plugin.create_volume(prefix="before")
        run(before, "echo kept > /data/file")
        filler = fill(small_disk)
        state = (small_disk / "state.json").read_bytes()
        new = plugin.volume("new")

        proc = docker("volume", "create", "-d", plugin.name, new, check=False)
        assert proc.stderr.strip() == (
            f"Error response from daemon: create {new}: VolumeDriver.Create: "
            f'cannot create volume "{new}": {ENOSPC}'
        )
        proc = run(before, "cat /data/file", check=False)
        assert proc.stderr.splitlines()[0] == (
            "docker: Error response from daemon: error while mounting volume '': "
            f'VolumeDriver.Mount: cannot mount volume "{before}": {ENOSPC}'
        )
        proc = docker("volume", "rm", before, check=False)
        assert proc.stderr.strip() == (
            f"Error response from daemon: remove {before}: VolumeDriver.Remove: "
            f'cannot remove volume "{before}": {ENOSPC}'
        )
        tally.add("faults injected", 3)
        assert (small_disk / "state.json").read_bytes() == state
        assert consistent(plugin) == {before}
        assert status(before)["mounts"] == 0

        filler.unlink()
        assert run(before, "cat /data/file").stdout == "kept\n"
        docker("volume", "create", "-d", plugin.name, new)
        docker("volume", "rm", before, new)
        assert consistent(plugin) == set()


LEGACY = """
import sys
from plugin import serve
from localvol.driver import LocalVolumes

data, socket, group = sys.argv[1:]
serve(LocalVolumes(data + "/data", data + "/mnt", bind=False), path=socket, group=group)
"""


def test_a_legacy_plugin_serves_the_daemon_on_a_0660_socket(
    private_daemon: PrivateDaemon, tally: Tally
) -> None:
    """Not managed: a process a person starts, found by the daemon at
    /run/docker/plugins/NAME.sock; its socket is 0660 with the group chosen.

    Used through the private daemon (it finds legacy plugins in the same
    directory): dockerd keeps every legacy plugin it looked up by name for
    its lifetime, and once the plugin is gone every volume call that asks
    all drivers (ls, inspect or rm -f of an unknown name) dials it for
    15 s: on the shared daemon it would slow every later test down."""
    name = f"dpk-e2e-legacy-{uuid.uuid4().hex[:8]}"
    socket = f"/run/docker/plugins/{name}.sock"
    data = Path(f"/var/tmp/{name}")
    try:
        group = grp.getgrnam("docker")
    except KeyError:
        group = next(g for g in grp.getgrall() if g.gr_gid != 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", LEGACY, str(data), socket, group.gr_name],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    vol = f"legacy-{uuid.uuid4().hex[:8]}"
    daemon = private_daemon.docker
    try:
        wait_for("the legacy plugin to listen", lambda: os.path.exists(socket), 20)
        st = os.stat(socket)
        assert stat.S_ISSOCK(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, group.gr_gid)
        daemon("volume", "create", "-d", name, vol)
        script = "echo legacy > /data/f; cat /data/f"
        out = daemon("run", "--rm", "-v", f"{vol}:/data", TEST_IMAGE, "sh", "-c", script)
        assert out.stdout == "legacy\n"
        # A legacy plugin answers host paths: the data is where it says.
        info = json.loads(daemon("volume", "inspect", vol).stdout)[0]
        assert info["Driver"] == name
        assert (data / "data" / "volumes" / vol / "f").read_text() == "legacy\n"
        daemon("volume", "rm", vol)
    finally:
        daemon("volume", "rm", "-f", vol, check=False)
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        subprocess.run(["rm", "-rf", str(data)], check=False)
    assert proc.returncode == 0, err
    assert not os.path.exists(socket)


@pytest.mark.parametrize("project", REFERENCES, ids=lambda p: p.name)
def test_each_built_reference_plugin_passes_strict(project: Path) -> None:
    """No privilege broader than the plugin's type needs (bundles built once and
    shared with the other tests)."""
    from plugin.bundle.__main__ import main

    out = io.StringIO()
    argv = ["--project", str(project), "--bundle", str(built_bundle(project))]
    assert main([*argv, "validate", "--strict"], out=out) == 0, out.getvalue()
    assert "warning" not in out.getvalue()


@pytest.mark.xdist_group("restart-faults")
def test_daemon_restart_with_volumes_in_use(
    bundle: BuiltBundle, own_daemon: PrivateDaemon, tally: Tally
) -> None:
    """The faults plugin on a daemon of the test's own, restarted under a
    running container that uses one of its volumes."""
    with (
        own_daemon.as_docker_host("restarting under a running container"),
        faults_plugin(bundle) as faults,
    ):
        restart_with_volumes_in_use(own_daemon, faults, tally)


def restart_with_volumes_in_use(daemon: PrivateDaemon, faults: Plugin, tally: Tally) -> None:
    vol = faults.create_volume(prefix="inuse")
    container = f"dpk-e2e-inuse-{uuid.uuid4().hex[:8]}"
    # Stops at once on SIGTERM (PID 1 has no default action for it).
    script = (
        "trap 'exit 0' TERM; echo start >> /data/starts; "
        "[ -f /data/file ] || echo kept > /data/file; sleep 86400 & wait"
    )
    docker("run", "-d", "--name", container, "--restart", "always", "-v", f"{vol}:/data",
           TEST_IMAGE, "sh", "-c", script)  # fmt: skip
    try:
        wait_for("the container to start", lambda: status(vol)["mounts"] == 1)
        start = time.monotonic()
        daemon.restart()
        tally.add("faults injected")
        running = wait_for(
            "the container to come back",
            lambda: (
                docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() == "true"
            ),
            120,
        )
        assert running
        tally.note(
            f"daemon restart under a running container: back in {time.monotonic() - start:.1f} s"
        )
        assert docker("exec", container, "cat", "/data/file").stdout == "kept\n"
        assert docker("exec", container, "cat", "/data/starts").stdout == "start\nstart\n"
        assert status(vol)["mounts"] == 1
        assert len(faults.state()["volumes"][vol]["mounts"]) == 1
    finally:
        docker("rm", "-f", container, check=False)
    assert status(vol)["mounts"] == 0
    assert faults.state()["volumes"][vol]["mounts"] == []
    consistent(faults)
