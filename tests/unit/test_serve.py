"""serve() and ``python -m plugin`` for real: a process on a unix socket,
spoken to the way the daemon speaks (plugin/_serve.py, plugin/__main__.py)."""

from __future__ import annotations

import asyncio
import grp
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plugin import PluginError, serve
from plugin._serve import bind_unix, socket_path
from plugin.volume import (
    CreateRequest,
    GetRequest,
    GetResponse,
    ListResponse,
    MountRequest,
    MountResponse,
    PathRequest,
    PathResponse,
    RemoveRequest,
    UnmountRequest,
    Volume,
    VolumeDriver,
)
from tests.conftest import PYTHONPATH

ROOT = Path(__file__).resolve().parents[2]
SPEC = f"{__name__}:SlowVolumes"
# What the daemon sends (moby pkg/plugins/client.go): no Content-Type.
DAEMON_HEADERS = {
    "Host": "plugin.moby.localhost",
    "User-Agent": "Go-http-client/1.1",
    "Accept": "application/vnd.docker.plugins.v1.2+json",
}


class SlowVolumes(VolumeDriver):
    """Mount and Path take a while when asked to (async and plain)."""

    def create(self, req: CreateRequest) -> None:
        if req.name == "taken":
            raise PluginError("volume taken exists")

    def remove(self, req: RemoveRequest) -> None:
        pass

    async def mount(self, req: MountRequest) -> MountResponse:
        await asyncio.sleep(float(req.name) if req.name[:1].isdigit() else 0)
        return MountResponse(f"/mnt/volumes/{req.name}")

    def unmount(self, req: UnmountRequest) -> None:
        pass

    def path(self, req: PathRequest) -> PathResponse:
        time.sleep(float(req.name) if req.name[:1].isdigit() else 0)
        return PathResponse(f"/mnt/volumes/{req.name}")

    def get(self, req: GetRequest) -> GetResponse:
        if req.name == "boom":
            raise RuntimeError("boom")
        return GetResponse(Volume(req.name))

    def list(self) -> ListResponse:
        return ListResponse([Volume("a"), Volume("b")])


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


@dataclass
class Answer:
    status: int
    json: Any
    headers: dict[str, str]


def post(conn: UnixConnection, path: str, body: Any = None) -> Answer:
    # Go's json.Encoder ends the body with a newline; no arguments: no body.
    raw = b"" if body is None else json.dumps(body).encode() + b"\n"
    conn.request("POST", path, raw, {**DAEMON_HEADERS, "Content-Length": str(len(raw))})
    resp = conn.getresponse()
    data = resp.read()
    return Answer(resp.status, json.loads(data), {k.lower(): v for k, v in resp.getheaders()})


@dataclass
class Plugin:
    proc: subprocess.Popen[str]
    path: str

    def connect(self) -> UnixConnection:
        return UnixConnection(self.path)

    def stop(self) -> tuple[int, str, str, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=15)
        return self.proc.returncode, out, err, time.monotonic() - start


@pytest.fixture
def short_dir() -> Iterator[str]:
    # AF_UNIX paths must stay under 108 bytes; pytest's tmp_path may not.
    path = tempfile.mkdtemp(dir="/tmp", prefix="pk-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_plugin(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "info"}
    return subprocess.Popen(
        [sys.executable, "-m", "plugin", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_socket(proc: subprocess.Popen[str], path: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"plugin exited {proc.returncode}:\n{out}\n{err}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
                return
            except OSError:
                time.sleep(0.02)
    proc.kill()
    raise AssertionError("plugin did not listen within 10 s")


@pytest.fixture
def plugin(short_dir: str) -> Iterator[Plugin]:
    path = os.path.join(short_dir, "s.sock")
    # A stale socket file from a previous run (bound, never unlinked).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)
    proc = run_plugin("--path", path, SPEC)
    try:
        wait_for_socket(proc, path)
        yield Plugin(proc, path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serves_the_daemon_over_a_unix_socket(plugin: Plugin) -> None:
    assert stat.S_IMODE(os.stat(plugin.path).st_mode) == 0o660
    conn = plugin.connect()
    # Several calls on one keep-alive connection, as Go's transport does.
    answer = post(conn, "/Plugin.Activate")
    assert (answer.status, answer.json) == (200, {"Implements": ["VolumeDriver"]})
    assert answer.headers["content-type"] == "application/vnd.docker.plugins.v1.1+json"
    assert answer.headers["content-length"] == str(len(b'{"Implements": ["VolumeDriver"]}'))
    sock = conn.sock
    steps: list[tuple[str, Any, int, Any]] = [
        ("Capabilities", {}, 200, {"Capabilities": {"Scope": "local"}}),
        ("Create", {"Name": "v", "Opts": None}, 200, {}),
        ("Create", {"Name": "taken", "Opts": None}, 500, {"Err": "volume taken exists"}),
        (
            "Create",
            {"Name": "v", "Opts": {"uid": 0}},
            400,
            {"Err": "bad request: Opts.uid: expected a string, got number"},
        ),
        ("Get", {"Name": "v"}, 200, {"Volume": {"Name": "v"}}),
        ("Mount", {"Name": "v", "ID": "a" * 64}, 200, {"Mountpoint": "/mnt/volumes/v"}),
        ("Path", {"Name": "v"}, 200, {"Mountpoint": "/mnt/volumes/v"}),
        ("List", {}, 200, {"Volumes": [{"Name": "a"}, {"Name": "b"}]}),
        ("Unmount", {"Name": "v", "ID": "a" * 64}, 200, {}),
        ("Remove", {"Name": "v"}, 200, {}),
        ("Frobnicate", {}, 404, {"Err": "not implemented: /VolumeDriver.Frobnicate"}),
        (
            "Get",
            {"Name": "boom"},
            500,
            {"Err": "unexpected RuntimeError in the plugin (see its log)"},
        ),
    ]
    for verb, body, status, expected in steps:
        answer = post(conn, f"/VolumeDriver.{verb}", body)
        assert (verb, answer.status, answer.json) == (verb, status, expected)
    assert conn.sock is sock, "the connection was not kept alive"
    conn.request("GET", "/VolumeDriver.List", headers=DAEMON_HEADERS)
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())) == (
        405,
        {"Err": "method GET not allowed: plugin endpoints answer POST only"},
    )

    # The connection above stays open and idle, as the daemon's pool keeps it.
    code, out, err, took = plugin.stop()
    assert code == 0, err
    assert took < 2, f"SIGTERM took {took:.2f} s"
    assert not os.path.exists(plugin.path)
    # Info on stdout (the daemon logs it as info), errors on stderr.
    assert f"INFO plugin: serving SlowVolumes (VolumeDriver) on {plugin.path}" in out
    assert out.rstrip().endswith("INFO plugin: stopped")
    assert "ERROR" not in out and "Traceback" not in out
    assert "ERROR plugin: VolumeDriver.Get failed\nTraceback (most recent call last):" in err
    assert "RuntimeError: boom" in err
    assert "INFO" not in err
    conn.close()


def test_concurrent_connections(plugin: Plugin) -> None:
    idle = plugin.connect()
    assert post(idle, "/VolumeDriver.Capabilities", {}).status == 200  # then stays idle

    def mount(i: int) -> tuple[int, Any]:
        conn = plugin.connect()
        try:
            # Alternately async (Mount) and plain (Path, in the thread pool).
            verb = "Mount" if i % 2 else "Path"
            answer = post(conn, f"/VolumeDriver.{verb}", {"Name": "0.5", "ID": str(i)})
            return answer.status, answer.json
        finally:
            conn.close()

    start = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(mount, range(6)))
    took = time.monotonic() - start
    assert results == [(200, {"Mountpoint": "/mnt/volumes/0.5"})] * 6
    assert took < 1.5, f"6 calls of 0.5 s took {took:.2f} s: not served concurrently"
    # The idle connection still works.
    assert post(idle, "/VolumeDriver.List", {}).json == {"Volumes": [{"Name": "a"}, {"Name": "b"}]}
    idle.close()
    code, _, err, _ = plugin.stop()
    assert code == 0, err


def test_sigterm_lets_a_call_in_flight_finish(plugin: Plugin) -> None:
    conn = plugin.connect()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(post, conn, "/VolumeDriver.Mount", {"Name": "0.5", "ID": "x"})
        time.sleep(0.2)
        code, _, err, _ = plugin.stop()
        answer = future.result()
    assert (answer.status, answer.json) == (200, {"Mountpoint": "/mnt/volumes/0.5"})
    assert code == 0, err
    assert not os.path.exists(plugin.path)


def _inode_other_than(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino != inode
    except FileNotFoundError:  # between the successor's unlink and its bind
        return False


def test_a_successor_keeps_its_socket(plugin: Plugin) -> None:
    # A second process at the same path takes over (the first one's socket
    # file looks stale to it); the first one, stopped later, must not remove
    # the successor's socket on its way out.
    first = os.stat(plugin.path).st_ino
    successor = run_plugin("--path", plugin.path, SPEC)
    try:
        # It has taken over once the path is a socket file of its own.
        deadline = time.monotonic() + 10
        while not _inode_other_than(plugin.path, first):
            assert successor.poll() is None, successor.communicate()
            assert time.monotonic() < deadline, "the successor did not bind within 10 s"
            time.sleep(0.02)
        wait_for_socket(successor, plugin.path)
        code, _, err, _ = plugin.stop()
        assert code == 0, err
        conn = UnixConnection(plugin.path)
        assert post(conn, "/Plugin.Activate").json == {"Implements": ["VolumeDriver"]}
        conn.close()
    finally:
        successor.send_signal(signal.SIGTERM)
        successor.communicate(timeout=15)
    assert successor.returncode == 0
    assert not os.path.exists(plugin.path)


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ("nosuch:Thing", "plugin: cannot start: driver 'nosuch:Thing': no module named 'nosuch'"),
        (
            "json:loads",
            "plugin: cannot start: driver 'json:loads': not a driver class "
            "(a subclass of VolumeDriver or another type)",
        ),
        (
            "json:nope",
            "plugin: cannot start: driver 'json:nope': module 'json' has no attribute 'nope'",
        ),
        ("json", "plugin: cannot start: driver 'json' must be written module:ClassName"),
        (
            "plugin.volume:VolumeDriver",
            "plugin: cannot start: driver 'plugin.volume:VolumeDriver': abstract class, "
            "implement create, get, list, mount, path, remove, unmount",
        ),
    ],
)
def test_a_bad_driver_spec_is_one_line_on_stderr(short_dir: str, spec: str, line: str) -> None:
    proc = run_plugin("--path", os.path.join(short_dir, "s.sock"), spec)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert err == line + "\n"
    assert out == ""
    assert os.listdir(short_dir) == []


def test_a_file_in_the_way_is_refused(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    Path(path).write_text("precious")
    proc = run_plugin("--path", path, SPEC)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert (
        err == f"plugin: cannot serve: {path} exists and is not a socket; refusing to replace it\n"
    )
    assert Path(path).read_text() == "precious"


def test_socket_names_are_checked_before_anything_happens() -> None:
    with pytest.raises(ValueError) as info:
        serve(SlowVolumes(), socket="a" * 24)
    assert str(info.value) == (
        f"socket name '{'a' * 24}' is 24 characters; the daemon's limit is 23"
    )
    assert socket_path("a" * 23, None) == "/run/docker/plugins/" + "a" * 23
    with pytest.raises(ValueError, match=r"socket must be a file name, not a path: 'x/y\.sock'"):
        serve(SlowVolumes(), socket="x/y.sock")
    with pytest.raises(ValueError, match=r"serve\(\) needs socket="):
        serve(SlowVolumes())
    with pytest.raises(ValueError, match="not both"):
        serve(SlowVolumes(), socket="a.sock", path="/tmp/a.sock")
    with pytest.raises(ValueError, match="at least one driver"):
        serve(socket="a.sock")
    with pytest.raises(TypeError, match="did you pass the class"):
        serve(SlowVolumes, socket="a.sock")  # type: ignore[arg-type]
    long = "/tmp/" + "d" * 100 + "/s.sock"
    with pytest.raises(ValueError) as info:
        serve(SlowVolumes(), path=long)
    assert str(info.value) == f"socket path {long!r} is 112 bytes; unix sockets allow at most 107"


def test_bind_unix_mode_group_and_stale_sockets(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)
    sock = bind_unix(path)  # would fail with EADDRINUSE had the stale file stayed
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    finally:
        sock.close()

    with pytest.raises(ValueError, match="no such group: 'no-such-group-here'"):
        bind_unix(path, group="no-such-group-here")
    assert not os.path.exists(path)  # not left behind half set up

    # root may give the socket to any group, others only to their own.
    allowed = {g.gr_gid for g in grp.getgrall()} if os.geteuid() == 0 else set(os.getgroups())
    other = next((g for g in grp.getgrall() if g.gr_gid in allowed - {os.getgid()}), None)
    if other is None:
        pytest.skip("no second group to give the socket to")
    for group in (other.gr_name, other.gr_gid):
        sock = bind_unix(path, mode=0o600, group=group)
        try:
            st = os.stat(path)
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (other.gr_gid, 0o600)
        finally:
            sock.close()


def test_bind_unix_never_replaces_other_files(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    os.mkdir(path)
    with pytest.raises(FileExistsError) as info:
        bind_unix(path)
    assert str(info.value) == f"{path} exists and is not a socket; refusing to replace it"
    assert os.path.isdir(path)


def test_serve_in_process_returns_on_sigterm(short_dir: str) -> None:
    # serve() is also a plain function an author calls from their own main.
    path = os.path.join(short_dir, "s.sock")
    previous = signal.getsignal(signal.SIGTERM)

    def stop_soon() -> None:
        wait_for_socket_in_thread(path)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stop_soon)
    thread.start()
    serve(SlowVolumes(), path=path)
    thread.join()
    assert not os.path.exists(path)
    assert signal.getsignal(signal.SIGTERM) == previous


def wait_for_socket_in_thread(path: str) -> None:
    for _ in range(500):
        if os.path.exists(path):
            time.sleep(0.2)  # the server starts after the bind
            return
        time.sleep(0.01)
