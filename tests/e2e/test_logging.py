"""The reference log driver (filelog) and metrics plugin (metricsexport) on
the real daemon, driven with the docker CLI.

Each is built once from its project (reference/<name>/, shared: built_bundle) and
created under a unique name with its own data directory; every container a
test runs is removed at its end. The heavy load (100,000 lines on each
stream) is one test. Tests run in file order; the plugin kill comes after
the tests that share the plugin.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import (
    ROOT,
    TEST_IMAGE,
    built_bundle,
    copy_rootfs,
    docker,
    wait_for,
)
from .private_daemon import PrivateDaemon

pytestmark = pytest.mark.e2e


@dataclass
class Instance:
    name: str
    data_dir: Path | None
    containers: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return docker("plugin", "inspect", "-f", "{{.Id}}", self.name).stdout.strip()

    def pid(self) -> int | None:
        state = subprocess.run(
            ["runc", "--root", "/run/docker/runtime-runc/plugins.moby", "state", self.id],
            capture_output=True,
            text=True,
        )
        if state.returncode != 0:
            return None
        info = json.loads(state.stdout)
        return int(info["pid"]) if info.get("status") == "running" else None

    def run(self, *args: str, detach: bool = True) -> str:
        """A container logging with this plugin (removed at the end)."""
        name = f"dpk-e2e-log-{uuid.uuid4().hex[:10]}"
        self.containers.append(name)
        cmd = ["run", "--name", name, "--network", "none", "--log-driver", self.name]
        cmd += ["-d"] if detach else []
        docker(*cmd, *args)
        return name


@contextlib.contextmanager
def instance(
    bundle: Path, label: str, settings: list[str], env: dict[str, str]
) -> Iterator[Instance]:
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    name = f"dpk-e2e-{label}-{tag}/{label}:latest"
    source = bundle
    variant = Path(f"/var/tmp/dpk-e2e-bundle-{label}-{tag}")
    if env:
        config = json.loads((bundle / "config.json").read_text())
        config["env"] += [{"name": k, "description": "test", "value": v} for k, v in env.items()]
        variant.mkdir()
        (variant / "config.json").write_text(json.dumps(config))
        copy_rootfs(bundle, variant)
        source = variant
    data_dir = Path(f"/var/tmp/dpk-e2e-{label}-{tag}") if label == "filelog" else None
    plugin = Instance(name, data_dir)
    engine = Engine(report=lambda line: None)
    engine.create(name, source)
    try:
        if data_dir is not None:
            settings = [f"logs.source={data_dir}", *settings]
        if settings:
            engine.set(name, settings)
        engine.enable(name, timeout=30)
        yield plugin
    finally:
        for container in plugin.containers:
            docker("rm", "-f", container, check=False)
        docker("plugin", "rm", "-f", name, check=False)
        shutil.rmtree(variant, ignore_errors=True)
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def filelog_bundle(engine_ready: None) -> Path:
    return built_bundle(ROOT / "reference" / "filelog")


@pytest.fixture(scope="session")
def metrics_bundle(engine_ready: None) -> Path:
    return built_bundle(ROOT / "reference" / "metricsexport")


@pytest.fixture(scope="module")
def filelog(filelog_bundle: Path) -> Iterator[Instance]:
    """filelog with its test hook on (a pause file hangs its writes)."""
    with instance(filelog_bundle, "filelog", [], {"FILELOG_TEST_PAUSE": "1"}) as plugin:
        yield plugin


def logs(container: str, *args: str) -> tuple[list[str], list[str]]:
    """docker logs: stdout's lines and stderr's lines, apart."""
    proc = docker("logs", *args, container)
    return proc.stdout.splitlines(), proc.stderr.splitlines()


def exited(container: str) -> bool:
    return docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() == "false"


# --- filelog ---------------------------------------------------------------------------


def test_filelog_bundle(filelog_bundle: Path) -> None:
    config = json.loads((filelog_bundle / "config.json").read_text())
    assert config["interface"] == {"types": ["docker.logdriver/1.0"], "socket": "filelog.sock"}
    assert [(m["name"], m["destination"], m["source"]) for m in config["mounts"]] == [
        ("logs", "/logs", "/var/lib/docker-filelog")
    ]
    env = {e["name"]: e["value"] for e in config["env"]}
    assert {k: env[k] for k in ("MAX_SIZE", "MAX_FILE", "COMPRESS", "BUFFER_SIZE")} == {
        "MAX_SIZE": "20m",
        "MAX_FILE": "5",
        "COMPRESS": "true",
        "BUFFER_SIZE": "8m",
    }
    assert config["network"] == {"type": ""}
    assert config["linux"]["capabilities"] == []


def test_100000_lines_on_each_stream_all_back_in_order(filelog: Instance) -> None:
    script = "seq 1 100000 & seq 100001 200000 >&2 & wait"
    container = filelog.run(TEST_IMAGE, "sh", "-c", script)
    assert docker("wait", container).stdout.strip() == "0"
    out, err = logs(container)
    assert out == [str(i) for i in range(1, 100_001)]
    assert err == [str(i) for i in range(100_001, 200_001)]
    assert filelog.data_dir is not None
    cid = docker("inspect", "-f", "{{.Id}}", container).stdout.strip()
    counters = json.loads((filelog.data_dir / cid / "counters.json").read_text())
    assert counters == {"received": 200_000, "written": 200_000, "dropped": 0}


def test_a_100_kib_line_comes_back_whole(filelog: Instance) -> None:
    script = (
        "echo before; dd if=/dev/zero bs=1024 count=100 2>/dev/null | tr '\\0' x; echo; echo after"
    )
    container = filelog.run(TEST_IMAGE, "sh", "-c", script)
    docker("wait", container)
    out, _ = logs(container)
    assert out == ["before", "x" * 102_400, "after"]


def test_logs_follow_a_running_container(filelog: Instance) -> None:
    script = "i=1; while [ $i -le 20 ]; do echo line$i; i=$((i+1)); sleep 0.1; done"
    container = filelog.run(TEST_IMAGE, "sh", "-c", script)
    follow = subprocess.Popen(
        ["docker", "logs", "-f", container], stdout=subprocess.PIPE, text=True
    )
    assert follow.stdout is not None
    first = follow.stdout.readline()
    running_at_first = not exited(container)
    rest = follow.stdout.read()  # ends when the container stops
    assert follow.wait(30) == 0
    assert [first.strip(), *rest.split()] == [f"line{i}" for i in range(1, 21)]
    assert running_at_first, "the first line came only after the container ended"


def test_tail_since_until_as_json_file(filelog: Instance) -> None:
    """The same output through json-file and filelog gives the same answers."""
    script = "seq 1 30; sleep 1.5; seq 31 60; sleep 1.5; seq 61 90"
    ours = filelog.run(TEST_IMAGE, "sh", "-c", script)
    theirs = f"dpk-e2e-json-{uuid.uuid4().hex[:10]}"
    filelog.containers.append(theirs)
    docker(
        "run",
        "-d",
        "--name",
        theirs,
        "--network",
        "none",
        "--log-driver",
        "json-file",
        TEST_IMAGE,
        "sh",
        "-c",
        script,
    )
    docker("wait", ours)
    docker("wait", theirs)

    def stamps(container: str) -> dict[str, str]:
        out, _ = logs(container, "--timestamps")
        return {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in out}

    def answers(container: str) -> list[list[str]]:
        ts = stamps(container)
        return [
            logs(container, "--tail", "10")[0],
            logs(container, "--tail", "0")[0],
            logs(container, "--since", ts["31"])[0],
            logs(container, "--until", ts["60"])[0],
            logs(container, "--since", ts["31"], "--until", ts["60"])[0],
            logs(container, "--tail", "5", "--since", ts["61"])[0],
            [line.split(" ", 1)[1] for line in logs(container, "--tail", "3", "--timestamps")[0]],
        ]

    expected = answers(theirs)
    assert expected[0] == [str(i) for i in range(81, 91)]
    assert expected[2] == [str(i) for i in range(31, 91)]
    assert answers(ours) == expected


def test_bad_options_refuse_the_start(filelog: Instance) -> None:
    name = f"dpk-e2e-log-{uuid.uuid4().hex[:10]}"
    filelog.containers.append(name)
    proc = docker(
        "run",
        "--name",
        name,
        "--network",
        "none",
        "--log-driver",
        filelog.name,
        "--log-opt",
        "max-size=big",
        TEST_IMAGE,
        "true",
        check=False,
    )
    assert proc.returncode != 0
    assert (
        "invalid log opt max-size='big': a size in bytes with an optional k, m or g suffix, "
        "e.g. 20m" in proc.stderr
    ), proc.stderr


def test_rotation_and_compression_on_the_host(filelog: Instance) -> None:
    script = (
        "i=1; while [ $i -le 40 ]; do seq $((i*100-99)) $((i*100)); i=$((i+1)); sleep 0.02; done"
    )
    container = filelog.run(
        "--log-opt", "max-size=8k", "--log-opt", "max-file=3", TEST_IMAGE, "sh", "-c", script
    )
    docker("wait", container)
    cid = docker("inspect", "-f", "{{.Id}}", container).stdout.strip()
    assert filelog.data_dir is not None
    files = sorted(p.name for p in (filelog.data_dir / cid).iterdir())
    assert files == ["counters.json", "log", "log.1.gz", "log.2.gz"]
    out, _ = logs(container)
    assert out == [str(i) for i in range(4001 - len(out), 4001)] and 100 < len(out) < 4000


def test_docker_stop_returns_when_the_disk_hangs(filelog: Instance) -> None:
    """The pause file hangs every write of the plugin: containers still run
    and stop on time, lines past the buffer are dropped and counted."""
    assert filelog.data_dir is not None
    pause = filelog.data_dir / "pause-writes"
    pause.touch()
    try:
        quick = filelog.run("--log-opt", "buffer-size=64k", TEST_IMAGE, "seq", "1", "100000")
        start = time.monotonic()
        assert docker("wait", quick, timeout=60).stdout.strip() == "0"
        assert time.monotonic() - start < 20, "the container waited for the disk"
        looping = filelog.run(TEST_IMAGE, "sh", "-c", "while true; do echo tick; done")
        time.sleep(1)  # it logs meanwhile
        start = time.monotonic()
        docker("stop", "-t", "1", looping, timeout=60)
        # 1 s of grace, then at most filelog's 5 s for its last lines.
        assert time.monotonic() - start < 10
    finally:
        pause.unlink()
    cid = docker("inspect", "-f", "{{.Id}}", quick).stdout.strip()
    counters_file = filelog.data_dir / cid / "counters.json"
    counters = wait_for(
        "the writer to finish",
        lambda: counters_file.exists() and json.loads(counters_file.read_text()),
        30,
    )
    assert counters["received"] == 100_000
    assert counters["dropped"] > 0
    assert counters["written"] + counters["dropped"] == 100_000
    out, _ = logs(quick)
    # What was kept is whole lines, in order, each once (the drops leave gaps).
    numbers = [int(line) for line in out]
    assert numbers == sorted(set(numbers)) and len(numbers) == counters["written"]
    assert numbers[0] == 1


HOSTILE = [b"", b"{", b"[]", b"null", b'{"File": 1}', b'{"File": "/etc/passwd"}', b"\xff" * 8]


def test_hostile_bodies_on_every_endpoint_answer_json(filelog: Instance) -> None:
    """On the plugin's own socket, as the daemon would send them."""
    from tests.unit.test_fuzz import _http, raw_exchange

    path = f"/run/docker/plugins/{filelog.id}/filelog.sock"
    answers = {}
    for call in ("StartLogging", "StopLogging", "Capabilities", "ReadLogs", "Nope"):
        for body in HOSTILE:
            answer = raw_exchange(path, _http(f"/LogDriver.{call}", body), wait=5)
            head, _, payload = answer.partition(b"\r\n\r\n")
            status = int(head.split()[1])
            if status != 200:
                err = json.loads(payload)["Err"]
                assert isinstance(err, str) and err, (call, body, payload)
                assert "Traceback" not in err and "/opt/plugin" not in err, err
            answers[call, body] = status, payload
    assert answers["Capabilities", b""] == (200, b'{"Cap":{"ReadLogs":true}}')
    assert answers["StartLogging", b'{"File": "/etc/passwd"}'] == (
        500,
        b'{"Err":"cannot log to /etc/passwd: not a FIFO"}',
    )
    assert answers["StopLogging", b"{"][0] == 400
    assert answers["Nope", b""][0] == 404
    assert answers["ReadLogs", b'{"File": 1}'] == (
        500,
        b'{"Err":"invalid container ID \'\': expected 64 hexadecimal digits"}',
    )


def test_the_plugin_killed_mid_stream_keeps_what_it_was_handed(filelog: Instance) -> None:
    """Killed (SIGKILL) while a container logs: what it had stored is kept,
    and the restarted plugin reads the container's FIFO again, so what the
    container prints afterwards is logged too, each line once."""
    script = (
        "seq 1 20000; while [ ! -e /tmp/more ]; do sleep 0.05; done; seq 20001 30000; sleep 600"
    )
    container = filelog.run(TEST_IMAGE, "sh", "-c", script)
    wait_for("20000 lines", lambda: len(logs(container)[0]) == 20_000, 60)
    pid = filelog.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for("the plugin to restart", lambda: filelog.pid() not in (None, pid), 60)
    assert logs(container)[0] == [str(i) for i in range(1, 20_001)]
    docker("exec", container, "touch", "/tmp/more")
    wait_for("30000 lines", lambda: len(logs(container)[0]) >= 30_000, 60)
    assert logs(container)[0] == [str(i) for i in range(1, 30_001)]
    start = time.monotonic()
    docker("rm", "-f", container)
    assert time.monotonic() - start < 10
    # New containers log as before.
    after = filelog.run(TEST_IMAGE, "seq", "1", "5")
    docker("wait", after)
    assert logs(after)[0] == ["1", "2", "3", "4", "5"]


REGISTRY = "localhost:5000"


def test_upgrade_keeps_the_logs_and_docker_logs_works(
    filelog_bundle: Path, push_daemon: PrivateDaemon
) -> None:
    """Disable is not refused as "in use" once the containers stopped (even
    after docker logs made the daemon start a logger for them: it is let go
    of a moment after the command returns), and after an
    upgrade docker logs reads what the old version stored, without a daemon
    restart. The two versions are pushed through the push daemon."""
    from plugin.bundle._engine import Engine
    from plugin.bundle._registry import install, push, upgrade

    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5)
    except OSError as exc:
        pytest.fail(f"no registry on {REGISTRY} ({exc}): run scripts/setup")
    tag = uuid.uuid4().hex[:8]
    repo = f"{REGISTRY}/dpk-e2e-{tag}/filelog"
    v1, v2 = f"{repo}:1", f"{repo}:2"
    data = Path(f"/var/tmp/dpk-e2e-filelog-up-{tag}")
    engine = Engine(report=lambda line: None)
    containers: list[str] = []

    def run(*args: str) -> str:
        name = f"dpk-e2e-log-{uuid.uuid4().hex[:10]}"
        containers.append(name)
        docker("run", "--name", name, "--network", "none", "--log-driver", v1, *args)
        return name

    try:
        with push_daemon.as_docker_host("pushing"):
            pusher = Engine(report=lambda line: None)
            for ref in (v1, v2):
                pusher.create(ref, filelog_bundle)
                push(pusher, ref)
                pusher.remove(ref, force=True)
        install(engine, v1, grant=True, settings=[f"logs.source={data}"])
        old = run(TEST_IMAGE, "seq", "1", "100")
        assert logs(old)[0] == [str(i) for i in range(1, 101)]
        assert logs(old, "--tail", "1")[0] == ["100"]
        # The daemon lets go of the plugin when it closes the reader `docker logs`
        # made, in a goroutine of its own once the last line is sent: for a moment
        # after the command returns, disable is refused as "in use", then never.
        in_use = f"Error response from daemon: plugin {v1} is in use"

        def disabled() -> bool:
            proc = docker("plugin", "disable", v1, check=False)
            assert proc.returncode == 0 or proc.stderr.strip() == in_use, proc.stderr
            return proc.returncode == 0

        wait_for(f"the daemon to let go of {v1} after docker logs", disabled, 15)
        upgrade(engine, v1, v2, grant=True)
        info = json.loads(docker("plugin", "inspect", v1).stdout)[0]
        assert (info["Enabled"], info["PluginReference"]) == (True, v2)
        assert logs(old)[0] == [str(i) for i in range(1, 101)]
        new = run(TEST_IMAGE, "seq", "101", "110")
        assert logs(new)[0] == [str(i) for i in range(101, 111)]
    finally:
        for name in containers:
            docker("rm", "-f", name, check=False)
        for ref in (v1, v2):
            docker("plugin", "rm", "-f", ref, check=False)
            push_daemon.docker("plugin", "rm", "-f", ref, check=False)
        shutil.rmtree(data, ignore_errors=True)


# --- metricsexport ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_read_from_the_tcp_port(metrics_bundle: Path) -> None:
    config = json.loads((metrics_bundle / "config.json").read_text())
    assert config["interface"]["types"] == ["docker.metricscollector/1.0"]
    assert config["network"] == {"type": "host"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
                return answer.read().decode()  # type: ignore[no-any-return]
        except OSError:
            return None

    with instance(metrics_bundle, "metricsexport", [f"PORT={port}"], {}) as plugin:
        body = wait_for("the metrics port", scrape, 30)
        assert re.search(r"^engine_daemon_engine_info\{.*\} 1$", body, re.M), body[:500]
        assert "\nmetricsexport_daemon_up 1\n" in body
        with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
        # Loopback only: the port is not served on the host's other addresses.
        listening = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
        )
        assert listening.returncode == 0, listening.stderr
        assert [line.split()[3] for line in listening.stdout.splitlines()] == [f"127.0.0.1:{port}"]
        # Disabled and enabled again (StartMetrics again): it serves again.
        docker("plugin", "disable", plugin.name)
        docker("plugin", "enable", plugin.name)
        assert "engine_daemon_engine_info" in wait_for("the metrics port again", scrape, 30)
