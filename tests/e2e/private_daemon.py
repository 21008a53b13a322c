"""A second, private Docker daemon for the tests that reconfigure one.

Authorization plugins and Swarm change how a daemon answers everybody, so
those tests never touch the shared daemon: they start their own ``dockerd``
with its own containerd (and containerd namespaces), data root, exec root,
pidfile and socket, a bridge of its own and no iptables rules, and a
``daemon.json`` of its own that they change and reload (``configure``).

Never ``--bridge=none``: dockerd 20.10 then deletes the host's ``docker0``,
the shared daemon's default bridge. Images come from the
shared daemon (``docker save | docker load``). One daemon serves a whole test
session (the ``private_daemon`` fixture); ``shutdown`` stops it and removes
everything it made.

Optionally it also listens on TCP with mutual TLS, with a CA and client
certificates made on the fly, for tests of TLS users.

Every test that makes a daemon push a plugin pushes through one of these
(``push_daemon``): dockerd 20.10 can die of a panic in containerd 1.6's
pusher ("send on closed channel", fixed only in containerd 1.7), and the
shared daemon dying fails every test running at the time. A push daemon
needs no configuration for the tests' registries: those on 127.0.0.1 are
insecure registries by default (HTTP, or TLS with any certificate). A test
whose push daemon died fails saying so, with the log's panic
(``assert_alive``, ``as_docker_host``); the next test gets it started again.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

_LISTENING = "API listen on /run/dpk-pd-"
T = TypeVar("T")

#: The shared daemon's images that tests run on the private one.
IMAGES = ("docker-plugin-kit/busybox:latest",)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        """The daemon's error message (its JSON ``message``), or the body."""
        try:
            return str(self.json["message"])
        except (ValueError, KeyError, TypeError):
            return self.body.decode(errors="replace")


@dataclass
class PrivateDaemon:
    """A dockerd of the tests' own. ``tag`` names everything it makes."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    tls: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    dockerd: subprocess.Popen[bytes] | None = None
    containerd: subprocess.Popen[bytes] | None = None
    tls_port: int | None = None
    _listening: int = 0
    #: Where the log of the dockerd started last begins.
    _log_start: int = 0

    def __post_init__(self) -> None:
        # Short paths under /run: unix socket paths are limited to 108 bytes.
        self.run = Path(f"/run/dpk-pd-{self.tag}")
        self.root = Path(f"/var/tmp/dpk-pd-{self.tag}")
        #: The default bridge of this daemon (at most 15 characters).
        self.bridge = f"dpkpd{self.tag}"[:15]

    # --- paths ------------------------------------------------------------------

    @property
    def socket(self) -> str:
        return str(self.run / "docker.sock")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_file(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def config_file(self) -> Path:
        return self.root / "daemon.json"

    @property
    def namespace(self) -> str:
        return f"dpk-{self.tag}"

    # --- life -------------------------------------------------------------------

    def start(self, timeout: float = 60, *, wait: bool = True) -> None:
        """Start containerd (once) and dockerd with ``config`` as its
        daemon.json; wait until the API answers (unless ``wait`` is False)."""
        self.run.mkdir(mode=0o700, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        if self.tls and self.tls_port is None:
            self._make_certificates()
            self.tls_port = _free_port()
        if self.containerd is None or self.containerd.poll() is not None:
            self._start_containerd()
        self._make_bridge()
        self._write_config()
        cmd = [
            "dockerd",
            f"--config-file={self.config_file}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.run / 'exec'}",
            f"--pidfile={self.run / 'dockerd.pid'}",
            f"--host={self.host}",
            f"--containerd={self.run / 'containerd.sock'}",
            f"--containerd-namespace={self.namespace}",
            f"--containerd-plugins-namespace={self.namespace}-plugins",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--userland-proxy=false",
        ]
        if self.tls:
            certs = self.root / "certs"
            cmd += [
                f"--host=tcp://127.0.0.1:{self.tls_port}",
                "--tlsverify",
                f"--tlscacert={certs / 'ca.pem'}",
                f"--tlscert={certs / 'server.pem'}",
                f"--tlskey={certs / 'server-key.pem'}",
            ]
        text = self.log_text()
        self._listening = text.count(_LISTENING)
        self._log_start = len(text)
        with open(self.log_file, "ab") as log:
            self.dockerd = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if wait:
            try:
                self.wait_up(timeout)
            except AssertionError:
                self.stop()
                raise

    def wait_listening(self, timeout: float = 60) -> None:
        """Wait until the dockerd started last serves its API (answering or
        not): for a daemon that drops every request."""
        deadline = time.monotonic() + timeout
        while self.log_text().count(_LISTENING) <= self._listening:
            if self.dockerd is None or self.dockerd.poll() is not None:
                raise AssertionError(f"the private dockerd exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the private dockerd is not listening after {timeout:g} s")
            time.sleep(0.05)

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.dockerd is not None and self.dockerd.poll() is not None:
                raise AssertionError(
                    f"the private dockerd exited {self.dockerd.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/_ping", timeout=5).status == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the private dockerd did not answer within {timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def assert_alive(self, doing: str) -> None:
        """Fail, naming it, if this daemon died (or stopped answering)
        while ``doing``: its exit status and what its log says (from the
        ``panic:`` line on, when it panicked), not the client's broken
        connection."""
        proc = self.dockerd
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/_ping", timeout=10).status == 200:
                    return
            # Dying: its socket is closed before it has exited.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        status = proc.poll()
        lines = self.log_text()[self._log_start :].splitlines()
        panic = next((i for i, line in enumerate(lines) if line.startswith("panic: ")), None)
        if panic is not None:
            what = "panicked (dockerd 20.10: containerd's pusher?)"
            shown = lines[panic : panic + 20]
        else:
            shown = lines[-30:]
            what = "stopped answering" if status is None else f"exited {status}"
        raise AssertionError(
            f"the private dockerd {what} while {doing}; its log ({self.log_file}):\n"
            + "\n".join(shown)
        )

    @contextlib.contextmanager
    def as_docker_host(self, doing: str) -> Iterator[None]:
        """DOCKER_HOST names this daemon in the block (and DPK_DOCKERD_LOG
        its log, which the kit reads): the kit and the docker CLI use it as
        a user's would. An error in the block while this daemon is dead
        fails as ``assert_alive`` says."""
        saved = {k: os.environ.get(k) for k in ("DOCKER_HOST", "DPK_DOCKERD_LOG")}
        os.environ["DOCKER_HOST"] = self.host
        os.environ["DPK_DOCKERD_LOG"] = str(self.log_file)
        try:
            yield
        except Exception:
            self.assert_alive(doing)
            raise
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def ensure_up(self) -> None:
        """Start it again if it died (in a test before, which failed saying so)."""
        if self.dockerd is None or self.dockerd.poll() is not None:
            self.start()

    def stop(self, timeout: float = 60) -> int | None:
        """Stop dockerd (SIGTERM, as systemd does); its exit status."""
        proc, self.dockerd = self.dockerd, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def restart(self, timeout: float = 60) -> None:
        """Stop dockerd (SIGTERM, wait) and start it again on the same data
        and exec roots, as an operator's restart does; it answers again."""
        status = self.stop(timeout)
        assert status == 0, f"the private dockerd exited {status} on SIGTERM:\n{self.log_tail()}"
        self.start(timeout)

    def shutdown(self) -> None:
        """Stop everything and remove what the daemon made."""
        with contextlib.suppress(Exception):
            self.stop()
        if self.containerd is not None and self.containerd.poll() is None:
            self.containerd.send_signal(signal.SIGTERM)
            try:
                self.containerd.wait(30)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
                self.containerd.wait(10)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        # Whatever the daemons left mounted below their directories.
        for base in (self.root, self.run):
            for target in sorted(_mounts_below(base), reverse=True):
                subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        shutil.rmtree(self.run, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _make_bridge(self) -> None:
        """A bridge for the daemon's default network, its subnet picked from
        the tag in 10.213.0.0/16 (the host's docker0 is the shared daemon's)."""
        if Path(f"/sys/class/net/{self.bridge}").exists():
            return
        third = int(self.tag[:4], 16) % 250 + 1
        for cmd in (
            ["ip", "link", "add", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"10.213.{third}.1/24", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)

    def _start_containerd(self) -> None:
        state = self.run / "containerd"
        config = self.root / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root / "containerd"}"\n'
            f'state = "{state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.run / "containerd.sock"}"\n'
            "[ttrpc]\n"
            f'  address = "{self.run / "containerd-ttrpc.sock"}"\n'
            "[debug]\n"
            '  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
        )
        with open(self.root / "containerd.log", "ab") as log:
            self.containerd = subprocess.Popen(
                ["containerd", f"--config={config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not (self.run / "containerd.sock").exists():
            if self.containerd.poll() is not None or time.monotonic() > deadline:
                text = (self.root / "containerd.log").read_text()[-2000:]
                raise AssertionError(f"the private containerd did not start:\n{text}")
            time.sleep(0.05)

    # --- configuration ----------------------------------------------------------

    def _write_config(self) -> None:
        self.config_file.write_text(json.dumps(self.config, indent=2) + "\n")

    def configure(self, timeout: float = 30, **changes: Any) -> None:
        """Change daemon.json and have the running daemon reload it (SIGHUP),
        as an operator would; waits for the daemon to say it did."""
        for key, value in changes.items():
            if value is None:
                self.config.pop(key, None)
            else:
                self.config[key] = value
        self._write_config()
        assert self.dockerd is not None and self.dockerd.poll() is None, "dockerd is not running"
        before = self.log_text().count("Reloaded configuration")
        self.dockerd.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_text().count("Reloaded configuration") <= before:
            if self.dockerd.poll() is not None:
                raise AssertionError(f"dockerd exited on reload:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not reload within {timeout:g} s")
            time.sleep(0.05)

    # --- talking to it ----------------------------------------------------------

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        user: str | None = None,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon (as a TLS ``user`` when given)."""
        if user is None:
            target = ["--host", self.host]
        else:
            certs = self.root / "certs"
            target = [
                "--host", f"tcp://127.0.0.1:{self.tls_port}", "--tlsverify",
                f"--tlscacert={certs / 'ca.pem'}", f"--tlscert={certs / f'{user}.pem'}",
                f"--tlskey={certs / f'{user}-key.pem'}",
            ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        proc = subprocess.run(
            ["docker", *target, *args],
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
        timeout: float = 60,
    ) -> Response:
        """One raw Engine API request over the unix socket: bodies and
        headers the CLI would never send. The answer is read even when the
        daemon answers before it read the whole body."""
        data = body or b""
        head = [f"{method} {path} HTTP/1.1", "Host: docker", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if chunked:
            head.append("Transfer-Encoding: chunked")
            pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
            data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        elif body is not None:
            head.append(f"Content-Length: {len(data)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + data
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(raw)
            reply = http.client.HTTPResponse(sock, method=method)
            reply.begin()
            return Response(reply.status, dict(reply.getheaders()), reply.read())

    def client(self) -> Any:
        import docker  # type: ignore[import-untyped,unused-ignore]

        return docker.DockerClient(base_url=self.host, timeout=300)

    def load_images(self, *names: str) -> None:
        """Copy images from the shared daemon (docker save | docker load)."""
        missing = [n for n in names if self.docker("image", "inspect", n, check=False).returncode]
        if not missing:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        save = subprocess.Popen(
            ["docker", "save", *missing], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        load = subprocess.run(
            ["docker", "--host", self.host, "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            env=env,
            check=False,
        )
        assert save.stdout is not None and save.stderr is not None
        save.stdout.close()
        saved = save.wait(120)
        assert saved == 0, f"docker save {' '.join(missing)}: {save.stderr.read().decode().strip()}"
        assert load.returncode == 0, load.stderr.decode()

    # --- its log ------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Where the log ends now (for ``wait_logged``'s ``since``)."""
        return len(self.log_text())

    def wait_logged(
        self, what: str, check: Callable[[list[str]], T | None], since: int, timeout: float = 30
    ) -> T:
        """Poll ``check`` on the log's lines after ``since`` (a ``log_mark``)
        until it returns something; fail after ``timeout``, with those lines.

        A plugin's output reaches the log on its own path (its container's
        shim copies it to a FIFO that dockerd reads), not with the answer to
        the API call that made it: a test reading the log once, right after
        that answer, can miss it on a loaded machine."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_text()[since:].splitlines()
            found = check(lines)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not in the private dockerd's log after {timeout:g} s; it logged:\n"
                    + "\n".join(lines[-30:])
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # --- TLS --------------------------------------------------------------------

    def _make_certificates(self, users: tuple[str, ...] = ("alice", "bob")) -> None:
        certs = self.root / "certs"
        certs.mkdir(exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=certs, check=True, capture_output=True)

        key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        openssl("req", "-x509", *key, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=dpk test CA")  # fmt: skip
        for name, subject, ext in [
            ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
            *((u, f"/CN={u}", "extendedKeyUsage=clientAuth") for u in users),
        ]:
            (certs / f"{name}.ext").write_text(ext + "\n")
            openssl("req", *key, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj",
                    subject)  # fmt: skip
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                    "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                    f"{name}.ext")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mounts_below(base: Path) -> list[str]:
    prefix = str(base) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target.startswith(prefix):
                out.append(target)
    return out


@contextlib.contextmanager
def stopped_cleanly() -> Iterator[None]:
    """SIGTERM (``timeout``, a killed CI job) interrupts like Ctrl-C, so that
    teardown still stops the private daemon instead of leaving it running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def started_with_images(daemon: PrivateDaemon) -> Iterator[PrivateDaemon]:
    """``daemon`` started, with the test images, and shut down after."""
    with stopped_cleanly():
        try:
            daemon.start()
            daemon.load_images(*IMAGES)
            yield daemon
        finally:
            daemon.shutdown()


@pytest.fixture(scope="session")
def private_daemon(engine_ready: None) -> Iterator[PrivateDaemon]:
    """A private dockerd for the session (TLS on too), with the test images."""
    with started_with_images(PrivateDaemon(tls=True)) as daemon:
        yield daemon


@pytest.fixture
def own_daemon(engine_ready: None) -> Iterator[PrivateDaemon]:
    """A private dockerd of the test's own, with the test images, for a test
    that restarts its daemon (``restart``: SIGTERM, wait, start again on the
    same data and exec roots) instead of the shared one, so it runs beside
    every other test. The test works on it inside ``as_docker_host`` (the
    docker CLI, the kit and conftest's helpers then use it) and removes what
    it made there before the end: networks above all, whose host bridges
    outlive the daemon."""
    with started_with_images(PrivateDaemon()) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def push_daemon_session(engine_ready: None) -> Iterator[PrivateDaemon]:
    """The private dockerd that the session's pushes go through (see the
    module's docstring); no images, no TLS: it only creates and pushes
    plugins."""
    daemon = PrivateDaemon()
    with stopped_cleanly():
        try:
            began = time.monotonic()
            daemon.start()
            sys.stderr.write(f"push daemon started in {time.monotonic() - began:.2f} s\n")
            yield daemon
        finally:
            daemon.shutdown()


@pytest.fixture
def push_daemon(push_daemon_session: PrivateDaemon) -> PrivateDaemon:
    """The session's push daemon, up (started again if a test before killed it)."""
    push_daemon_session.ensure_up()
    return push_daemon_session
