"""Serving outside Docker's plugin manager: addresses as spec files write
them, systemd socket activation (the first request answered), TCP and TLS."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin import serve
from plugin._listen import TLS, Listener, activation_sockets, parse_address, read_spec
from tests.certs import Certs, make_certs
from tests.unit.test_serve import SPEC, SlowVolumes

ROOT = Path(__file__).resolve().parents[2]
ACTIVATE = b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n"

# --- addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "listener"),
    [
        ("unix:///run/docker/plugins/x.sock", Listener("unix", path="/run/docker/plugins/x.sock")),
        ("tcp://127.0.0.1:8080", Listener("tcp", host="127.0.0.1", port=8080)),
        ("https://plugins.example.invalid:9443\n", Listener("https", host="plugins.example.invalid",
                                                            port=9443)),
        ("https://[::1]:9443", Listener("https", host="::1", port=9443)),
    ],
)  # fmt: skip
def test_addresses(address: str, listener: Listener) -> None:
    assert parse_address(address) == listener
    assert str(listener) == address.strip()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:8080", "address: '127.0.0.1:8080' has no scheme; the daemon "
         "dials unix://PATH, tcp://HOST:PORT or https://HOST:PORT"),
        ("/run/x.sock", "address: '/run/x.sock' has no scheme; the daemon dials unix://PATH, "
         "tcp://HOST:PORT or https://HOST:PORT"),
        ("http://h:1", "address: 'http://h:1' has the scheme 'http'; the daemon dials "
         "unix://PATH, tcp://HOST:PORT or https://HOST:PORT"),
        ("tcp://127.0.0.1", "address: 'tcp://127.0.0.1' needs a host and a port"),
        ("https://:9443", "address: 'https://:9443' needs a host and a port"),
        ("tcp://h:99999", "address: 'tcp://h:99999' needs a host and a port"),
        ("unix://", "address: 'unix://' needs an absolute path"),
    ],
)  # fmt: skip
def test_bad_addresses(address: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_address(address)
    assert str(err.value) == message


def test_spec_files(tmp_path: Path) -> None:
    (tmp_path / "a.spec").write_text("  tcp://127.0.0.1:7000\n")
    assert read_spec(str(tmp_path / "a.spec")) == Listener("tcp", host="127.0.0.1", port=7000)
    (tmp_path / "b.json").write_text(
        json.dumps({"Name": "ignored", "Addr": "https://127.0.0.1:9443", "TLSConfig": {}})
    )
    assert read_spec(str(tmp_path / "b.json")).tls
    (tmp_path / "c.json").write_text('{"TLSConfig": {}}')
    (tmp_path / "d.json").write_text("unix:///x.sock")
    (tmp_path / "e.spec").write_text("localhost:7000")
    errors = {}
    for name in ("c.json", "d.json", "e.spec", "missing.spec"):
        with pytest.raises(ValueError) as err:
            read_spec(str(tmp_path / name))
        errors[name] = str(err.value)
    assert errors == {
        "c.json": f'spec file {tmp_path}/c.json: no "Addr" (a URL such as https://HOST:PORT)',
        "d.json": f"spec file {tmp_path}/d.json: not JSON (Expecting value: line 1 column 1 "
        "(char 0))",
        "e.spec": f"spec file {tmp_path}/e.spec: 'localhost:7000' has the scheme 'localhost'; "
        "the daemon dials unix://PATH, tcp://HOST:PORT or https://HOST:PORT",
        "missing.spec": f"spec file {tmp_path}/missing.spec: No such file or directory",
    }


# --- serve() arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"listen": "https://127.0.0.1:9443"},
         "https://127.0.0.1:9443 asks for TLS: pass tls=TLS(cert, key) (--tls-cert, --tls-key)"),
        ({"listen": "tcp://127.0.0.1:9443", "tls": TLS("c.pem", "k.pem")},
         "tls= needs an https:// address: the daemon speaks TLS only to those"),
        ({"path": "/tmp/x.sock", "tls": TLS("c.pem", "k.pem")},
         "tls= needs an https:// address: the daemon speaks TLS only to those"),
        ({"socket": "x.sock", "listen": "tcp://127.0.0.1:1"},
         "serve() takes one of socket=, path= or listen=, not socket and listen"),
        ({}, "serve() needs socket= (the config's interface.socket), path= or listen=, "
         "unless systemd passes it its sockets (LISTEN_FDS)"),
    ],
)  # fmt: skip
def test_serve_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        serve(SlowVolumes(), **kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


# --- socket activation ------------------------------------------------------------------


def test_activation_sockets_are_only_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert activation_sockets(env) == []
    assert env == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}  # our parent's
    assert activation_sockets({}) == []


def test_activation_refuses_what_is_not_a_listening_socket(tmp_path: Path) -> None:
    """In a child: fd 3 is a file, then a socket that does not listen."""
    script = f"""
import os, socket, sys
sys.path.insert(0, {str(ROOT)!r})
from plugin._listen import activation_sockets
env = {{"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}}
f = open({str(tmp_path / "f")!r}, "w")
os.dup2(f.fileno(), 3)
try:
    activation_sockets(dict(env))
except ValueError as e:
    print(e)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.dup2(s.fileno(), 3)
try:
    activation_sockets(env)
except ValueError as e:
    print(e)
print(sorted(env))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [
        "LISTEN_FDS: fd 3 is not a socket",
        "LISTEN_FDS: fd 3 is not a listening stream socket (the socket unit needs "
        "ListenStream= and Accept=no)",
        "[]",
    ]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are capped near 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="pk-", dir="/tmp") as d:
        yield Path(d)


def activated(sock: socket.socket, *argv: str) -> subprocess.Popen[str]:
    """``python -m plugin ARGV`` as systemd starts it: the listening socket
    on fd 3, LISTEN_PID its own pid (set by the shell it exec's from)."""

    def to_fd3() -> None:
        os.dup2(sock.fileno(), 3)

    return subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", sys.executable, "-m",
         "plugin", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        pass_fds=(3,),
        preexec_fn=to_fd3,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def read_answer(conn: socket.socket) -> tuple[int, object]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return int(head.split()[1]), json.loads(body)


def test_socket_activation_answers_the_request_that_started_it(short_dir: Path) -> None:
    path = str(short_dir / "act.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    # The daemon's first request, sent before the plugin exists (systemd
    # starts the service on this connection).
    first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    first.settimeout(30)
    first.connect(path)
    first.sendall(ACTIVATE)
    proc = activated(listener, SPEC)
    listener.close()  # the plugin holds it now, as systemd would
    try:
        assert read_answer(first) == (200, {"Implements": ["VolumeDriver"]})
        # And the next connection too.
        second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        second.settimeout(30)
        second.connect(path)
        second.sendall(ACTIVATE)
        assert read_answer(second) == (200, {"Implements": ["VolumeDriver"]})
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"INFO plugin: serving SlowVolumes (VolumeDriver) on {path} (passed by systemd)" in out
    # The socket is systemd's: left where it is.
    assert os.path.exists(path)


# --- TCP and TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def started(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "plugin", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the plugin did not listen: {proc.communicate()}") from None
            time.sleep(0.05)


def test_tls_from_a_spec_file_with_client_certificates(tmp_path: Path, certs: Certs) -> None:
    port = free_port()
    spec = tmp_path / "tlsplug.json"
    # What the daemon reads: its CA for our certificate, its own certificate.
    spec.write_text(
        json.dumps(
            {
                "Addr": f"https://127.0.0.1:{port}",
                "TLSConfig": {
                    "CAFile": str(certs.ca.cert),
                    "CertFile": str(certs.client.cert),
                    "KeyFile": str(certs.client.key),
                },
            }
        )
    )
    proc = started(
        "--spec", str(spec), "--tls-cert", str(certs.server.cert), "--tls-key",
        str(certs.server.key), "--tls-client-ca", str(certs.ca.cert), SPEC,
    )  # fmt: skip
    try:
        wait_listening(port, proc)
        context = ssl.create_default_context(cafile=str(certs.ca.cert))
        context.load_cert_chain(str(certs.client.cert), str(certs.client.key))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        conn.request("POST", "/Plugin.Activate", b"")
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (
            200,
            {"Implements": ["VolumeDriver"]},
        )
        conn.close()
        # Without a client certificate: no answer at all.
        anonymous = ssl.create_default_context(cafile=str(certs.ca.cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=anonymous, timeout=10)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            conn.request("POST", "/Plugin.Activate", b"")
            conn.getresponse()
        conn.close()
        # Plain HTTP on the TLS port: no answer either.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("POST", "/Plugin.Activate", b"")
            plain.getresponse()
        plain.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"on https://127.0.0.1:{port}" in out


def test_plain_tcp_from_a_spec_file(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "p.spec").write_text(f"tcp://127.0.0.1:{port}\n")
    proc = started("--spec", str(tmp_path / "p.spec"), SPEC)
    try:
        wait_listening(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/VolumeDriver.Get", b'{"Name": "v"}\n')
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"Volume": {"Name": "v"}})
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"on tcp://127.0.0.1:{port}" in out


def test_a_spec_that_asks_for_tls_without_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "t.spec").write_text("https://127.0.0.1:9443\n")
    proc = started("--spec", str(tmp_path / "t.spec"), SPEC)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "plugin: cannot serve: https://127.0.0.1:9443 asks for TLS: pass tls=TLS(cert, key) "
        "(--tls-cert, --tls-key)"
    )
    proc = started("--spec", str(tmp_path / "t.spec"), "--tls-cert", "c.pem", SPEC)
    _, err = proc.communicate(timeout=30)
    assert err.strip().splitlines()[-1] == (
        "plugin: cannot serve: --tls-cert and --tls-key go together"
    )
