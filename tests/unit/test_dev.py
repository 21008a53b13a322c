"""Dev mode inside the plugin (plugin/_dev.py): the watcher in-process, the
supervisor for real, as a process on a unix socket with the author's source
in a temporary directory, changed the way an editor saves it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plugin import _dev
from plugin._dev import Watcher, describe

ROOT = Path(__file__).resolve().parents[2]

# The author's driver; MARK and the two hooks are what the tests change.
DRIVER = """\
import os, threading
from plugin.volume import GetResponse, ListResponse, Volume, VolumeDriver

MARK = {mark!r}


class Dev(VolumeDriver):
    def __init__(self):
        {init}

    def get(self, req):
        if req.name == "exit":
            threading.Timer(0.05, os._exit, (3,)).start()
        return GetResponse(Volume(req.name, status={{"mark": MARK, "pid": os.getpid()}}))

    def create(self, req): ...
    def remove(self, req): ...
    def mount(self, req): ...
    def unmount(self, req): ...
    def path(self, req): ...
    def list(self): return ListResponse([])
"""


def driver_source(mark: str, init: str = "pass", tail: str = "") -> str:
    return DRIVER.format(mark=mark, init=init) + tail


def save(path: Path, text: str) -> None:
    """Save as editors do: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("plugin.moby.localhost", timeout=10)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


@dataclass
class Dev:
    """A supervisor running on ``src`` (its working directory)."""

    src: Path
    sock: str
    status: Path
    proc: subprocess.Popen[str]

    def call(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """One call on a connection of its own, as the daemon makes them."""
        conn = _Unix(self.sock)
        try:
            data = json.dumps(body).encode()
            conn.request("POST", path, data, {"Content-Length": str(len(data))})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def get(self, name: str = "v") -> tuple[int, Any]:
        return self.call("/VolumeDriver.Get", {"Name": name})

    def mark(self) -> str | None:
        status, body = self.get()
        return body["Volume"]["Status"]["mark"] if status == 200 else None

    def events(self) -> list[dict[str, Any]]:
        if not self.status.exists():
            return []
        return [json.loads(line) for line in self.status.read_text().splitlines()]

    def event(self, name: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th event called ``name``, waited for."""

        def found() -> dict[str, Any] | None:
            matching = [e for e in self.events() if e["event"] == name]
            return matching[count - 1] if len(matching) >= count else None

        return wait_for(f"event {name} #{count}", found)  # type: ignore[no-any-return]

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, as the daemon's disable: exit status, stdout, stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Dev]]:
    """Start a supervisor on a project in tmp_path whose driver is ``source``."""
    running: list[Dev] = []

    def start(
        source: str,
        *,
        host: str | None = None,
        extra: tuple[str, ...] = (),
        environ: dict[str, str] | None = None,
    ) -> Dev:
        src = tmp_path / "src"
        (src / "pkg").mkdir(parents=True)
        (src / "pkg" / "__init__.py").write_text("")
        (src / "pkg" / "driver.py").write_text(source)
        sock = str(tmp_path / "p.sock")
        status = tmp_path / "events.jsonl"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "info"}
        env.pop(_dev.HOST_SOURCE_ENV, None)
        # Bytecode written, as in the dev plugin (outside the source).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
        env.update(environ or {})
        if host is not None:
            env[_dev.HOST_SOURCE_ENV] = host
        cmd = [sys.executable, "-m", "plugin._dev", "--path", sock, "--status", str(status)]
        cmd += ["--poll", "0.05", *extra, "pkg.driver:Dev"]
        proc = subprocess.Popen(
            cmd, cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        dev = Dev(src, sock, status, proc)
        running.append(dev)
        dev.event("listening")
        return dev

    yield start
    for dev in running:
        dev.stop()


# --- the watcher ----------------------------------------------------------------------


def test_watcher_sees_changed_added_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("B = 1\n")
    watcher = Watcher(tmp_path, settle=0.001)
    assert sorted(watcher.files) == ["pkg/a.py", "pkg/b.py"]
    assert watcher.changes() == []
    (tmp_path / "pkg" / "a.py").write_text("A = 2\n")
    (tmp_path / "pkg" / "c.py").write_text("C = 1\n")
    (tmp_path / "pkg" / "b.py").unlink()
    assert watcher.changes() == ["pkg/a.py", "pkg/b.py", "pkg/c.py"]
    assert watcher.changes() == []


def test_watcher_sees_a_save_by_rename_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "driver.py"
    path.write_text("X = 1\n")
    before = path.stat()
    watcher = Watcher(tmp_path, settle=0.001)
    save(path, "X = 2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert watcher.changes() == ["driver.py"]


def test_watcher_leaves_out_tests_caches_hidden_dirs_venvs_and_excluded_dirs(
    tmp_path: Path,
) -> None:
    files = [
        "pkg/driver.py",
        "pkg/tests/test_driver.py",
        "tests/test_pkg.py",
        "pkg/test_inline.py",
        "pkg/driver_test.py",
        "conftest.py",
        "pkg/__pycache__/driver.py",
        ".git/hooks/x.py",
        "venv/lib/site.py",
        "rootfs-build/rootfs/usr/lib/os.py",
        "pkg/notes.txt",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    watcher = Watcher(tmp_path, exclude=["rootfs-build"], settle=0.001)
    assert list(watcher.files) == ["pkg/driver.py"]
    for name in files[1:]:
        (tmp_path / name).write_text("changed = True\n")
    assert watcher.changes() == []


def test_watcher_waits_until_a_save_in_several_steps_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "driver.py"
    path.write_text("X = 1\n")
    watcher = Watcher(tmp_path, settle=0.001)
    steps = iter(["X = 2\n", "X = 2\nY = 3\n"])
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the editor writes on while the watcher settles
        for text in steps:
            path.write_text(text)
            break
        real_sleep(seconds)

    monkeypatch.setattr(_dev.time, "sleep", sleep)
    path.write_text("")
    assert watcher.changes() == ["driver.py"]
    assert next(steps, None) is None  # it waited through both steps
    assert watcher.files["driver.py"][1] == len("X = 2\nY = 3\n")
    assert watcher.changes() == []


def test_describe_names_the_authors_file_and_line(tmp_path: Path) -> None:
    root = str(tmp_path)
    try:
        compile("def f(:\n", f"{root}/pkg/driver.py", "exec")
    except SyntaxError as exc:
        summary, detail = describe(exc, root)
    assert summary == f"SyntaxError: invalid syntax ({root}/pkg/driver.py, line 1)"
    assert detail.endswith("SyntaxError: invalid syntax\n")
    code = compile("def f():\n    return 1 / 0\nf()\n", f"{root}/pkg/driver.py", "exec")
    try:
        exec(code, {})
    except ZeroDivisionError as exc:
        summary, detail = describe(exc, root)
    assert summary == f"ZeroDivisionError: division by zero ({root}/pkg/driver.py, line 2)"
    # The traceback starts at the author's code: this test's frame is left out.
    assert detail.splitlines()[1] == f'  File "{root}/pkg/driver.py", line 3, in <module>'


# --- the supervisor -------------------------------------------------------------------


def test_a_save_is_served_by_the_new_code_on_the_same_socket(start: Callable[..., Dev]) -> None:
    dev = start(driver_source("one"))
    assert dev.event("serving")["generation"] == 1
    assert dev.mark() == "one"
    first_pid = dev.get()[1]["Volume"]["Status"]["pid"]
    inode = os.stat(dev.sock).st_ino
    save(dev.src / "pkg" / "driver.py", driver_source("two"))
    wait_for("the new code", lambda: dev.mark() == "two")
    assert os.stat(dev.sock).st_ino == inode
    assert dev.get()[1]["Volume"]["Status"]["pid"] != first_pid
    reloaded = dev.event("reloaded")
    assert (reloaded["generation"], reloaded["changed"]) == (2, ["pkg/driver.py"])
    assert 0 < reloaded["seconds"] < 10
    assert reloaded["declarations"]["interface_types"] == ["docker.volumedriver/1.0"]
    assert [e["event"] for e in dev.events()] == ["listening", "serving", "reloading", "reloaded"]
    assert dev.proc.poll() is None


def test_a_save_within_the_same_second_and_of_the_same_size_is_served(
    start: Callable[..., Dev],
) -> None:
    # Bytecode records the source's mtime in whole seconds and its size.
    dev = start(driver_source("m1"))
    dev.event("serving")
    path = dev.src / "pkg" / "driver.py"
    assert dev.mark() == "m1"
    before = path.stat()
    save(path, driver_source("m2"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    wait_for("the new code", lambda: dev.mark() == "m2")


def test_a_broken_save_is_reported_and_the_old_code_serves_until_the_next(
    start: Callable[..., Dev],
) -> None:
    dev = start(driver_source("one"), host="/home/me/project")
    dev.event("serving")
    broken = driver_source("two", tail="\ndef oops(:\n")
    save(dev.src / "pkg" / "driver.py", broken)
    failed = dev.event("failed")
    line = broken.count("\n")
    assert failed["error"] == (
        f"SyntaxError: invalid syntax (/home/me/project/pkg/driver.py, line {line})"
    )
    assert failed["stage"] == "import"
    assert failed["serving"] == "previous"
    assert 'File "/home/me/project/pkg/driver.py"' in failed["detail"]
    assert dev.mark() == "one"
    save(dev.src / "pkg" / "driver.py", driver_source("three"))
    wait_for("the fixed code", lambda: dev.mark() == "three")
    code, _, err = dev.stop()
    assert code == 0
    # The daemon logs stderr: the error is there, with the host's path.
    assert (
        f"ERROR plugin.dev: cannot import the drivers: SyntaxError: invalid syntax "
        f"(/home/me/project/pkg/driver.py, line {line}) (still serving the previous code "
        "until the next save)"
    ) in err


def test_a_driver_broken_from_the_start_answers_every_call_with_its_error(
    start: Callable[..., Dev],
) -> None:
    dev = start(driver_source("one", tail="\nundefined_name\n"))
    assert dev.event("failed")["serving"] == "error"
    where = f"{dev.src}/pkg/driver.py, line {DRIVER.count(chr(10)) + 2}"
    assert dev.get() == (
        500,
        {
            "Err": "dev mode: the plugin's code cannot run: NameError: name 'undefined_name' "
            f"is not defined ({where}); fix it and save"
        },
    )
    assert dev.call("/VolumeDriver.Create", {"Name": "v"})[0] == 500
    save(dev.src / "pkg" / "driver.py", driver_source("two"))
    wait_for("the fixed code", lambda: dev.mark() == "two")


def test_a_bad_setting_answers_every_call_with_what_to_do(start: Callable[..., Dev]) -> None:
    dev = start(driver_source("one"), environ={"LOG_LEVEL": "loud"})
    assert dev.event("failed")["error"] == (
        'bad setting LOG_LEVEL="loud": not one of debug, info, warning, error, critical; '
        "change it with docker plugin set PLUGIN LOG_LEVEL=VALUE"
    )
    assert dev.get() == (
        500,
        {
            "Err": 'dev mode: the plugin\'s code cannot run: bad setting LOG_LEVEL="loud": '
            "not one of debug, info, warning, error, critical; change it with docker plugin "
            "set PLUGIN LOG_LEVEL=VALUE (leave dev mode, or run it with the setting: dev "
            "KEY=VALUE)"
        },
    )


def test_a_constructor_that_raises_after_a_save_answers_with_its_error(
    start: Callable[..., Dev],
) -> None:
    dev = start(driver_source("one"))
    dev.event("serving")
    save(dev.src / "pkg" / "driver.py", driver_source("two", init="raise OSError('no data')"))
    failed = dev.event("failed")
    assert (failed["stage"], failed["serving"]) == ("start", "error")
    assert failed["error"].startswith("OSError: no data (")
    wait_for("the error answer", lambda: dev.get()[0] == 500)
    assert "OSError: no data" in dev.get()[1]["Err"]
    save(dev.src / "pkg" / "driver.py", driver_source("three"))
    wait_for("the fixed code", lambda: dev.mark() == "three")


def test_no_call_fails_while_the_server_is_replaced(start: Callable[..., Dev]) -> None:
    dev = start(driver_source("m0"))
    dev.event("serving")
    answers: list[tuple[int, Any] | BaseException] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            try:
                answers.append(dev.get())
            except (OSError, http.client.HTTPException) as exc:
                answers.append(exc)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for n in range(1, 4):
            save(dev.src / "pkg" / "driver.py", driver_source(f"m{n}"))
            wait_for(f"mark m{n}", lambda n=n: dev.mark() == f"m{n}")  # type: ignore[misc]
    finally:
        done.set()
        thread.join()
    failures = [a for a in answers if not isinstance(a, tuple) or a[0] != 200]
    assert failures == []
    marks = [a[1]["Volume"]["Status"]["mark"] for a in answers if isinstance(a, tuple)]
    # Each mark, in order, and never an older one after a newer.
    assert sorted(set(marks)) == ["m0", "m1", "m2", "m3"]
    assert marks == sorted(marks)


def test_an_idle_kept_alive_connection_is_handed_to_the_next_server(
    start: Callable[..., Dev],
) -> None:
    # The daemon keeps idle connections and reuses them: a reload moves them
    # to the new server, open, instead of closing them under a request.
    dev = start(driver_source("m0"))
    dev.event("serving")
    conn = _Unix(dev.sock)
    body = json.dumps({"Name": "v"}).encode()

    def get() -> tuple[str, int]:
        conn.request("POST", "/VolumeDriver.Get", body, {"Content-Length": str(len(body))})
        status = json.loads(conn.getresponse().read())["Volume"]["Status"]
        return status["mark"], status["pid"]

    served = [get()]
    kept = conn.sock
    for n in range(1, 4):
        save(dev.src / "pkg" / "driver.py", driver_source(f"m{n}"))
        wait_for(f"mark m{n}", lambda n=n: dev.mark() == f"m{n}")  # type: ignore[misc]
        served.append(get())
    assert conn.sock is kept  # never closed, never reconnected
    assert [mark for mark, _ in served] == ["m0", "m1", "m2", "m3"]
    assert len({pid for _, pid in served}) == 4  # by four servers in turn
    conn.close()


def test_a_server_that_exits_is_started_again_unless_it_exits_at_once(
    start: Callable[..., Dev],
) -> None:
    dev = start(driver_source("one"), extra=("--crash-window", "0.5"))
    dev.event("serving")
    time.sleep(0.6)  # the server has run longer than the crash window
    first = dev.get()[1]["Volume"]["Status"]["pid"]
    dev.get("exit")  # answered, then the server exits with status 3
    exited = dev.event("exited")
    assert exited["error"] == "the server exited with status 3"
    wait_for("a new server", lambda: dev.get()[1]["Volume"]["Status"]["pid"] != first)
    # One that exits within the window is not started again: the error answers.
    save(dev.src / "pkg" / "driver.py", driver_source("two", init="os._exit(4)"))
    failed = dev.event("failed")
    assert failed["error"].startswith("the server exited with status 4 ")
    assert failed["serving"] == "error"
    status, body = dev.get()
    assert status == 500
    assert body["Err"].startswith(
        "dev mode: the plugin's code cannot run: the server exited with status 4 "
    )
    save(dev.src / "pkg" / "driver.py", driver_source("three"))
    wait_for("the fixed code", lambda: dev.mark() == "three")


def test_sigterm_stops_the_server_and_removes_the_socket(start: Callable[..., Dev]) -> None:
    dev = start(driver_source("one"))
    dev.event("serving")
    server = dev.get()[1]["Volume"]["Status"]["pid"]
    code, out, _ = dev.stop()
    assert code == 0
    assert not os.path.exists(dev.sock)
    assert dev.events()[-1]["event"] == "stopped"
    assert not Path(f"/proc/{server}").exists()
    assert out.splitlines()[-1] == "INFO plugin.dev: dev mode: stopped"


def test_a_plugin_not_in_dev_mode_does_not_import_the_dev_module(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(
        "import sys\n"
        "from plugin.volume import GetResponse, Volume, VolumeDriver\n"
        "class Probe(VolumeDriver):\n"
        "    def get(self, req):\n"
        "        loaded = 'plugin._dev' in sys.modules\n"
        "        return GetResponse(Volume(req.name, status={'dev': loaded}))\n"
        "    def create(self, req): ...\n"
        "    def remove(self, req): ...\n"
        "    def mount(self, req): ...\n"
        "    def unmount(self, req): ...\n"
        "    def path(self, req): ...\n"
        "    def list(self): ...\n"
    )
    sock = str(tmp_path / "p.sock")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin", "--path", sock, "probe:Probe"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("the socket", lambda: os.path.exists(sock))
        dev = Dev(tmp_path, sock, tmp_path / "none", proc)  # type: ignore[arg-type]
        status, body = wait_for("an answer", lambda: _answered(dev))
        assert (status, body["Volume"]["Status"]) == (200, {"dev": False})
    finally:
        proc.terminate()
        proc.wait(10)


def _answered(dev: Dev) -> tuple[int, Any] | None:
    try:
        return dev.get()
    except OSError:
        return None
