"""An author's first plugin, as the README tells it, outside the checkout.

The kit is installed from a wheel built from this checkout into a fresh
virtual environment (its dependencies come from the host's site packages, so
no index is needed); nothing of the checkout is on ``sys.path``. Then, for
every type ``init`` knows: ``init``, ``make plugin``, ``make test`` in the new
project, and the plugin used through the daemon. A project whose driver
needs a package this host does not have is built too.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugin.bundle._init import TYPES

from .conftest import ROOT, TEST_IMAGE, docker
from .private_daemon import PrivateDaemon, _free_port

pytestmark = pytest.mark.e2e
#: Each test makes its own project and plugin: the test command spreads them
#: over its processes (tests/e2e/conftest.py).
INDEPENDENT_TESTS = True


@dataclass
class Kit:
    venv: Path
    env: dict[str, str]
    work: Path

    def run(self, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="session")
def kit(engine_ready: None) -> Iterator[Kit]:
    """docker-plugin-kit installed from a wheel of this checkout, in a venv."""
    work = Path(f"/var/tmp/dpk-e2e-init-{uuid.uuid4().hex[:8]}")
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "plugin", src / "plugin", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        built = subprocess.run(
            # No build isolation: setuptools and wheel (a test dependency) are
            # here; no index is needed.
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             str(src), "-w", str(work / "dist")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        [wheel] = (work / "dist").glob("docker_plugin_kit-*.whl")
        venv = work / "venv"
        # No pip of its own (ensurepip takes seconds): the host's pip installs into it.
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
            check=True,
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        env["VIRTUAL_ENV"] = str(venv)
        kit = Kit(venv, env, work)
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "--quiet", "--no-index", f"{wheel}[bundle]"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        where = kit.run("python", "-c", "import plugin, sys; print(plugin.__file__)", cwd=work)
        assert where.stdout.startswith(f"{venv}/lib/"), where.stdout + where.stderr
        yield kit
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Made:
    root: Path
    name: str
    init_to_enabled: float


def _use_volume(made: Made, request: pytest.FixtureRequest) -> None:
    name = made.name
    volume = f"v-{uuid.uuid4().hex[:8]}"
    plugin_id = docker("plugin", "inspect", "-f", "{{.Id}}", f"{name}:latest").stdout.strip()
    # The skeleton keeps each volume as a directory of its propagated mount.
    data = Path(f"/var/lib/docker/plugins/{plugin_id}/propagated-mount/{volume}")
    try:
        assert docker("volume", "create", "-d", name, volume).stdout.strip() == volume
        script = "echo hello > /data/hi && cat /data/hi"
        out = docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "sh", "-c", script)
        assert out.stdout == "hello\n"
        again = docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "cat", "/data/hi")
        assert again.stdout == "hello\n"
        assert (data / "hi").read_text() == "hello\n"
        docker("volume", "rm", volume)
        assert not data.exists()
    finally:
        docker("volume", "rm", "-f", volume, check=False)


def _subnet() -> str:
    """A /24 for one test (10.100-150: clear of the other e2e files' ranges)."""
    return f"10.{random.randint(100, 150)}.{random.randint(0, 255)}"


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def _ip_of(container: str, network: str) -> str:
    info = json.loads(docker("inspect", container).stdout)[0]
    return str(info["NetworkSettings"]["Networks"][network]["IPAddress"])


def _endpoint_of(container: str, network: str) -> str:
    info = json.loads(docker("inspect", container).stdout)[0]
    return str(info["NetworkSettings"]["Networks"][network]["EndpointID"])


def _use_network(name: str) -> None:
    """Two containers on a network of the skeleton reach each other and the
    gateway; the bridge and veths it made go with the containers and the network."""
    net, base = f"dpk-net-{uuid.uuid4().hex[:8]}", _subnet()
    containers = [f"dpk-c-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        docker("network", "create", "-d", f"{name}:latest", "--subnet", f"{base}.0/24",
               "--gateway", f"{base}.1", net)  # fmt: skip
        bridge = "nb-" + docker("network", "inspect", "-f", "{{.Id}}", net).stdout[:12]
        assert bridge in _links()
        for container in containers:
            docker("run", "-d", "--name", container, "--network", net, TEST_IMAGE, "sleep", "600")
        ip1, ip2 = (_ip_of(c, net) for c in containers)
        shown = docker("exec", containers[0], "ip", "-o", "-4", "addr", "show", "eth0").stdout
        assert f" inet {ip1}/24 " in shown, shown
        # By address, by name (the daemon's DNS, as the project's README shows), the gateway.
        for address in (ip2, containers[1], f"{base}.1"):
            docker("exec", containers[0], "ping", "-c", "1", "-W", "2", address)
        # Each container's veth pair: its host end on the bridge.
        made = {bridge, *(f"ve-{_endpoint_of(c, net)[:12]}" for c in containers)}
        assert made <= _links()
        docker("rm", "-f", *containers)
        docker("network", "rm", net)
        assert not (_links() & made)
    finally:
        docker("rm", "-f", *containers, check=False)
        docker("network", "rm", net, check=False)


def _use_ipam(name: str) -> None:
    """A network of Docker's bridge driver takes its addresses from the
    skeleton: the gateway first, then the range, or exactly what --ip says."""
    net, base = f"dpk-net-{uuid.uuid4().hex[:8]}", _subnet()
    containers = [f"dpk-c-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    # The state on a host directory of this test's own, as a user sets one
    # (the default, /var/lib/myipam, is the same for every session).
    data = Path(f"/var/tmp/{name.replace('/', '-')}")
    data.mkdir()
    state = data / "state.json"
    docker("plugin", "disable", f"{name}:latest")
    docker("plugin", "set", f"{name}:latest", f"state.source={data}")
    docker("plugin", "enable", f"{name}:latest")
    try:
        docker("network", "create", "--ipam-driver", f"{name}:latest", "--subnet",
               f"{base}.0/24", "--ip-range", f"{base}.128/25", net)  # fmt: skip
        info = json.loads(docker("network", "inspect", net).stdout)[0]
        assert info["IPAM"]["Driver"] == f"{name}:latest"
        docker("run", "-d", "--name", containers[0], "--network", net, TEST_IMAGE, "sleep", "600")
        docker("run", "-d", "--name", containers[1], "--network", net, "--ip", f"{base}.9",
               TEST_IMAGE, "sleep", "600")  # fmt: skip
        assert [_ip_of(c, net) for c in containers] == [f"{base}.128", f"{base}.9"]
        docker("exec", containers[0], "ping", "-c", "1", "-W", "2", f"{base}.9")
        pools = json.loads(state.read_text())["pools"]
        assert pools[f"{base}.0/24"]["addresses"] == [f"{base}.1", f"{base}.9", f"{base}.128"]
        docker("rm", "-f", *containers)
        docker("network", "rm", net)
        assert json.loads(state.read_text())["pools"] == {}
    finally:
        docker("rm", "-f", *containers, check=False)
        docker("network", "rm", net, check=False)
        shutil.rmtree(data)


def _use_logging(name: str) -> None:
    container = f"dpk-e2e-{uuid.uuid4().hex[:10]}"
    try:
        docker("run", "--name", container, "--network", "none", "--log-driver", name,
               TEST_IMAGE, "sh", "-c", "echo hello; echo oops >&2")  # fmt: skip
        out = docker("logs", container)
        assert (out.stdout, out.stderr) == ("hello\n", "oops\n")
        cid = docker("inspect", "-f", "{{.Id}}", container).stdout.strip()
    finally:
        docker("rm", "-f", container, check=False)
    short = name.rsplit("/", 1)[-1]
    log = Path(f"/var/lib/{short}/{cid}.log")  # the template's default logs.source
    # stdout and stderr are copied apart by the daemon: their order may differ.
    stored = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert sorted(stored) == ["stderr oops", "stdout hello"]
    log.unlink()


def _use_metrics(name: str) -> None:
    short = name.rsplit("/", 1)[-1]
    latest = Path(f"/var/lib/{short}/latest.prom")  # the template's default metrics.source
    text = wait_for_text(latest, 30)
    assert "engine_daemon_engine_info" in text, text[:300]
    latest.unlink()


def wait_for_text(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not written within {timeout:g} s"
        time.sleep(0.1)
    return path.read_text()


@contextlib.contextmanager
def on_private_daemon(
    made: Made, request: pytest.FixtureRequest, *settings: str
) -> Iterator[tuple[PrivateDaemon, str]]:
    """The project's bundle (made by ``make plugin``) as a plugin of the
    private daemon, for the types a daemon must be reconfigured for."""
    from plugin.bundle._engine import Engine

    daemon: PrivateDaemon = request.getfixturevalue("private_daemon")
    name = f"{made.name}:latest"
    engine = Engine(daemon.client())
    try:
        engine.create(name, made.root / "rootfs-build")
        if settings:
            engine.set(name, list(settings))
        engine.enable(name, timeout=30)
        yield daemon, name
    finally:
        daemon.docker("plugin", "rm", "-f", name, check=False)


def _use_authz(made: Made, request: pytest.FixtureRequest) -> None:
    with on_private_daemon(made, request) as (daemon, name):
        daemon.configure(**{"authorization-plugins": [name]})
        try:
            ok = daemon.docker("run", "--rm", TEST_IMAGE, "echo", "hello")
            assert ok.stdout == "hello\n"
            denied = daemon.docker("run", "--rm", "--privileged", TEST_IMAGE, "true", check=False)
            assert (
                f"authorization denied by plugin {name}: privileged containers are not allowed"
                in denied.stderr
            ), denied.stderr
        finally:
            daemon.configure(**{"authorization-plugins": None})


def _use_secrets(made: Made, request: pytest.FixtureRequest) -> None:
    from .test_secrets import Secrets, _data_path_port

    source = Path(f"/var/tmp/dpk-e2e-init-secrets-{uuid.uuid4().hex[:8]}")
    source.mkdir()
    (source / "db-password").write_bytes(b"hunter2")
    try:
        with on_private_daemon(made, request, f"secrets.source={source}") as (daemon, name):
            daemon.docker(
                "swarm", "init", "--advertise-addr", "127.0.0.1",
                "--listen-addr", f"127.0.0.1:{_free_port()}",
                "--data-path-port", str(_data_path_port()),
            )  # fmt: skip
            try:
                daemon.docker("secret", "create", "--driver", name, "db-password")
                outputs = Secrets(daemon, name, source).service(
                    "--secret", "db-password", TEST_IMAGE, "cat", "/run/secrets/db-password"
                )
                assert list(outputs.values()) == ["hunter2"]
            finally:
                daemon.docker("swarm", "leave", "--force", check=False)
    finally:
        shutil.rmtree(source, ignore_errors=True)
        # The skeleton's default secrets directory, made on this host by `make plugin`.
        with contextlib.suppress(OSError):
            Path(f"/etc/docker/{made.name.rsplit('/', 1)[-1]}").rmdir()


#: How each type's plugin is used through a daemon; a type init knows needs
#: one here.
USE: dict[str, Callable[[Made, pytest.FixtureRequest], None]] = {
    "volume": _use_volume,
    "network": lambda made, request: _use_network(made.name),
    "ipam": lambda made, request: _use_ipam(made.name),
    "logging": lambda made, request: _use_logging(made.name),
    "metrics": lambda made, request: _use_metrics(made.name),
    "authz": _use_authz,
    "secrets": _use_secrets,
}


@contextlib.contextmanager
def make(kit: Kit, kind: str, tweak: Callable[[Path], None] | None = None) -> Iterator[Made]:
    """init a project of ``kind`` under a unique name, then ``make plugin``;
    removes the plugin, its image and the project at the end."""
    tag = uuid.uuid4().hex[:8]
    short = f"my{kind}"[:12]
    name = f"dpk-e2e-{tag}/{short}"
    root = kit.work / f"{short}-{tag}"
    start = time.monotonic()
    try:
        made = kit.run("docker-plugin-kit", "init", str(root), "--type", kind, "--name", name,
                       cwd=kit.work)  # fmt: skip
        assert made.returncode == 0, made.stderr
        if tweak is not None:
            tweak(root)
        built = kit.run("make", "plugin", cwd=root)
        assert built.returncode == 0, built.stdout + built.stderr
        assert f"plugin {name}:latest is enabled." in built.stderr
        yield Made(root, name, time.monotonic() - start)
    finally:
        docker("plugin", "rm", "-f", f"{name}:latest", check=False)
        docker("image", "rm", "-f", f"{name}-rootfs:build", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_init_make_plugin_make_test_and_use_it(
    kit: Kit, kind: str, tally: object, request: pytest.FixtureRequest
) -> None:
    assert kind in USE, f"add how a {kind} plugin is used to USE"
    with make(kit, kind) as made:
        tests = kit.run("make", "test", cwd=made.root)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert " passed" in tests.stdout.splitlines()[-1]
        info = docker("plugin", "inspect", "-f", "{{.Enabled}}", f"{made.name}:latest")
        assert info.stdout.strip() == "true"
        USE[kind](made, request)
        tally.note(  # type: ignore[attr-defined]
            f"init --type {kind} to an enabled plugin: {made.init_to_enabled:.1f} s"
        )


def _needs_humanize(root: Path) -> None:
    """A driver that imports a package this host does not have."""
    toml = root / "plugin.toml"
    toml.write_text(toml.read_text().replace("requirements = []", 'requirements = ["humanize"]'))
    driver = root / "myvolume" / "driver.py"
    text = driver.read_text().replace("import logging\n", "import logging\n\nimport humanize\n")
    text = text.replace(
        'status={"mounts": mounted}', 'status={"mounts": humanize.apnumber(mounted)}'
    )
    driver.write_text(text)


def test_a_dependency_only_in_the_rootfs(kit: Kit) -> None:
    missing = kit.run("python", "-c", "import humanize", cwd=kit.work)
    assert missing.returncode != 0, "humanize is installed here: pick another package"
    with make(kit, "volume", _needs_humanize) as made:
        log = (made.root / "rootfs-build" / ".drivers.json").read_text()
        assert '"MyvolumeVolumes"' in log
        volume = f"v-{uuid.uuid4().hex[:8]}"
        try:
            docker("volume", "create", "-d", made.name, volume)
            status = docker("volume", "inspect", "-f", "{{.Status.mounts}}", volume)
            assert status.stdout.strip() == "zero"
        finally:
            docker("volume", "rm", "-f", volume, check=False)
