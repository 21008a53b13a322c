"""filesecrets as the secret provider of a one-node Swarm on a private
dockerd (the shared daemon is never put in Swarm mode)."""

from __future__ import annotations

import http.client
import json
import random
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import TEST_IMAGE, reference_bundle
from .private_daemon import PrivateDaemon, _free_port

pytestmark = pytest.mark.e2e


@dataclass
class Secrets:
    daemon: PrivateDaemon
    name: str
    root: Path

    @property
    def socket(self) -> str:
        plugin_id = self.daemon.docker("plugin", "inspect", "-f", "{{.Id}}", self.name)
        return f"/run/docker/plugins/{plugin_id.stdout.strip()}/filesecrets.sock"

    def secret(self, prefix: str, *labels: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        args = ["secret", "create", "--driver", self.name]
        for label in labels:
            args += ["--label", label]
        self.daemon.docker(*args, name)
        return name

    def service(self, *args: str, replicas: int = 1, timeout: float = 60) -> dict[str, str]:
        """Run a service to completion; each task's output, by task name."""
        name = f"dpk-e2e-svc-{uuid.uuid4().hex[:8]}"
        self.daemon.docker(
            "service", "create", "--detach", "--no-resolve-image", "--name", name,
            "--replicas", str(replicas), "--restart-condition", "none", *args,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while True:
                states = self.tasks(name)
                if len(states) == replicas and all(s in ("Complete", "Failed", "Rejected")
                                                   for s, _ in states.values()):  # fmt: skip
                    break
                assert time.monotonic() < deadline, f"tasks of {name} not done: {states}"
                time.sleep(0.2)
            out = {}
            for task, (state, error) in states.items():
                if state != "Complete":
                    out[task] = f"{state}: {error}"
                    continue
                cid = self.daemon.docker(
                    "ps", "-aq", "--filter", f"label=com.docker.swarm.task.name={task}"
                ).stdout.strip()
                out[task] = self.daemon.docker("logs", cid).stdout
            return out
        finally:
            self.daemon.docker("service", "rm", name, check=False)

    def tasks(self, service: str) -> dict[str, tuple[str, str]]:
        lines = self.daemon.docker(
            "service", "ps", "--no-trunc", "--format",
            "{{.Name}}.{{.ID}}\t{{.CurrentState}}\t{{.Error}}", service,
        ).stdout.splitlines()  # fmt: skip
        out = {}
        for line in lines:
            task, state, error = ([*line.split("\t"), "", ""])[:3]
            out[task] = (state.split(" ")[0], error)
        return out


@pytest.fixture(scope="module")
def filesecrets_bundle(engine_ready: None) -> Iterator[Path]:
    with reference_bundle("filesecrets") as path:
        yield path


def _data_path_port() -> int:
    """A free UDP port for VXLAN, in the range Swarm accepts (1024-49151)."""
    for _ in range(100):
        port = random.randint(40000, 49151)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free UDP port in 40000-49151")


@pytest.fixture(scope="module")
def swarm(private_daemon: PrivateDaemon) -> Iterator[PrivateDaemon]:
    private_daemon.docker(
        "swarm", "init", "--advertise-addr", "127.0.0.1",
        "--listen-addr", f"127.0.0.1:{_free_port()}", "--data-path-port", str(_data_path_port()),
    )  # fmt: skip
    try:
        yield private_daemon
    finally:
        private_daemon.docker("swarm", "leave", "--force", check=False)


@pytest.fixture(scope="module")
def secrets(swarm: PrivateDaemon, filesecrets_bundle: Path) -> Iterator[Secrets]:
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    state = Secrets(
        swarm, f"dpk-e2e-{tag}/filesecrets:latest", Path(f"/var/tmp/dpk-e2e-secrets-{tag}")
    )
    (state.root / "db").mkdir(parents=True)
    (state.root / "db" / "password").write_bytes(b"hunter2\n")
    engine = Engine(swarm.client())
    try:
        engine.create(state.name, filesecrets_bundle)
        engine.set(state.name, [f"secrets.source={state.root}"])
        engine.enable(state.name, timeout=30)
        yield state
    finally:
        for secret in swarm.docker("secret", "ls", "-q").stdout.split():
            swarm.docker("secret", "rm", secret, check=False)
        swarm.docker("plugin", "rm", "-f", state.name, check=False)
        shutil.rmtree(state.root, ignore_errors=True)


def test_a_service_reads_the_files_content(secrets: Secrets) -> None:
    secret = secrets.secret("db", "filesecrets.path=db/password")
    outputs = secrets.service("--secret", secret, TEST_IMAGE, "cat", f"/run/secrets/{secret}")
    assert list(outputs.values()) == ["hunter2\n"]


def test_without_a_label_the_file_is_named_as_the_secret(secrets: Secrets) -> None:
    name = f"plain-{uuid.uuid4().hex[:8]}"
    (secrets.root / name).write_bytes(b"\x00binary\xff")
    secrets.daemon.docker("secret", "create", "--driver", secrets.name, name)
    outputs = secrets.service("--secret", name, TEST_IMAGE, "od", "-An", "-tx1",
                              f"/run/secrets/{name}")  # fmt: skip
    assert [o.split() for o in outputs.values()] == [["00", "62", "69", "6e", "61", "72", "79",
                                                      "ff"]]  # fmt: skip


def test_do_not_reuse_gives_each_task_its_own_value(secrets: Secrets) -> None:
    (secrets.root / "web").mkdir()
    (secrets.root / "web" / "1").write_text("one")
    (secrets.root / "web" / "2").write_text("two")
    own = secrets.secret("own", "filesecrets.path=web/{slot}")
    outputs = secrets.service("--secret", own, TEST_IMAGE, "cat", f"/run/secrets/{own}",
                              replicas=2)  # fmt: skip
    by_slot = {task.split(".")[1]: out for task, out in outputs.items()}
    # Without DoNotReuse, the node keeps one value for the secret: both tasks
    # would read the one fetched last.
    assert by_slot == {"1": "one", "2": "two"}


def test_a_missing_secret_fails_the_task_and_the_log_says_why(secrets: Secrets) -> None:
    missing = secrets.secret("missing", "filesecrets.path=db/nope")
    secret_id = secrets.daemon.docker("secret", "inspect", "-f", "{{.ID}}", missing).stdout.strip()
    mark = secrets.daemon.log_mark()
    outputs = secrets.service("--secret", missing, TEST_IMAGE, "true")
    # Swarm keeps the plugin's answer for its debug log and fails the task...
    assert list(outputs.values()) == [
        f'Failed: "starting container failed: unable to get secret from secret store: secret '
        f'{secret_id} not found"'
    ]
    # ...so the plugin says why in the daemon's log.
    expected = (
        f"secret '{missing}': no file db/nope in the secrets directory (create it on the host's "
        "secrets.source, or label the secret filesecrets.path=PATH)"
    )
    secrets.daemon.wait_logged(
        f"the plugin's warning: {expected}",
        lambda lines: [ln for ln in lines if expected in ln.replace('\\"', '"')],
        mark,
    )


def test_values_never_reach_the_daemon_log(secrets: Secrets) -> None:
    assert "hunter2" not in secrets.daemon.log_text()
    assert "aHVudGVy" not in secrets.daemon.log_text()  # nor in base64


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("plugin.moby.localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def plugin_call(path: str, body: bytes) -> tuple[int, Any]:
    conn = _Unix(path)
    try:
        conn.request("POST", "/SecretProvider.GetSecret", body=body)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_hostile_bodies_get_json_errors(secrets: Secrets) -> None:
    cases = {
        b"{": "bad request: body is not valid JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1))",
        b'"x"': "bad request: body must be a JSON object, got string",
        b'{"SecretLabels": "x"}': "bad request: SecretLabels: expected an object, got string",
        b'{"ServiceEndpointSpec": {"Ports": [{"TargetPort": "80"}]}}': (
            "bad request: ServiceEndpointSpec.Ports[0].TargetPort: expected an integer, got string"
        ),
        b'{"SecretName": "\xff"}': "bad request: body is not valid UTF-8",
        b'{"SecretName": "../../etc/shadow"}': (
            "secret '../../etc/shadow': '../../etc/shadow' is not a path inside the secrets "
            "directory (a relative path without '.', '..' or empty parts)"
        ),
    }
    for body, err in cases.items():
        status = 500 if body.startswith(b'{"SecretName": "..') else 400
        assert plugin_call(secrets.socket, body) == (status, {"Err": err}), body
