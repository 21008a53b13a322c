"""policyauthz as the authorization plugin of a real dockerd (a private one:
an authorization plugin decides for everybody using its daemon).

The module's plugin is created once, enabled with the kit's command line and
put in the daemon's authorization-plugins; each test leaves it that way. The
tests that stop the daemon or lock it out come last.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import TEST_IMAGE, copy_rootfs, plugin_pid, reference_bundle, wait_for
from .private_daemon import PrivateDaemon

pytestmark = pytest.mark.e2e

POLICY = """\
version: 1
default: allow
self: [{name}]
host_mount_allow: [{allowed}]
users:
  alice:
    rules: {{privileged: "off"}}
"""


@dataclass
class Authz:
    daemon: PrivateDaemon
    name: str
    policy_dir: Path
    allowed: Path

    @property
    def plugin_id(self) -> str:
        return self.daemon.docker("plugin", "inspect", "-f", "{{.Id}}", self.name).stdout.strip()

    @property
    def socket(self) -> str:
        return f"/run/docker/plugins/{self.plugin_id}/policyauthz.sock"

    def write_policy(self, text: str | None = None) -> None:
        """Save the policy as an editor does: a new file renamed over the old."""
        text = text or POLICY.format(name=self.name, allowed=self.allowed)
        new = self.policy_dir / ".policy.yaml.new"
        new.write_text(text)
        os.replace(new, self.policy_dir / "policy.yaml")

    def denied(self, message: str) -> str:
        return f"authorization denied by plugin {self.name}: {message}"

    def run(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.daemon.docker(*args, check=False, user=user)


def kit(daemon: PrivateDaemon, *argv: str) -> tuple[int, str]:
    """The kit's command line against the private daemon."""
    from plugin.bundle.__main__ import main

    out = io.StringIO()
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = daemon.host
    try:
        code = main(list(argv), out=out)
    finally:
        if old is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = old
    return code, out.getvalue()


@pytest.fixture(scope="module")
def policyauthz_bundle(engine_ready: None) -> Iterator[Path]:
    with reference_bundle("policyauthz") as path:
        yield path


@pytest.fixture(scope="module")
def authz(private_daemon: PrivateDaemon, policyauthz_bundle: Path) -> Iterator[Authz]:
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    name = f"dpk-e2e-{tag}/policyauthz:latest"
    state = Authz(
        private_daemon,
        name,
        Path(f"/var/tmp/dpk-e2e-policy-{tag}"),
        Path(f"/var/tmp/dpk-e2e-allowed-{tag}"),
    )
    state.policy_dir.mkdir()
    state.allowed.mkdir()
    state.write_policy()
    engine = Engine(private_daemon.client())
    try:
        engine.create(name, policyauthz_bundle)
        engine.set(name, [f"policy.source={state.policy_dir}"])
        # Enabled the way a user does, who is then told what is left to do.
        code, out = kit(private_daemon, "--name", name, "enable")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[-6:-4] == [
            str(private_daemon.config_file),
            f'    {{"authorization-plugins": ["{name}"]}}',
        ], out
        private_daemon.configure(**{"authorization-plugins": [name]})
        code, out = kit(private_daemon, "--name", name, "enable")
        assert out.splitlines()[-3] == (
            f"{private_daemon.config_file} lists it in authorization-plugins: the daemon asks it "
            "once reloaded"
        )
        yield state
    finally:
        if private_daemon.dockerd is not None and private_daemon.dockerd.poll() is None:
            private_daemon.configure(**{"authorization-plugins": None})
        else:
            private_daemon.config.pop("authorization-plugins", None)
        private_daemon.docker("plugin", "rm", "-f", name, check=False)
        shutil.rmtree(state.policy_dir, ignore_errors=True)
        shutil.rmtree(state.allowed, ignore_errors=True)


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The daemon's answer in the CLI's error output."""
    lines = [line for line in proc.stderr.splitlines() if "Error response from daemon" in line]
    assert lines, proc.stderr
    return lines[-1].split("Error response from daemon: ", 1)[1]


# --- ordinary use -------------------------------------------------------------------------


def test_an_ordinary_run_works(authz: Authz) -> None:
    proc = authz.run("run", "--rm", TEST_IMAGE, "echo", "hello")
    assert (proc.returncode, proc.stdout) == (0, "hello\n"), proc.stderr


def test_privileged_is_denied_with_the_policys_message(authz: Authz) -> None:
    proc = authz.run("run", "--rm", "--privileged", TEST_IMAGE, "true")
    assert proc.returncode == 125
    assert last_line(proc) == authz.denied("privileged containers are denied (rule privileged)")


def json_create(authz: Authz, body: bytes, **headers: str) -> Any:
    return authz.daemon.request(
        "POST",
        "/v1.41/containers/create",
        body,
        {"Content-Type": "application/json", **headers},
    )


BYPASSES = {
    "a second key in another case": b'{"HostConfig": {"Privileged": false, "privileged": true}}',
    "the key spelled with U+017F": '{"Ho\u017ftConfig": {"Privileged": true}}'.encode(),
    "top-level HostConfig fields": b'{"Privileged": true}',
    "a null after true": b'{"HostConfig": {"Privileged": true, "PRIVILEGED": null}}',
}


@pytest.mark.parametrize("case", sorted(BYPASSES))
def test_bodies_the_daemon_reads_as_privileged_are_denied(authz: Authz, case: str) -> None:
    body = BYPASSES[case].replace(b"{", b'{"Image": "%s", ' % TEST_IMAGE.encode(), 1)
    reply = json_create(authz, body)
    assert (reply.status, reply.message) == (
        403,
        authz.denied("privileged containers are denied (rule privileged)"),
    )


def test_the_bypass_bodies_do_make_privileged_containers(authz: Authz) -> None:
    # What the policy protects against: with the rule off, the same bodies
    # give privileged containers (policy edits take effect at once).
    authz.write_policy(POLICY.format(name=authz.name, allowed=authz.allowed).replace(
        "default: allow", "default: allow\nrules: {privileged: \"off\"}"
    ))  # fmt: skip
    made = []
    try:
        for body in BYPASSES.values():
            full = body.replace(b"{", b'{"Image": "%s", ' % TEST_IMAGE.encode(), 1)
            reply = json_create(authz, full)
            assert reply.status == 201, reply.body
            made.append(reply.json["Id"])
            inspected = authz.daemon.docker(
                "inspect", "-f", "{{.HostConfig.Privileged}}", reply.json["Id"]
            )
            assert inspected.stdout.strip() == "true", body
    finally:
        authz.write_policy()
        for cid in made:
            authz.daemon.docker("rm", "-f", cid, check=False)
    assert json_create(authz, b'{"Image": "x", "Privileged": true}').status == 403


def test_a_body_sent_so_that_the_daemon_keeps_it_from_the_plugin_is_denied(authz: Authz) -> None:
    body = b'{"Image": "%s", "HostConfig": {"Privileged": true}}' % TEST_IMAGE.encode()
    chunked = authz.daemon.request(
        "POST", "/v1.41/containers/create", body, {"Content-Type": "application/json"},
        chunked=True,
    )  # fmt: skip
    # dockerd 20.10.24 (Debian) forwards a chunked body: the policy reads it.
    assert (chunked.status, chunked.message) == (
        403,
        authz.denied("privileged containers are denied (rule privileged)"),
    )
    padded = body + b" " * (1024 * 1024)  # over the 1 MiB the daemon forwards
    big = json_create(authz, padded)
    assert (big.status, big.message) == (
        403,
        authz.denied(
            f"the request body cannot be checked: the body is {len(padded)} bytes: the daemon "
            "forwards bodies under 1048576 bytes only (rule body)"
        ),
    )


def test_host_mounts_outside_the_allow_list_are_denied(authz: Authz) -> None:
    proc = authz.run("run", "--rm", "-v", "/etc:/host", TEST_IMAGE, "true")
    assert last_line(proc) == authz.denied(
        f"mounting the host path /etc is denied (rule host_mounts; allowed: {authz.allowed})"
    )
    proc = authz.run(
        "run", "--rm", "--mount", "type=bind,source=/,target=/host", TEST_IMAGE, "true"
    )
    assert last_line(proc) == authz.denied(
        f"mounting the host path / is denied (rule host_mounts; allowed: {authz.allowed})"
    )
    (authz.allowed / "note").write_text("shared\n")
    ok = authz.run("run", "--rm", "-v", f"{authz.allowed}:/shared:ro", TEST_IMAGE, "cat",
                   "/shared/note")  # fmt: skip
    assert (ok.returncode, ok.stdout) == (0, "shared\n"), ok.stderr


def test_exec_is_denied(authz: Authz) -> None:
    name = f"dpk-e2e-exec-{uuid.uuid4().hex[:8]}"
    authz.daemon.docker("run", "-d", "--name", name, TEST_IMAGE, "sleep", "60")
    try:
        proc = authz.run("exec", name, "true")
        assert last_line(proc) == authz.denied("docker exec is denied (rule exec)")
    finally:
        authz.daemon.docker("rm", "-f", name, check=False)


def test_the_plugin_cannot_be_disabled_removed_or_changed(authz: Authz) -> None:
    for args, verb in [
        (("plugin", "disable", authz.name), "disable"),
        (("plugin", "disable", "-f", authz.plugin_id[:12]), "disable"),
        (("plugin", "rm", "-f", authz.name), "rm"),
        (("plugin", "set", authz.name, "LOG_LEVEL=debug"), "set"),
    ]:
        proc = authz.run(*args)
        target = args[-1] if verb != "set" else authz.name
        assert last_line(proc) == authz.denied(
            f"{verb} of the authorization plugin {target} is denied (rule plugins)"
        ), args
    enabled = authz.daemon.docker("plugin", "inspect", "-f", "{{.Enabled}}", authz.name)
    assert enabled.stdout.strip() == "true"


def decisions(lines: list[str]) -> list[dict[str, Any]]:
    """The plugin's decisions among the daemon's log lines."""
    return [
        json.loads(line.split('msg="INFO policyauthz: ', 1)[1].rsplit('" plugin=', 1)[0]
                   .replace('\\"', '"'))
        for line in lines
        if 'msg="INFO policyauthz: {' in line
    ]  # fmt: skip


def test_tls_users_get_their_own_rules(authz: Authz) -> None:
    mark = authz.daemon.log_mark()
    alice = authz.run("create", "--privileged", TEST_IMAGE, "true", user="alice")
    assert alice.returncode == 0, alice.stderr
    authz.daemon.docker("rm", alice.stdout.strip())
    bob = authz.run("create", "--privileged", TEST_IMAGE, "true", user="bob")
    assert last_line(bob) == authz.denied("privileged containers are denied (rule privileged)")

    def both_creates(lines: list[str]) -> list[dict[str, Any]] | None:
        found = [d for d in decisions(lines) if d["uri"].startswith("/v1.41/containers/create")]
        return found if len(found) >= 2 else None

    creates = authz.daemon.wait_logged("the decisions on both creates", both_creates, mark)
    assert [(d["user"], d["decision"], d["rule"]) for d in creates] == [
        ("alice", "allow", "default"),
        ("bob", "deny", "privileged"),
    ]


def test_every_decision_is_in_the_daemon_log_with_its_rule_and_input(authz: Authz) -> None:
    mark = authz.daemon.log_mark()
    authz.run("run", "--rm", "--privileged", "-e", "TOKEN=s3cret", TEST_IMAGE, "true")
    [line] = authz.daemon.wait_logged(
        "the decision on the privileged run",
        lambda lines: [line for line in lines if 'rule\\": \\"privileged' in line],
        mark,
    )
    assert '\\"decision\\": \\"deny\\", \\"rule\\": \\"privileged\\"' in line
    assert '\\"evidence\\": \\"HostConfig.Privileged: true\\"' in line
    assert '\\"uri\\": \\"/v1.41/containers/create\\"' in line
    assert "s3cret" not in authz.daemon.log_text()


def test_a_policy_edit_takes_effect_without_a_restart(authz: Authz) -> None:
    authz.write_policy(POLICY.format(name=authz.name, allowed=authz.allowed).replace(
        "default: allow", "default: deny"
    ))  # fmt: skip
    try:
        proc = authz.run("run", "--rm", TEST_IMAGE, "true")
        assert last_line(proc) == authz.denied(
            "the policy denies what no rule decides (rule default)"
        )
        assert authz.run("ps").returncode == 0  # read-only calls stay allowed
        # A broken policy closes everything, with the reason.
        authz.write_policy("version: 1\nrules: {privileged: sometimes}\n")
        proc = authz.run("ps")
        assert last_line(proc) == authz.denied(
            "no usable authorization policy: /etc/policyauthz/policy.yaml: rules.privileged: "
            "must be deny or off, not 'sometimes' (rule policy)"
        )
    finally:
        authz.write_policy()
    assert authz.run("run", "--rm", TEST_IMAGE, "true").returncode == 0


# --- the plugin itself misbehaving --------------------------------------------------------------

GARBAGE = r"""
import os, signal, socket, sys
# PID 1 of its container: SIGTERM (the daemon stopping it) does nothing unless handled.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
path = "/run/docker/plugins/policyauthz.sock"
if os.path.exists(path):
    os.unlink(path)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(16)
while True:
    conn, _ = server.accept()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        else:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ngarbage"
            )
    except OSError:
        pass
    finally:
        conn.close()
"""


@contextlib.contextmanager
def garbage_plugin(authz: Authz, bundle: Path) -> Iterator[str]:
    """A plugin that answers every call with a 200 whose body is not JSON.

    It answers only connections that send a request, and lives on when a
    peer goes away: dockerd checks that a plugin listens by connecting and
    closing at once, at every start. A plugin that died of that (a write to
    the closed connection) was started again and again, and each time the
    daemon removed its socket directory first: a request at such a moment
    failed with "no such file or directory" instead of the garbage."""
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    name = f"dpk-e2e-{tag}/garbage:latest"
    variant = Path(f"/var/tmp/dpk-e2e-bundle-garbage-{tag}")
    config = json.loads((bundle / "config.json").read_text())
    config["entrypoint"] = [config["entrypoint"][0], "-c", GARBAGE]
    config["mounts"] = []
    variant.mkdir()
    (variant / "config.json").write_text(json.dumps(config))
    copy_rootfs(bundle, variant)
    engine = Engine(authz.daemon.client())
    try:
        engine.create(name, variant)
        engine.enable(name, timeout=30)
        yield name
    finally:
        shutil.rmtree(variant, ignore_errors=True)
        authz.daemon.docker("plugin", "rm", "-f", name, check=False)


def test_a_plugin_that_answers_garbage_denies(authz: Authz, policyauthz_bundle: Path) -> None:
    with garbage_plugin(authz, policyauthz_bundle) as garbage:
        garbage_id = authz.daemon.docker("plugin", "inspect", "-f", "{{.Id}}", garbage)
        pid = plugin_pid(garbage_id.stdout.strip())
        assert pid is not None
        authz.daemon.configure(**{"authorization-plugins": [authz.name, garbage]})
        try:
            # A 200 the daemon cannot decode: it fails the request.
            failed = (
                f"plugin {garbage} failed with error: invalid character 'g' looking for "
                "beginning of value"
            )
            listing = authz.daemon.request("GET", "/v1.41/containers/json")
            assert (listing.status, listing.message) == (500, failed)
            body = b'{"Image": "%s"}' % TEST_IMAGE.encode()
            create = json_create(authz, body)
            assert (create.status, create.message) == (500, failed)
            proc = authz.run("run", "--rm", TEST_IMAGE, "true")
            assert proc.returncode == 125 and "500 Internal Server Error" in proc.stderr
            # The same process answered throughout: never stopped and started again.
            assert plugin_pid(garbage_id.stdout.strip()) == pid
        finally:
            authz.daemon.configure(**{"authorization-plugins": [authz.name]})
    assert authz.run("ps").returncode == 0


def test_a_killed_plugin_never_lets_a_denied_request_through(authz: Authz) -> None:
    plugin_id = authz.plugin_id
    pid = plugin_pid(plugin_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # The daemon starts the plugin again; meanwhile nothing gets through
    # that the policy denies.
    proc = authz.run("run", "--rm", "--privileged", TEST_IMAGE, "true")
    assert proc.returncode != 0
    assert last_line(proc) in (
        authz.denied("privileged containers are denied (rule privileged)"),
    ) or last_line(proc).startswith(f"plugin {authz.name} failed with error: "), proc.stderr
    wait_for("the plugin to be back", lambda: plugin_pid(plugin_id) not in (None, pid), 30)
    wait_for("an ordinary run to work", lambda: authz.run("run", "--rm", TEST_IMAGE, "true")
             .returncode == 0, 30)  # fmt: skip


# --- hostile bodies on the plugin's own socket ---------------------------------------------------


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("plugin.moby.localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def plugin_call(path: str, call: str, body: bytes) -> tuple[int, Any]:
    conn = _Unix(path)
    try:
        conn.request("POST", call, body=body)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


HOSTILE = {
    b"{": "bad request: body is not valid JSON (Expecting property name enclosed in double "
    "quotes: line 1 column 2 (char 1))",
    b"[]": "bad request: body must be a JSON object, got array",
    b'{"RequestBody": 7}': "bad request: RequestBody: expected base64 data, got number",
    b'{"RequestBody": "%%%"}': "bad request: RequestBody: expected base64 data, got string",
    b'{"RequestHeaders": ["x"]}': "bad request: RequestHeaders: expected an object, got array",
    b'{"RequestUri": "\xff"}': "bad request: body is not valid UTF-8",
    b"[" * 100_000: "bad request: body is nested too deeply",
    b'{"RequestPeerCertificates": ["LS0t", 1]}': (
        "bad request: RequestPeerCertificates[1]: expected base64 data, got number"
    ),
}


def test_hostile_bodies_get_json_errors_from_every_endpoint(authz: Authz) -> None:
    for call in ("/AuthZPlugin.AuthZReq", "/AuthZPlugin.AuthZRes"):
        for body, err in HOSTILE.items():
            assert plugin_call(authz.socket, call, body) == (400, {"Err": err}), (call, body)
        status, answer = plugin_call(authz.socket, call, b'{"ResponseStatusCode": "x"}')
        if call.endswith("Res"):
            assert (status, answer) == (
                400,
                {"Err": "bad request: ResponseStatusCode: expected an integer, got string"},
            )
        else:  # AuthZReq does not read response fields
            assert (status, answer) == (200, {"Allow": True, "Msg": ""})
    assert plugin_call(authz.socket, "/AuthZPlugin.Nope", b"{}") == (
        404,
        {"Err": "not implemented: /AuthZPlugin.Nope"},
    )


# --- the daemon restarting (last: they stop the daemon) ------------------------------------------


def test_a_daemon_restart_keeps_the_policy(authz: Authz) -> None:
    authz.daemon.restart()
    proc = authz.run("run", "--rm", "--privileged", TEST_IMAGE, "true")
    assert last_line(proc) == authz.denied("privileged containers are denied (rule privileged)")
    assert authz.run("run", "--rm", TEST_IMAGE, "true").returncode == 0


def test_lockout_when_the_plugin_cannot_start_and_the_documented_way_back(authz: Authz) -> None:
    """The plugin's policy directory is gone when the daemon starts: the
    plugin cannot start and dockerd 20.10 drops every API connection. The
    README's way back: take it out of daemon.json and reload; fix it and
    restart it; put it back and reload."""
    authz.daemon.stop()
    away = authz.policy_dir.with_name(authz.policy_dir.name + "-away")
    authz.policy_dir.rename(away)
    try:
        authz.daemon.start(wait=False)
        authz.daemon.wait_listening()
        proc = authz.run("ps")
        assert proc.returncode == 1
        assert proc.stderr.strip().endswith(": EOF"), proc.stderr  # the connection dropped
    finally:
        away.rename(authz.policy_dir)
    # 1. Out of daemon.json, reload: the daemon answers again.
    authz.daemon.configure(**{"authorization-plugins": []})
    assert authz.run("ps").returncode == 0
    # 2. Restart the plugin (the daemon still thinks it is enabled).
    authz.daemon.docker("plugin", "disable", "-f", authz.name)
    authz.daemon.docker("plugin", "enable", authz.name)
    # 3. Back in daemon.json, reload: enforced again.
    authz.daemon.configure(**{"authorization-plugins": [authz.name]})
    proc = authz.run("run", "--rm", "--privileged", TEST_IMAGE, "true")
    assert last_line(proc) == authz.denied("privileged containers are denied (rule privileged)")


def test_a_disabled_plugin_keeps_the_daemon_from_starting(authz: Authz) -> None:
    authz.daemon.configure(**{"authorization-plugins": []})
    authz.daemon.docker("plugin", "disable", authz.name)
    authz.daemon.config["authorization-plugins"] = [authz.name]
    authz.daemon.stop()
    authz.daemon.start(wait=False)
    assert authz.daemon.dockerd is not None
    assert authz.daemon.dockerd.wait(60) == 1
    assert authz.daemon.log_tail(1) == (
        f"failed to validate authorization plugin: plugin {authz.name} found but disabled"
    )
    # The way back: out of daemon.json, start, enable, back in, reload.
    authz.daemon.config["authorization-plugins"] = []
    authz.daemon.start()
    authz.daemon.docker("plugin", "enable", authz.name)
    authz.daemon.configure(**{"authorization-plugins": [authz.name]})
    proc = authz.run("run", "--rm", "--privileged", TEST_IMAGE, "true")
    assert last_line(proc) == authz.denied("privileged containers are denied (rule privileged)")
