"""Publishing for real: a project's publish workflow run here against the
local registry (both architectures built, four tags pushed); the arm64
plugin's interpreter answering under emulation; three tags of two
architectures pushed in one command, the amd64 tag installed by name with
settings and used, the arm64 tag refused; registry credentials from a Docker
config; a registry that refuses the plugin media type; a daemon that dies in
the middle of a push, named.

Every push goes through the session's private push daemon (DOCKER_HOST, as
a user would point the kit at a daemon), never the shared daemon: dockerd
20.10 can die of a panic in containerd's pusher (see private_daemon.py).
Installs pull on the shared daemon."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import socket as socketlib
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from plugin.bundle.__main__ import main
from tests.certs import Certs, make_certs

from .conftest import ROOT, TEST_IMAGE, BuiltBundle, docker, wait_for
from .private_daemon import PrivateDaemon

pytestmark = pytest.mark.e2e
REGISTRY = "localhost:5000"


def cli(*argv: str, on: PrivateDaemon | None = None) -> tuple[int, list[str]]:
    """``docker-plugin-kit ARGV``: exit status and output lines; ``on`` a
    private daemon (DOCKER_HOST), else the shared one. A failure while the
    private daemon is dead fails as that (its log's panic)."""
    assert on is not None or "push" not in argv, "pushes go through the push daemon"
    out = io.StringIO()
    with on.as_docker_host(" ".join(argv)) if on else contextlib.nullcontext():
        code = main(list(argv), out=out)
    if on is not None and code != 0:
        on.assert_alive(" ".join(argv))
    return code, out.getvalue().splitlines()


#: The reference volume plugin's project (plugin.toml and what it builds from).
PROJECT = next(
    p.parent
    for p in (ROOT / "reference" / "localvol" / "plugin.toml", ROOT / "plugin.toml")
    if p.exists()
)


def copy_project(dest: Path) -> None:
    """The reference project, as a checkout has it (no build outputs)."""
    ignore = shutil.ignore_patterns(
        "rootfs-build*", ".build", ".dpk", "__pycache__", ".pytest_cache", "service"
    )
    if PROJECT != ROOT:
        shutil.copytree(PROJECT, dest, ignore=ignore)
        return
    dest.mkdir()
    for name in ("plugin.toml", "Dockerfile", "config.json.j2", ".dockerignore"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("plugin", "reference"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)


@dataclass
class Published:
    """The publish workflow's steps, run here in a copy of the reference
    project: both architectures built, four tags pushed."""

    project: Path
    repo: str
    tags: list[str]
    seconds: dict[str, float]
    docker_config: dict[str, Any]

    def bundle(self, arch: str) -> Path:
        return self.project / f"rootfs-build-{arch}"


@pytest.fixture(scope="module")
def published(
    engine_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
    push_daemon_session: PrivateDaemon,
) -> Iterator[Published]:
    """The steps of a project's publish workflow (.github/workflows/publish.yml)
    run as GitHub would run them on the tag v1.0, against the local registry.
    The actions stand in as: checkout = the project copy is the working
    directory; setup-python = this Python; setup-qemu-action = the builder
    registers the emulator itself. The kit is on no index here: its install
    step is checked by the unit tests, and a ``docker-plugin-kit`` on PATH
    that runs this checkout's stands in for it. The build uses the shared
    daemon (its base images); the steps after it the push daemon."""
    from tests.unit.test_publish_workflow import (
        PUBLISH_STEPS,
        load_workflow,
        render_workflow,
        step_key,
    )

    work = tmp_path_factory.mktemp("workflow")
    project = Path(f"/var/tmp/dpk-e2e-workflow-{uuid.uuid4().hex[:8]}")
    copy_project(project)
    workflow = load_workflow(render_workflow("localvol", "0"))
    job = workflow["jobs"]["publish"]
    assert [step_key(s) for s in job["steps"]] == PUBLISH_STEPS
    shim = work / "bin" / "docker-plugin-kit"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m plugin.bundle "$@"\n')
    shim.chmod(0o755)
    repo = f"{REGISTRY}/dpk-e2e-{uuid.uuid4().hex[:8]}/localvol"
    (work / "docker").mkdir()
    env = {
        **os.environ,
        **job["env"],
        "PLUGIN_REPOSITORY": repo,
        "GITHUB_REF_NAME": "v1.0",
        "DOCKER_CONFIG": str(work / "docker"),
        "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    secrets = {"REGISTRY_USER": "ci", "REGISTRY_TOKEN": "not-needed-here"}
    seconds: dict[str, float] = {}
    tags = ["1.0-amd64", "1.0-arm64", "1.0", "latest"]
    pusher = push_daemon_session
    pusher.ensure_up()
    on_pusher = {"DOCKER_HOST": pusher.host, "DPK_DOCKERD_LOG": str(pusher.log_file)}
    try:
        for step in job["steps"]:
            if "uses" in step or step["name"] == "install the kit":
                continue
            step_env = {k: secrets.get(k, v) for k, v in (step.get("env") or {}).items()}
            if step["name"] != "build every architecture":
                step_env.update(on_pusher)
            start = time.monotonic()
            done = subprocess.run(
                ["bash", "-e", "-c", step["run"]], cwd=project, env={**env, **step_env},
                capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            seconds[step["name"]] = time.monotonic() - start
            if done.returncode != 0 and "DOCKER_HOST" in step_env:
                pusher.assert_alive(f"the step {step['name']!r}")
            assert done.returncode == 0, f"{step['name']}:\n{done.stdout}\n{done.stderr}"
        docker_config = json.loads((work / "docker" / "config.json").read_text())
        yield Published(project, repo, tags, seconds, docker_config)
    finally:
        for tag in tags:
            pusher.docker("plugin", "rm", "-f", f"{repo}:{tag}", check=False)
        shutil.rmtree(project, ignore_errors=True)


def registry_json(path: str, accept: str = "application/json") -> Any:
    request = urllib.request.Request(f"http://{REGISTRY}/v2/{path}", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("plugin.moby.localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.path)
        self.sock = sock


def post(path: str, target: str, body: bytes = b"") -> tuple[int, Any]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("POST", target, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --- the workflow --------------------------------------------------------------------------


def test_the_publish_workflow_runs_here_against_the_local_registry(
    published: Published, push_daemon: PrivateDaemon
) -> None:
    path = published.repo.split("/", 1)[1]
    assert sorted(registry_json(f"{path}/tags/list")["tags"]) == sorted(published.tags)
    platforms = {}
    for tag in published.tags:
        manifest = registry_json(
            f"{path}/manifests/{tag}", "application/vnd.docker.distribution.manifest.v2+json"
        )
        assert manifest["config"]["mediaType"] == "application/vnd.docker.plugin.v1+json"
        config = registry_json(f"{path}/blobs/{manifest['config']['digest']}")
        (platforms[tag],) = [e["Value"] for e in config["Env"] if e["Name"] == "PLUGIN_PLATFORM"]
    assert platforms == {
        "1.0-amd64": "linux/amd64",
        "1.0-arm64": "linux/arm64",
        "1.0": "linux/amd64",
        "latest": "linux/amd64",
    }
    left = push_daemon.docker("plugin", "ls", "--format", "{{.Name}}").stdout.split()
    assert [n for n in left if n.startswith(published.repo)] == []
    # The login step wrote the credentials where the push took them from.
    assert list(published.docker_config["auths"]) == [REGISTRY]
    sys.stderr.write(
        "publish workflow steps: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in published.seconds.items())
        + "\n"
    )


# --- built for arm64 ----------------------------------------------------------------------


def test_the_arm64_plugin_answers_activate_under_emulation(published: Published) -> None:
    arm64 = published.bundle("arm64")
    config = json.loads((arm64 / "config.json").read_text())
    assert {"name": "PLUGIN_PLATFORM", "value": "linux/arm64"}.items() <= config["env"][-1].items()
    out = subprocess.run(
        ["file", "-L", str(arm64 / "rootfs" / config["entrypoint"][0].lstrip("/"))],
        capture_output=True,
        text=True,
    ).stdout
    assert "ARM aarch64" in out, out
    # A copy: the plugin writes its state under /data.
    rootfs = Path(f"/var/tmp/dpk-e2e-arm64-run-{uuid.uuid4().hex[:8]}")
    subprocess.run(["cp", "-a", str(arm64 / "rootfs"), str(rootfs)], check=True)
    env = {e["name"]: e["value"] for e in config["env"] if e.get("value") is not None}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    workdir = config["workdir"] or "/"

    def enter() -> None:
        os.chroot(rootfs)
        os.chdir(workdir)

    proc = subprocess.Popen(
        config["entrypoint"], preexec_fn=enter, env=env, stderr=subprocess.PIPE, text=True
    )
    socket = rootfs / "run/docker/plugins" / config["interface"]["socket"]
    try:
        wait_for("the arm64 plugin to listen", socket.exists, 60)
        # The kernel runs it through the emulator.
        assert "qemu-aarch64" in os.readlink(f"/proc/{proc.pid}/exe")
        assert post(str(socket), "/Plugin.Activate") == (200, {"Implements": ["VolumeDriver"]})
        status, body = post(str(socket), "/VolumeDriver.Capabilities", b"{}\n")
        assert (status, body) == (200, {"Capabilities": {"Scope": "local"}})
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        shutil.rmtree(rootfs, ignore_errors=True)
    assert proc.returncode == 0, err


# --- the local registry ---------------------------------------------------------------------


def test_push_three_tags_of_two_architectures_install_use_and_refuse(
    published: Published, push_daemon: PrivateDaemon
) -> None:
    repo = f"{REGISTRY}/dpk-e2e-{uuid.uuid4().hex[:8]}/localvol"
    path = repo.split("/", 1)[1]
    tags = ["1.0-amd64", "1.0-arm64", "latest"]
    data = Path(f"/var/tmp/dpk-e2e-pub-{uuid.uuid4().hex[:8]}")
    volume = f"pub-{uuid.uuid4().hex[:8]}"
    amd64, arm64 = f"{repo}:1.0-amd64", f"{repo}:1.0-arm64"
    try:
        code, lines = cli(
            "--name", repo, "push", "--bundle", str(published.bundle("amd64")),
            "--bundle", str(published.bundle("arm64")), *tags, on=push_daemon,
        )  # fmt: skip
        assert code == 0, "\n".join(lines)
        summary = [line.split("\t") for line in lines if line.startswith(repo)]
        assert [(n, p) for n, p, _, _ in summary] == [
            (amd64, "linux/amd64"),
            (arm64, "linux/arm64"),
            (f"{repo}:latest", "linux/amd64"),
        ]
        # Nothing of them is left there: each was created, pushed and removed.
        left = push_daemon.docker("plugin", "ls", "--format", "{{.Name}}").stdout.split()
        assert [n for n in left if n.startswith(repo)] == []

        assert sorted(registry_json(f"{path}/tags/list")["tags"]) == sorted(tags)
        for (name, platform, digest, size), tag in zip(summary, tags, strict=True):
            manifest = registry_json(
                f"{path}/manifests/{tag}", "application/vnd.docker.distribution.manifest.v2+json"
            )
            assert manifest["config"]["mediaType"] == "application/vnd.docker.plugin.v1+json"
            (layer,) = manifest["layers"]
            assert size == f"{layer['size'] / 1e6:.1f} MB"
            # The daemon's own encoding of the config: Go's field names.
            config = registry_json(f"{path}/blobs/{manifest['config']['digest']}")
            recorded = [e["Value"] for e in config["Env"] if e["Name"] == "PLUGIN_PLATFORM"]
            assert recorded == [platform], name
            assert digest.startswith("sha256:")

        # Installed by name on this (amd64) host's shared daemon, with this host's
        # setting, and used.
        code, lines = cli("install", "--grant-all-permissions", amd64, f"data.source={data}")
        assert code == 0, "\n".join(lines)
        assert lines[-2] == f"    {amd64} installed and enabled"
        docker("volume", "create", "-d", amd64, volume)
        docker("run", "--rm", "-v", f"{volume}:/d", TEST_IMAGE, "sh", "-c", "echo hi > /d/f")
        assert (data / "volumes" / volume / "f").read_text() == "hi\n"

        # The arm64 tag: refused before anything is pulled, by its tag.
        code, lines = cli("install", "--grant-all-permissions", arm64)
        assert (code, lines[-1]) == (
            1,
            f"error: enable {arm64}: refused: {arm64} is tagged for linux/arm64 and this daemon "
            "runs linux/amd64 (a plugin of another architecture fails to start, and the daemon "
            'reports only "dial unix ...: no such file or directory"); install the tag built for '
            f"amd64: {amd64}",
        )
        assert docker("plugin", "inspect", arm64, check=False).returncode != 0
        # Pulled without enabling (as docker plugin install --disable would), then
        # enabled: refused by what its config records, before the daemon starts it.
        assert cli("install", "--grant-all-permissions", "--disable", arm64)[0] == 0
        code, lines = cli("--name", arm64, "enable")
        assert (code, lines[-1]) == (
            1,
            f"error: enable {arm64}: refused: the plugin is built for linux/arm64 and this daemon "
            "runs linux/amd64 (a plugin of another architecture fails to start, and the daemon "
            'reports only "dial unix ...: no such file or directory"); install the tag built for '
            f"amd64: {amd64}",
        )
        enabled = docker("plugin", "inspect", "-f", "{{.Enabled}}", arm64).stdout.strip()
        assert enabled == "false"
    finally:
        docker("volume", "rm", "-f", volume, check=False)
        for tag in tags:
            docker("plugin", "rm", "-f", f"{repo}:{tag}", check=False)
            push_daemon.docker("plugin", "rm", "-f", f"{repo}:{tag}", check=False)
        shutil.rmtree(data, ignore_errors=True)


# --- credentials and refusals -------------------------------------------------------------


def bcrypt(password: str) -> str:
    """A bcrypt hash (what the registry's htpasswd wants), by the C library."""
    libcrypt = ctypes.CDLL("libcrypt.so.1")
    libcrypt.crypt.restype = ctypes.c_char_p
    alphabet = "./" + string.ascii_letters + string.digits
    salt = "$2b$10$" + "".join(random.choice(alphabet) for _ in range(22))
    hashed = libcrypt.crypt(password.encode(), salt.encode())
    assert hashed and hashed.startswith(b"$2b$"), hashed
    return str(hashed.decode())


def free_port() -> int:
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def auth_registry(tmp_path: Path, certs: Certs) -> Iterator[str]:
    """A registry of our own that wants a user and password (htpasswd), over
    TLS: the daemon takes any certificate from a registry on this host, and
    over plain HTTP it would report its HTTPS attempt's error instead of the
    registry's answer."""
    port = free_port()
    (tmp_path / "htpasswd").write_text(f"pusher:{bcrypt('s3cret')}\n")
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {certs.server.cert}\n"
        f"    key: {certs.server.key}\n"
        f"auth:\n  htpasswd:\n    realm: dpk\n    path: {tmp_path}/htpasswd\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(tmp_path / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = ssl.create_default_context(cafile=str(certs.ca.cert))

    def up() -> bool:
        try:
            urllib.request.urlopen(f"https://localhost:{port}/v2/", timeout=2, context=context)
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
        return False

    try:
        wait_for("the registry with htpasswd to answer", up, 30)
        yield f"localhost:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_push_credentials_come_from_the_users_docker_config(
    bundle: BuiltBundle,
    auth_registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    push_daemon: PrivateDaemon,
) -> None:
    repo = f"{auth_registry}/dpk-e2e-{uuid.uuid4().hex[:8]}/localvol"
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    try:
        code, lines = cli(
            "--name", repo, "push", "--bundle", str(bundle.path), "1.0-amd64", on=push_daemon
        )  # fmt: skip
        assert code == 1
        assert lines[-2:] == [
            f"error: push {repo}:1.0-amd64: error pushing plugin: unexpected status: 401 "
            "Unauthorized",
            f"  no credentials for {auth_registry} in the Docker config ({config}/config.json): "
            f"docker login {auth_registry}",
        ]
        # What docker login writes there.
        login = subprocess.run(
            ["docker", "--config", str(config), "login", "-u", "pusher", "--password-stdin",
             auth_registry],
            input="s3cret", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert login.returncode == 0, login.stderr
        assert auth_registry in json.loads((config / "config.json").read_text())["auths"]
        code, lines = cli(
            "--name", repo, "push", "--bundle", str(bundle.path), "1.0-amd64", on=push_daemon
        )  # fmt: skip
        assert code == 0, "\n".join(lines)
        assert lines[-1].startswith(f"{repo}:1.0-amd64\tlinux/amd64\tsha256:")
    finally:
        push_daemon.docker("plugin", "rm", "-f", f"{repo}:1.0-amd64", check=False)


class _RefusingRegistry(BaseHTTPRequestHandler):
    """Enough of the registry API to take blobs, and a manifest refusal like
    the ones some registries give a plugin's config media type."""

    protocol_version = "HTTP/1.1"
    uploads = 0
    refused: list[str] = []  # noqa: RUF012 (the manifests refused, for the test)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    return data
                data += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        headers = {"Docker-Distribution-API-Version": "registry/2.0", **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/v2/" else 404, {"Content-Type": "application/json"},
                     b"{}")  # fmt: skip

    def do_HEAD(self) -> None:
        self._answer(404, {})

    def do_POST(self) -> None:
        self._body()
        repo = self.path.split("/blobs/")[0]
        type(self).uploads += 1
        location = f"{repo}/blobs/uploads/u{type(self).uploads}"
        self._answer(202, {"Location": location, "Range": "0-0", "Docker-Upload-UUID": "u"})

    def do_PATCH(self) -> None:
        n = len(self._body())
        self._answer(202, {"Location": self.path, "Range": f"0-{max(n - 1, 0)}"})

    def do_PUT(self) -> None:
        body = self._body()
        if "/manifests/" in self.path:
            type(self).refused.append("sha256:" + hashlib.sha256(body).hexdigest())
            media = json.loads(body)["config"]["mediaType"]
            errors = {"errors": [{"code": "MANIFEST_INVALID", "message": "manifest invalid",
                                  "detail": f"unsupported config media type {media}"}]}  # fmt: skip
            self._answer(400, {"Content-Type": "application/json"}, json.dumps(errors).encode())
            return
        digest = self.path.split("digest=")[1].split("&")[0].replace("%3A", ":")
        repo = self.path.split("/blobs/")[0]
        self._answer(201, {"Location": f"{repo}/blobs/{digest}", "Docker-Content-Digest": digest})


def test_a_registry_refusing_the_plugin_media_type_is_named(
    bundle: BuiltBundle, certs: Certs, push_daemon: PrivateDaemon
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingRegistry)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server.cert, certs.server.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    repo = f"localhost:{server.server_address[1]}/dpk-e2e-{uuid.uuid4().hex[:8]}/localvol"
    try:
        code, lines = cli(
            "--name", repo, "push", "--bundle", str(bundle.path), "2.0", on=push_daemon
        )  # fmt: skip
        assert code == 1
        manifest_digest = _RefusingRegistry.refused[-1]
        assert lines[-2:] == [
            f"error: push {repo}:2.0: error pushing plugin: failed commit on ref "
            f'"manifest-{manifest_digest}": unexpected status: 400 Bad Request',
            "  the registry refused the plugin's manifest: a Docker plugin's config has the "
            "media type application/vnd.docker.plugin.v1+json (not an image's), which some "
            "registries do not accept",
        ]
        assert push_daemon.docker("plugin", "inspect", f"{repo}:2.0", check=False).returncode
    finally:
        server.shutdown()
        server.server_close()
        push_daemon.docker("plugin", "rm", "-f", f"{repo}:2.0", check=False)


class _StallingRegistry(_RefusingRegistry):
    """Takes the push up to the first blob's upload, and holds that until
    the test lets it go: the daemon is in the middle of the push."""

    stalled = threading.Event()
    release = threading.Event()

    def _hold(self) -> None:
        type(self).stalled.set()
        type(self).release.wait(120)
        self.close_connection = True  # its client is gone: no answer

    def do_PATCH(self) -> None:
        self._hold()

    def do_PUT(self) -> None:
        self._hold()


def test_a_daemon_that_dies_mid_push_is_named(bundle: BuiltBundle, certs: Certs) -> None:
    """What the user sees when dockerd dies in the middle of a push (as when
    containerd's pusher panics): a daemon of this test's own, killed while
    the registry holds the upload; and what a test sees (assert_alive)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallingRegistry)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server.cert, certs.server.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"localhost:{server.server_address[1]}/dpk-e2e-{uuid.uuid4().hex[:8]}/localvol:1.0"
    daemon = PrivateDaemon()

    def kill() -> None:
        if _StallingRegistry.stalled.wait(120) and daemon.dockerd is not None:
            daemon.dockerd.kill()

    try:
        daemon.start()
        threading.Thread(target=kill, daemon=True).start()
        out = io.StringIO()
        with daemon.as_docker_host("pushing"):
            argv = ["--name", name.rsplit(":", 1)[0], "push", "--bundle", str(bundle.path), "1.0"]
            code = main(argv, out=out)
        assert _StallingRegistry.stalled.is_set()
        assert (code, out.getvalue().splitlines()[-2:]) == (
            1,
            [
                f"error: the Docker daemon stopped while pushing {name} (dockerd 20.10 can crash "
                'in containerd\'s pusher: look for "panic" in its log); start it again and push '
                "again: blobs already in the registry are not sent again",
                f"  {name}, created for this push, is still on the daemon: remove it first "
                f"(docker plugin rm {name})",
            ],
        )
        with pytest.raises(AssertionError) as failed:
            daemon.assert_alive("pushing")
        assert str(failed.value).startswith(
            f"the private dockerd exited -9 while pushing; its log ({daemon.log_file}):\n"
        )
        # Started again, it has the plugin, as the error says.
        daemon.start()
        found = daemon.docker("plugin", "inspect", "-f", "{{.Name}}", name).stdout.strip()
        assert found == name
    finally:
        _StallingRegistry.release.set()
        server.shutdown()
        server.server_close()
        daemon.shutdown()
