"""The reference volume plugin as a host service, outside Docker's plugin
manager, made from the same project by ``docker-plugin-kit service`` and used
through a daemon: socket-activated on /run/docker/plugins/NAME.sock (the
daemon's first request starts it), and over TCP with TLS both ways where a
spec file in /etc/docker/plugins asks for it. Started directly with the
generated units' commands (systemd-socket-activate stands in for systemd).

The daemon is a private one (it finds the plugin in the same directories):
dockerd keeps every legacy plugin it looked up by name for its lifetime, and
once the plugin is gone each ``docker volume ls`` on that daemon dials it for
30 s, so a test on the shared daemon would slow everyone down until the next
restart."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import signal
import socket as socketlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugin.bundle import load_project
from plugin.bundle.__main__ import main
from tests.certs import Certs, make_certs

from .conftest import TEST_IMAGE, wait_for
from .private_daemon import PrivateDaemon
from .test_publish import PROJECT

pytestmark = pytest.mark.e2e


@dataclass
class Unit:
    """What systemd would read from the generated files."""

    listen: str
    environment: dict[str, str]
    command: list[str]
    prepare: list[str]
    files: dict[str, str]


def generate(name: str, out: Path, *argv: str) -> Unit:
    """``docker-plugin-kit --name NAME service --out OUT ARGV``, read back."""
    log = io.StringIO()
    code = main(
        ["--project", str(PROJECT / "plugin.toml"), "--name", name, "service", "--out", str(out),
         *argv],
        out=log,
    )  # fmt: skip
    assert code == 0, log.getvalue()
    files = {p.name: p.read_text() for p in out.iterdir()}
    short = name.split(":")[0]
    socket_unit = files[f"{short}.socket"]
    service = files[f"{short}.service"]
    listen = next(
        ln.split("=", 1)[1] for ln in socket_unit.splitlines() if ln.startswith("ListenStream=")
    )
    env = {}
    command: list[str] = []
    prepare: list[str] = []
    for line in service.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            k, _, v = shlex.split(value)[0].partition("=")
            env[k] = v
        elif key == "ExecStart":
            command = shlex.split(value)
        elif key == "ExecStartPre":
            prepare = shlex.split(value)
    return Unit(listen, env, command, prepare, files)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """This test's host directories (data, mounts), removed at the end once
    nothing is mounted below them."""
    path = Path(f"/var/tmp/dpk-e2e-svc-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    yield path
    for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = mount.split()[1]
        if target.startswith(str(path) + "/"):
            subprocess.run(["umount", "-l", target], check=False)
    shutil.rmtree(path, ignore_errors=True)


def start(unit: Unit, scratch: Path) -> subprocess.Popen[str]:
    """As systemd would, with this host's directories edited in (the unit
    says: edit the Environment= lines), and a failed start reported."""
    env = dict(unit.environment)
    env["PLUGIN_MOUNT_DATA"] = str(scratch / "data")
    env["PLUGIN_PROPAGATED_MOUNT"] = str(scratch / "mounts")
    env["LOG_LEVEL"] = "debug"
    assert unit.prepare[:2] == ["/bin/mkdir", "-p"]
    for d in (env["PLUGIN_MOUNT_DATA"], env["PLUGIN_PROPAGATED_MOUNT"]):
        os.makedirs(d)
    setenv = [f"--setenv={k}={v}" for k, v in env.items()]
    return subprocess.Popen(
        ["systemd-socket-activate", f"--listen={unit.listen}", *setenv, *unit.command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return out, err


def running(proc: subprocess.Popen[str]) -> str:
    """What the process runs now: systemd-socket-activate until it execs the
    plugin's command."""
    argv0 = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    return "python" if "python" in os.path.basename(argv0) else os.path.basename(argv0)


def use(daemon: PrivateDaemon, driver: str, scratch: Path) -> None:
    """Through the daemon: a volume of this driver, written by a container."""
    volume = f"svc-{uuid.uuid4().hex[:8]}"
    created = False
    try:
        assert daemon.docker("volume", "create", "-d", driver, volume).stdout.strip() == volume
        created = True
        daemon.docker("run", "--rm", "-v", f"{volume}:/d", TEST_IMAGE, "sh", "-c", "echo hi > /d/f")
        # A host service answers host paths, which the daemon mounts as they are.
        assert (scratch / "data/volumes" / volume / "f").read_text() == "hi\n"
        info = json.loads(daemon.docker("volume", "inspect", volume).stdout)[0]
        assert info["Driver"] == driver
        daemon.docker("volume", "rm", volume)
        created = False
        assert not (scratch / "data/volumes" / volume).exists()
    finally:
        if created:
            daemon.docker("volume", "rm", "-f", volume, check=False)


def test_socket_activated_on_the_legacy_socket(
    private_daemon: PrivateDaemon,
    scratch: Path,
    tmp_path: Path,
) -> None:
    name = f"dpk-e2e-svc-{uuid.uuid4().hex[:8]}"
    unit = generate(name, tmp_path / "out")
    assert sorted(unit.files) == [f"{name}.service", f"{name}.socket"]  # no spec: the socket
    assert unit.listen == f"/run/docker/plugins/{name}.sock"
    assert unit.command[1:] == ["-m", "plugin", *load_project(PROJECT / "plugin.toml").drivers]
    assert unit.environment["PLUGIN_MOUNT_DATA"] == "/var/lib/docker-localvol"
    proc = start(unit, scratch)
    try:
        wait_for("the socket", lambda: os.path.exists(unit.listen) or proc.poll() is not None, 30)
        assert proc.poll() is None, proc.communicate()
        # Nothing runs the plugin yet: the daemon's first call (its
        # /Plugin.Activate, never repeated) starts it, and must be answered.
        assert running(proc) == "systemd-socket-activate"
        use(private_daemon, name, scratch)
        assert running(proc) == "python"
    finally:
        out, err = stop(proc)
        with_socket = os.path.exists(unit.listen)
        if with_socket:
            os.unlink(unit.listen)
    assert proc.returncode == 0, err
    served = (
        f"INFO plugin: serving LocalVolumes (VolumeDriver) on {unit.listen} (passed by systemd)"
    )
    assert served in out.splitlines()
    assert with_socket  # systemd's socket: the plugin leaves it


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def free_port() -> int:
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp_with_tls_where_the_spec_file_asks_for_it(
    private_daemon: PrivateDaemon,
    scratch: Path,
    tmp_path: Path,
    certs: Certs,
) -> None:
    name = f"dpk-e2e-tls-{uuid.uuid4().hex[:8]}"
    port = free_port()
    unit = generate(
        name, tmp_path / "out", "--listen", f"https://127.0.0.1:{port}",
        "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key),
        "--tls-ca", str(certs.ca.cert), "--daemon-cert", str(certs.client.cert),
        "--daemon-key", str(certs.client.key),
    )  # fmt: skip
    spec_path = Path(f"/etc/docker/plugins/{name}.json")
    assert json.loads(unit.files[f"{name}.json"]) == {
        "Addr": f"https://127.0.0.1:{port}",
        "TLSConfig": {
            "CAFile": str(certs.ca.cert),
            "CertFile": str(certs.client.cert),
            "KeyFile": str(certs.client.key),
        },
    }
    assert unit.listen == f"127.0.0.1:{port}"
    assert unit.command[3:5] == ["--spec", str(spec_path)]
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(unit.files[f"{name}.json"])
    proc = start(unit, scratch)
    try:

        def listening() -> bool:
            try:
                socketlib.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return proc.poll() is not None

        wait_for("the TLS socket", listening, 30)
        assert proc.poll() is None, proc.communicate()
        use(private_daemon, name, scratch)
    finally:
        spec_path.unlink(missing_ok=True)
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert f"on https://127.0.0.1:{port} (passed by systemd)" in out
