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
from plugin._socket import bind_unix, socket_path
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


#: How long a test waits for a condition before it fails.
WAIT = 10.0


def _gate(name: str, mount_id: str) -> bool:
    """Calls named ``gate:DIR:N`` each leave a file ``DIR/<ID>``, then wait
    until N files are there: they can only all return if they run at once.
    Calls named ``hold:FILE`` leave ``FILE.started``, then wait for ``FILE``.
    True once the call may go on; False while it must wait."""
    kind, _, rest = name.partition(":")
    if kind == "gate":
        where, _, count = rest.rpartition(":")
        Path(where, mount_id).touch()
        return len(os.listdir(where)) >= int(count)
    if kind == "hold":
        Path(rest + ".started").touch()
        return os.path.exists(rest)
    return True


class SlowVolumes(VolumeDriver):
    """Mount (async) and Path (plain) wait at a gate when asked to."""

    def create(self, req: CreateRequest) -> None:
        if req.name == "taken":
            raise PluginError("volume taken exists")

    def remove(self, req: RemoveRequest) -> None:
        pass

    async def mount(self, req: MountRequest) -> MountResponse:
        deadline = time.monotonic() + WAIT
        while not _gate(req.name, req.id):
            if time.monotonic() > deadline:
                raise PluginError(f"{req.name}: still waiting after {WAIT:g} s")
            await asyncio.sleep(0.01)
        return MountResponse(f"/mnt/volumes/{req.name.rpartition('/')[2]}")

    def unmount(self, req: UnmountRequest) -> None:
        pass

    def path(self, req: PathRequest) -> PathResponse:
        deadline = time.monotonic() + WAIT
        me = f"path-{threading.get_ident()}"  # Path requests carry no ID
        while not _gate(req.name, me):
            if time.monotonic() > deadline:
                raise PluginError(f"{req.name}: still waiting after {WAIT:g} s")
            time.sleep(0.01)
        return PathResponse(f"/mnt/volumes/{req.name.rpartition('/')[2]}")

    def get(self, req: GetRequest) -> GetResponse:
        if req.name == "boom":
            raise RuntimeError("boom")
        return GetResponse(Volume(req.name))

    def list(self) -> ListResponse:
        return ListResponse([Volume("a"), Volume("b")])


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT:g} s: {what}")
        time.sleep(0.01)


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
    """Until the plugin at ``path`` answers (its socket is bound before it
    serves)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"plugin exited {proc.returncode}:\n{out}\n{err}")
        try:
            conn = UnixConnection(path)
            try:
                if post(conn, "/Plugin.Activate").status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"plugin did not answer within {WAIT:g} s")


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
    code, out, err, _ = plugin.stop()
    assert code == 0, err
    # The idle connection did not hold the stop up until the graceful timeout.
    assert "timeout graceful shutdown exceeded" not in err
    assert not os.path.exists(plugin.path)
    # Info on stdout (the daemon logs it as info), errors on stderr.
    assert f"INFO plugin: serving SlowVolumes (VolumeDriver) on {plugin.path}" in out
    assert out.rstrip().endswith("INFO plugin: stopped")
    assert "ERROR" not in out and "Traceback" not in out
    assert "ERROR plugin: VolumeDriver.Get failed\nTraceback (most recent call last):" in err
    assert "RuntimeError: boom" in err
    assert "INFO" not in err
    conn.close()


def test_concurrent_connections(plugin: Plugin, short_dir: str) -> None:
    idle = plugin.connect()
    assert post(idle, "/VolumeDriver.Capabilities", {}).status == 200  # then stays idle
    gate = os.path.join(short_dir, "gate")
    os.mkdir(gate)
    name = f"gate:{gate}:6"

    def mount(i: int) -> tuple[int, Any]:
        conn = plugin.connect()
        try:
            # Alternately async (Mount) and plain (Path, in the thread pool).
            verb = "Mount" if i % 2 else "Path"
            answer = post(conn, f"/VolumeDriver.{verb}", {"Name": name, "ID": str(i)})
            return answer.status, answer.json
        finally:
            conn.close()

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(mount, range(6)))
    expected = (200, {"Mountpoint": f"/mnt/volumes/{gate.rpartition('/')[2]}:6"})
    assert results == [expected] * 6
    # Every call passed its gate, so all six ran at the same time.
    entries = os.listdir(gate)
    assert sorted(e for e in entries if not e.startswith("path-")) == ["1", "3", "5"]
    assert len(entries) == 6
    # The idle connection still works.
    assert post(idle, "/VolumeDriver.List", {}).json == {"Volumes": [{"Name": "a"}, {"Name": "b"}]}
    idle.close()
    code, _, err, _ = plugin.stop()
    assert code == 0, err


def test_sigterm_lets_a_call_in_flight_finish(plugin: Plugin, short_dir: str) -> None:
    release = os.path.join(short_dir, "release")
    conn = plugin.connect()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(post, conn, "/VolumeDriver.Mount", {"Name": f"hold:{release}"})
        wait_until(lambda: os.path.exists(release + ".started"), "the call started")
        plugin.proc.send_signal(signal.SIGTERM)
        # The call is still waiting; let it finish after the signal.
        Path(release).touch()
        answer = future.result()
        out, err = plugin.proc.communicate(timeout=WAIT)
    assert (answer.status, answer.json) == (200, {"Mountpoint": "/mnt/volumes/release"})
    assert plugin.proc.returncode == 0, err
    assert out.rstrip().endswith("INFO plugin: stopped")
    assert not os.path.exists(plugin.path)


def test_a_successor_keeps_its_socket(plugin: Plugin) -> None:
    # A second process at the same path takes over (the first one's socket
    # file looks stale to it); the first one, stopped later, must not remove
    # the successor's socket on its way out.
    first = os.stat(plugin.path).st_ino
    successor = run_plugin("--path", plugin.path, SPEC)
    try:
        wait_until(lambda: os.stat(plugin.path).st_ino != first, "the successor bound its socket")
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
        f"socket name '{'a' * 24}' is 24 characters; the daemon's limit is 23 "
        "(its socket path must fit in 108 bytes)"
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

    before = os.stat(path).st_ino  # the socket just closed: a stale one now
    with pytest.raises(ValueError, match="no such group: 'no-such-group-here'"):
        bind_unix(path, group="no-such-group-here")
    # Nothing left half set up: the stale socket as it was, no private directory.
    assert os.stat(path).st_ino == before
    assert os.listdir(short_dir) == ["s.sock"]

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


def test_bind_unix_shows_the_socket_only_once_it_listens(
    short_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever finds the file can connect: the daemon checking that a
    plugin listens, or a test waiting for the file, never meets a socket
    that refuses connections (bound, not yet listening)."""
    import _socket

    path = os.path.join(short_dir, "s.sock")
    seen: list[tuple[bool, int]] = []
    real = _socket.socket

    class Watched(real):  # type: ignore[misc,valid-type]
        def listen(self, backlog: int) -> None:
            bound = self.getsockname()
            seen.append((os.path.exists(path), stat.S_IMODE(os.stat(bound).st_mode)))
            super().listen(backlog)

    monkeypatch.setattr(_socket, "socket", Watched)
    sock = bind_unix(path, mode=0o600)
    monkeypatch.undo()
    try:
        assert seen == [(False, 0o600)]  # not there yet; its mode already set
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
        assert os.listdir(short_dir) == ["s.sock"]
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
    # SIGTERM stops it whether the server has started yet or not: its handler
    # is in place before the socket is bound.
    path = os.path.join(short_dir, "s.sock")
    previous = signal.getsignal(signal.SIGTERM)

    def stop_soon() -> None:
        wait_until(lambda: os.path.exists(path), "serve() bound its socket")
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stop_soon)
    thread.start()
    serve(SlowVolumes(), path=path)
    thread.join()
    assert not os.path.exists(path)
    assert signal.getsignal(signal.SIGTERM) == previous


@pytest.mark.parametrize(
    "argv",
    [
        ["--socket", "lv.sock", "a.b:C"],
        ["--path", "/tmp/x.sock", "a:C", "b:D"],
        ["--log-level", "debug", "--socket", "s", "a:C"],
        ["a:C", "--socket", "s"],
        ["--socket=s", "a:C"],
        ["--socket", "s", "--path", "/p", "a:C"],
        ["--socket", "s"],
        ["--socket", "s", "--socket", "t", "a:C"],
        ["--socket", "-s", "a:C"],
        ["--help"],
        ["--log-level", "info", "a:C"],
        [],
    ],
)
def test_the_quick_argument_reader_agrees_with_argparse(argv: list[str]) -> None:
    from plugin.__main__ import _arguments, _parser

    quick = _arguments(argv)
    if quick is None:
        return  # argparse reads it (help, or an error)
    assert vars(quick) == vars(_parser().parse_args(argv))


def test_the_quick_argument_reader_reads_what_the_builder_writes() -> None:
    from plugin.__main__ import _arguments

    args = _arguments(["--socket", "localvol.sock", "localvol.driver:LocalVolumes"])
    assert args is not None
    assert vars(args) == {
        "socket": "localvol.sock",
        "path": None,
        "log_level": None,
        "listen": None,
        "spec": None,
        "tls_cert": None,
        "tls_key": None,
        "tls_client_ca": None,
        "drivers": ["localvol.driver:LocalVolumes"],
    }


def test_a_call_started_by_hand_goes_on_in_a_task() -> None:
    # What plugin._http does with an answer that had to wait after all.
    from plugin._http import _go_on

    async def call(gate: asyncio.Future[str]) -> str:
        return "answered " + await gate

    async def main() -> tuple[str, bool]:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[str] = loop.create_future()
        run = call(gate)
        waiting = run.send(None)  # started by hand: it waits for the gate
        task = loop.create_task(_go_on(run, waiting))
        loop.call_soon(gate.set_result, "late")
        answered = await task
        # A cancellation reaches the coroutine inside.
        gate2: asyncio.Future[str] = loop.create_future()
        run2 = call(gate2)
        task2 = loop.create_task(_go_on(run2, run2.send(None)))
        await asyncio.sleep(0)
        task2.cancel()
        try:
            await task2
        except asyncio.CancelledError:
            return answered, gate2.cancelled()
        return answered, False

    assert asyncio.run(main()) == ("answered late", True)


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": "the socket", "sockname": "/s.sock"}.get(name, default)


def test_one_write_joins_a_held_head_with_its_body_and_passes_the_rest() -> None:
    from plugin._http import OneWrite

    raw = _Recorder()
    writes = OneWrite(raw)  # type: ignore[arg-type]
    writes.write(b"untouched")
    writes.hold()
    writes.write(b"HEAD\r\n\r\n")
    assert raw.writes == [b"untouched"]
    assert writes.get_write_buffer_size() == len(b"HEAD\r\n\r\n")
    writes.write(b"{}")
    assert raw.writes == [b"untouched", b"HEAD\r\n\r\n{}"]
    writes.hold()
    writes.write(b"HEAD2")
    writes.close()  # what is held goes out before the close
    assert (raw.writes[-1], raw.closed) == (b"HEAD2", True)
    writes.hold()
    writes.write(b"dropped")
    writes.abort()
    assert (raw.writes[-1], raw.aborted) == (b"HEAD2", True)
    assert writes.get_extra_info("sockname") == "/s.sock"
    writes._no_socket = True
    assert writes.get_extra_info("socket") is None
