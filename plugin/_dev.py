"""Dev mode inside the plugin: the server restarts on every save of the source.

``python -m plugin._dev (--socket NAME | --path PATH) [options] module:Class ...``
is the entrypoint of the dev plugin that ``docker-plugin-kit dev`` creates, in
place of ``python -m plugin``; a plugin not in dev mode never imports this
module. The author's source is bind-mounted from the host into the plugin and
is the working directory. This process is a small supervisor:

* It binds the plugin's socket first and holds it for its whole life. The
  daemon's connect succeeds at once (it gives a plugin about 9.5 s), and the
  daemon never sees the socket go away: a call that arrives while one server
  replaces another waits in the socket's backlog, it is never refused. Nor
  does the process exit on a reload, which the daemon would answer by
  starting the plugin all over again.
* The server runs in a child process that inherits the listening socket.
* Every ``POLL`` seconds it compares the size, mtime and inode of the ``.py``
  files under the source tree (tests, hidden and virtual-environment
  directories left out). Polling a project's few dozen files costs about a
  millisecond, needs no dependency, and works where file events do not
  cross a bind mount (virtual-machine file shares).
* On a change it starts the next child, which imports the drivers (and the
  server) while the previous child still serves. If that import fails, a
  syntax error in a save half-done, the error is logged (stderr, which the
  daemon logs at error level, with the host's paths) and the previous code
  keeps serving until the next save. Otherwise the previous child is stopped
  (its calls in flight finish), and the new one makes the drivers and
  serves.
* When there is no previous code to keep (the first start, or a driver whose
  constructor raised), a child answers every call with ``{"Err": ...}``
  naming the error, so that the user's ``docker`` command says what is wrong
  instead of waiting; the next save is picked up as usual.
* A child that exits by itself is started again, unless it did so within
  ``CRASH_WINDOW`` seconds of starting: then the error answers until the next
  save, never a restart loop.

What lives in the process is lost on a reload, as in a crash: the driver is
made again, from its state on disk. Mounts made by the old server stay (they
belong to the plugin's mount namespace, which the supervisor keeps).

With ``--status FILE`` each event is also appended to FILE as one JSON line,
which the ``dev`` command on the host follows and prints.
"""

from __future__ import annotations

import _socket
import argparse
import contextlib
import json
import logging
import os
import select
import signal
import socket as socketlib
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

__all__ = ["Supervisor", "Watcher", "main"]

log = logging.getLogger("plugin.dev")

#: Seconds between two looks at the source tree.
POLL = 0.25
#: A change is acted on once the tree has stayed the same this long (an
#: editor may write a file in several steps), at most SETTLE_MAX.
SETTLE = 0.05
SETTLE_MAX = 2.0
#: How long a new server may take to import the drivers.
IMPORT_TIMEOUT = 60.0
#: How long a server may take to stop (it gives calls in flight 8 s).
STOP_TIMEOUT = 9.0
#: How long a stopping server waits for requests on the connections it has
#: just accepted (see _drain_first).
DRAIN = 0.1
#: A server that exits by itself this soon after starting is not restarted.
CRASH_WINDOW = 2.0
#: Where the dev plugin has the host's source mounted: the host's path, set
#: in the dev plugin's config, so that errors name the files the author edits.
HOST_SOURCE_ENV = "DPK_DEV_SOURCE"

#: Directory names never watched, besides hidden ones and virtual environments.
IGNORED_DIRS = frozenset({"__pycache__", "tests", "test", "build", "dist", "node_modules"})


def _ignored_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"


Stamp = tuple[int, int, int]


class Watcher:
    """The ``.py`` files under ``root``, compared by size, mtime and inode
    (an editor that saves by renaming a new file over the old one changes
    the inode even within one mtime tick).

    ``exclude`` names directories relative to ``root`` to leave out (the
    bundle's output); tests, hidden directories, ``__pycache__`` and
    virtual environments are always left out.
    """

    def __init__(
        self, root: str | os.PathLike[str], exclude: Iterable[str] = (), settle: float = SETTLE
    ) -> None:
        self.root = os.fspath(root)
        self.exclude = {os.path.normpath(e) for e in exclude}
        self.settle = settle
        self.files = self.scan()

    def scan(self) -> dict[str, Stamp]:
        """Relative path -> (mtime_ns, size, inode) of every watched file."""
        out: dict[str, Stamp] = {}
        for dirpath, dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            dirs[:] = sorted(d for d in dirs if not self._skip(dirpath, rel, d))
            for name in files:
                if not name.endswith(".py") or _ignored_file(name):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # removed meanwhile, or a dangling link
                out[os.path.normpath(os.path.join(rel, name))] = (
                    st.st_mtime_ns,
                    st.st_size,
                    st.st_ino,
                )
        return out

    def _skip(self, dirpath: str, rel: str, name: str) -> bool:
        if name.startswith(".") or name in IGNORED_DIRS:
            return True
        if os.path.normpath(os.path.join(rel, name)) in self.exclude:
            return True
        return os.path.exists(os.path.join(dirpath, name, "pyvenv.cfg"))

    def changes(self) -> list[str]:
        """Files added, changed or removed since the last call, once the tree
        has settled; [] when nothing changed."""
        current = self.scan()
        changed = _diff(self.files, current)
        if changed:
            deadline = time.monotonic() + SETTLE_MAX
            while time.monotonic() < deadline:
                time.sleep(self.settle)
                again = self.scan()
                if again == current:
                    break
                changed |= _diff(current, again)
                current = again
        self.files = current
        return sorted(changed)


def _diff(before: dict[str, Stamp], after: dict[str, Stamp]) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


# --- the supervisor -----------------------------------------------------------------


@dataclass
class _Child:
    """One server process and its two pipes: JSON lines from it (status),
    commands to it (control; its end of file stops the child)."""

    proc: subprocess.Popen[bytes]
    status: int
    control: int
    generation: int
    started: float
    changed: list[str] = field(default_factory=list)
    detected: float = 0.0
    error_mode: bool = False
    serving: bool = False
    exit: int | None = None
    buffer: bytes = b""
    pending: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, command: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.control, command.encode() + b"\n")

    def read(self) -> None:
        """Queue the complete lines the child has written so far."""
        if self.status < 0:
            return
        while True:
            try:
                chunk = os.read(self.status, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                self.pending.append(json.loads(line))

    def close(self) -> None:
        for fd in (self.status, self.control):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.status = self.control = -1


class Supervisor:
    """Holds the socket, runs one server child at a time, reloads on change.

    ``run()`` serves until SIGTERM or SIGINT, then stops the server (its
    calls in flight finish), removes the socket and returns 0.
    """

    def __init__(
        self,
        drivers: Sequence[str],
        where: str,
        *,
        exclude: Iterable[str] = (),
        poll: float = POLL,
        status: str | None = None,
        log_level: str | None = None,
        mode: int = 0o660,
        crash_window: float = CRASH_WINDOW,
    ) -> None:
        self.drivers = list(drivers)
        self.crash_window = crash_window
        self.where = where
        self.exclude = list(exclude)
        self.poll = poll
        self.status_path = status
        self.log_level = log_level
        self.mode = mode
        self.root = os.getcwd()
        self.host_root = os.environ.get(HOST_SOURCE_ENV) or None
        #: The child serving (or answering with an error), if any.
        self.current: _Child | None = None
        #: Every child not yet reaped, by PID.
        self.children: dict[int, _Child] = {}
        self.generation = 0
        self.stopping = False
        self.sock: _socket.socket | None = None  # plugin._socket.bind_unix
        self._wake_r = self._wake_w = -1
        self._status_file: IO[str] | None = None

    # -- running --------------------------------------------------------------------

    def run(self) -> int:
        from ._socket import _identity, bind_unix

        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w)
        handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        self._open_status()
        try:
            # First of all: the daemon dials the socket within seconds.
            self.sock = bind_unix(self.where, mode=self.mode)
            ours = _identity(self.where)
            try:
                self._serve()
            finally:
                self._stop(*self.children.values())
                self.sock.close()
                with contextlib.suppress(OSError):
                    if _identity(self.where) == ours:  # never a successor's socket
                        os.unlink(self.where)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.event("stopped")
            if self._status_file is not None:
                self._status_file.close()
        log.info("dev mode: stopped")
        return 0

    def _serve(self) -> None:
        log.info("dev mode: watching %s for changes", self.host_root or self.root)
        watcher = Watcher(self.root, self.exclude)
        self.event("listening", socket=self.where, watching=len(watcher.files))
        self._next([], time.monotonic())
        while not self.stopping:
            self._wait([self.current] if self.current else [], self.poll)
            self._reap()
            if self.stopping:
                break
            if self.current is not None:
                self._handle(self.current)
                if self.current.exit is not None:
                    self._exited(self.current)
                    continue
            changed = watcher.changes()
            if changed and not self.stopping:
                self._next(changed, time.monotonic())

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _next(self, changed: list[str], detected: float) -> None:
        """Start the next server; keep the current one unless the new one
        imports the drivers."""
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" * (len(changed) > 5))
            log.info("%s changed: reloading", shown)
            self.event("reloading", changed=changed)
        child = self._spawn()
        child.changed, child.detected = changed, detected
        msg = self._await(child, IMPORT_TIMEOUT)
        if self.stopping:
            return
        if msg is None or msg.get("state") != "imported":
            if msg is None:
                error = self._no_answer(child, "importing the drivers")
                msg = {"state": "failed", "stage": "import", "error": error, "detail": ""}
            keep = self.current is not None and self.current.exit is None
            self._failed(msg, child, keeping=keep)
            if keep:
                self._stop(child)
                return
            if child.exit is not None:
                child = self._spawn(error=str(msg["error"]))
                self._await(child, IMPORT_TIMEOUT)
            child.error_mode = True
            child.send("go")  # it answers every call with the error
            self.current = child
            return
        if self.current is not None:
            self._stop(self.current)
        child.send("go")
        self.current = child
        # Its "serving" (or the failure to make the drivers), handled as it comes.
        self._await(child, 5.0, keep=True)
        self._handle(child)

    def _handle(self, child: _Child) -> None:
        child.read()
        while child.pending:
            msg = child.pending.pop(0)
            state = msg.get("state")
            if state == "failed":
                child.error_mode = True
                self._failed(msg, child, keeping=False)
            elif state == "serving" and not child.serving:
                child.serving = True
                if child.error_mode:
                    continue  # reported with the failure
                took = round(time.monotonic() - child.detected, 3)
                decl = msg.get("declarations")
                if child.changed:
                    log.info("reloaded in %.2f s (server %d)", took, child.generation)
                    self.event(
                        "reloaded",
                        generation=child.generation,
                        seconds=took,
                        changed=child.changed,
                        declarations=decl,
                    )
                else:
                    log.info("serving (server %d, ready in %.2f s)", child.generation, took)
                    self.event(
                        "serving", generation=child.generation, seconds=took, declarations=decl
                    )

    def _failed(self, msg: dict[str, Any], child: _Child, *, keeping: bool) -> None:
        stage = "import the drivers" if msg.get("stage") == "import" else "make the drivers"
        error = self.host_paths(str(msg.get("error")))
        detail = self.host_paths(str(msg.get("detail") or "")).rstrip()
        then = (
            "still serving the previous code until the next save"
            if keeping
            else "every call answers with this error until the next save"
        )
        log.error("cannot %s: %s (%s)%s", stage, error, then, "\n" + detail if detail else "")
        self.event(
            "failed",
            generation=child.generation,
            stage=msg.get("stage"),
            error=error,
            detail=detail,
            serving="previous" if keeping else "error",
            changed=child.changed,
        )

    def _exited(self, child: _Child) -> None:
        """The server exited by itself: start it again, or answer with the
        error when it exits right after starting."""
        self.current = None
        up = time.monotonic() - child.started
        reason = _exit_reason(child.exit)
        child.close()
        if child.error_mode or up < self.crash_window:
            error = f"the server {reason} {up:.1f} s after it started"
            log.error("%s; every call answers with this error until the next save", error)
            self.event(
                "failed",
                generation=child.generation,
                stage="run",
                error=error,
                detail="",
                serving="error",
                changed=[],
            )
            if not child.error_mode:
                replacement = self._spawn(error=error)
                replacement.error_mode = True
                self._await(replacement, IMPORT_TIMEOUT)
                replacement.send("go")
                self.current = replacement
            return
        log.error("the server %s; starting it again", reason)
        self.event("exited", generation=child.generation, error=f"the server {reason}")
        self._next([], time.monotonic())

    # -- children -------------------------------------------------------------------

    def _spawn(self, error: str | None = None) -> _Child:
        assert self.sock is not None
        self.generation += 1
        status_r, status_w = os.pipe()
        control_r, control_w = os.pipe()
        listen = self.sock.fileno()
        cmd = [sys.executable, "-u", "-m", "plugin._dev", "--child"]
        cmd += ["--fds", f"{listen},{status_w},{control_r}"]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        if error is not None:
            cmd += ["--error", error]
        cmd += ["--", *self.drivers]
        try:
            proc = subprocess.Popen(cmd, pass_fds=(listen, status_w, control_r), cwd=self.root)
        except BaseException:
            for fd in (status_r, control_w):
                os.close(fd)
            raise
        finally:
            os.close(status_w)
            os.close(control_r)
        os.set_blocking(status_r, False)
        child = _Child(proc, status_r, control_w, self.generation, time.monotonic())
        child.error_mode = error is not None
        self.children[proc.pid] = child
        return child

    def _await(self, child: _Child, timeout: float, *, keep: bool = False) -> dict[str, Any] | None:
        """The child's next message (left queued with ``keep``); None when the
        child exits or ``timeout`` passes first, or the supervisor stops."""
        deadline = time.monotonic() + timeout
        while not self.stopping:
            child.read()
            if child.pending:
                return child.pending[0] if keep else child.pending.pop(0)
            self._reap()
            if child.exit is not None:
                child.read()
                if child.pending:
                    return child.pending[0] if keep else child.pending.pop(0)
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._wait([child], min(left, 0.5))
        return None

    def _no_answer(self, child: _Child, doing: str) -> str:
        if child.exit is None:
            self._stop(child)
            return f"the server did not finish {doing} within {IMPORT_TIMEOUT:g} s"
        return f"the server {_exit_reason(child.exit)} while {doing}"

    def _wait(self, children: Sequence[_Child], timeout: float) -> None:
        """Until a child writes, a signal comes, or ``timeout`` passes."""
        fds = [self._wake_r] + [c.status for c in children if c.status >= 0]
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    while os.read(self._wake_r, 512):
                        pass

    def _reap(self) -> None:
        """Collect every exited child, ours and orphans (as PID 1 of the
        plugin, this process inherits the orphans of its children)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                code = os.waitstatus_to_exitcode(status)
                child.exit = child.proc.returncode = code

    def _stop(self, *children: _Child) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; calls in flight finish."""
        for child in children:
            if child.exit is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            self._reap()
            alive = [c for c in children if c.exit is None]
            if not alive:
                break
            if time.monotonic() > deadline:
                for child in alive:
                    log.error(
                        "server %d did not stop in %g s: killing it", child.generation, STOP_TIMEOUT
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.005)
        for child in children:
            child.close()
            if child is self.current:
                self.current = None

    # -- reporting ------------------------------------------------------------------

    def host_paths(self, text: str) -> str:
        """``text`` with the plugin's source paths as the host has them."""
        return _host(text, self.root)

    def _open_status(self) -> None:
        if self.status_path is None:
            return
        try:
            self._status_file = open(self.status_path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            log.warning("cannot write dev events to %s: %s", self.status_path, exc.strerror)

    def event(self, event: str, **fields: Any) -> None:
        """Append one event to the status file, if there is one."""
        if self._status_file is None:
            return
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields})
        with contextlib.suppress(OSError):
            self._status_file.write(line + "\n")
            self._status_file.flush()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


# --- the server child ---------------------------------------------------------------


class ErrorApp:
    """Answers every call with 500 ``{"Err": message}``: what the daemon shows
    the user while the driver cannot run."""

    def __init__(self, message: str) -> None:
        self.body = json.dumps({"Err": message}).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:  # read the request to its end
            msg = await receive()
            if msg["type"] != "http.request" or not msg.get("more_body"):
                break
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/vnd.docker.plugins.v1.1+json"),
                    (b"content-length", b"%d" % len(self.body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def describe(exc: BaseException, root: str) -> tuple[str, str]:
    """A one-line summary of ``exc`` naming the author's file and line (the
    innermost frame under ``root``), and its traceback from the first frame
    under ``root`` on (the kit's import machinery left out)."""
    prefix = root.rstrip("/") + "/"
    if isinstance(exc, SyntaxError) and exc.filename:
        detail = "".join(traceback.format_exception_only(exc))
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno})", detail
    summary = f"{type(exc).__name__}: {exc}"
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(prefix):
        tb = tb.tb_next
    detail = "".join(traceback.format_exception(type(exc), exc, tb))
    for frame in reversed(traceback.extract_tb(tb)):
        if frame.filename.startswith(prefix):
            return f"{summary} ({frame.filename}, line {frame.lineno})", detail
    return summary, detail


def declarations(classes: Sequence[type[Any]]) -> dict[str, Any]:
    """What the drivers ask of config.json, as JSON: a change means the dev
    plugin must be created again."""
    from ._requirements import requirements

    return json.loads(json.dumps(asdict(requirements(classes)), default=list))  # type: ignore[no-any-return]


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugin._dev --child")
    parser.add_argument("--fds", required=True)
    parser.add_argument("--log-level")
    parser.add_argument("--error")
    parser.add_argument("drivers", nargs="*")
    args = parser.parse_args(argv)
    listen, status_fd, control_fd = (int(x) for x in args.fds.split(","))

    from ._serve import _StopOnSignal, _uvicorn, configure_logging

    configure_logging(args.log_level)
    status = os.fdopen(status_fd, "w", buffering=1, encoding="utf-8")
    control = os.fdopen(control_fd, "r", encoding="utf-8")

    def send(state: str, **fields: Any) -> None:
        status.write(json.dumps({"state": state, **fields}) + "\n")
        status.flush()

    root = os.getcwd()
    error: str | None = args.error
    classes: list[type[Any]] = []
    decl: dict[str, Any] | None = None
    if error is None:
        try:
            from ._driver import load_driver_class

            classes = [load_driver_class(spec) for spec in args.drivers]
            decl = declarations(classes)
            # The server's own imports too, while the previous server still serves.
            uvicorn = _uvicorn()
            from ._app import make_app
        except BaseException as exc:
            error, detail = describe(exc, root)
            send("failed", stage="import", error=error, detail=detail)
        else:
            send("imported", declarations=decl)
    else:
        send("imported", error_mode=True)
    if control.readline().strip() != "go":
        return 0
    # The supervisor closes the control pipe when it goes: stop with it.
    threading.Thread(target=_stop_at_eof, args=(control,), daemon=True).start()
    app: Any = None
    if error is None:
        try:
            drivers = [cls() for cls in classes]
            app = make_app(*drivers)
        except BaseException as exc:
            error, detail = describe(exc, root)
            send("failed", stage="start", error=error, detail=detail)
    if error is not None:
        uvicorn = _uvicorn()
        app = ErrorApp(
            f"dev mode: the plugin's code cannot run: {_host(error, root)}; fix it and save"
        )
    from ._serve import _server

    server = _server(uvicorn, app)
    _drain_first(server)
    sock = socketlib.socket(fileno=listen)
    with _StopOnSignal() as stop:
        stop.server = server
        send("serving", error=error, declarations=decl)
        if not stop.signalled:
            server.run(sockets=[sock])
    return 0


def _drain_first(server: Any) -> None:
    """On stop, the server stops accepting first and gives the connections it
    has just accepted DRAIN seconds to send their request, which it then
    answers: uvicorn alone closes a connection with no request yet at once,
    and the daemon would retry the call only a second later. Connections not
    yet accepted wait in the socket's backlog for the next server."""
    import asyncio

    shutdown = server.shutdown

    async def drain_then_shutdown(sockets: Any = None) -> None:
        for listener in getattr(server, "servers", ()):
            listener.close()
        await asyncio.sleep(DRAIN)
        await shutdown(sockets=sockets)

    server.shutdown = drain_then_shutdown


def _host(text: str, root: str) -> str:
    host = os.environ.get(HOST_SOURCE_ENV)
    if not host:
        return text
    return text.replace(root.rstrip("/") + "/", host.rstrip("/") + "/")


def _stop_at_eof(control: IO[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        control.read()
    os.kill(os.getpid(), signal.SIGTERM)


# --- command line -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    from ._serve import configure_logging
    from ._socket import socket_path

    parser = argparse.ArgumentParser(
        prog="python -m plugin._dev", description=__doc__.split("\n")[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="socket file name in /run/docker/plugins")
    where.add_argument("--path", help="full socket path (tests)")
    parser.add_argument("--log-level", default=None, help="default: $LOG_LEVEL, else info")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory of the source tree not to watch (relative to it)",
    )
    parser.add_argument("--poll", type=float, default=POLL, help=f"seconds (default {POLL})")
    parser.add_argument("--status", help="append each event to this file as a JSON line")
    parser.add_argument("--crash-window", type=float, default=CRASH_WINDOW, help=argparse.SUPPRESS)
    parser.add_argument("drivers", nargs="+", metavar="module:Class")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        path = socket_path(args.socket, args.path)
    except ValueError as exc:
        print(f"plugin: cannot serve: {exc}", file=sys.stderr)
        return 1
    supervisor = Supervisor(
        args.drivers,
        path,
        exclude=args.exclude,
        poll=args.poll,
        status=args.status,
        log_level=args.log_level,
        crash_window=args.crash_window,
    )
    try:
        return supervisor.run()
    except (OSError, ValueError) as exc:
        print(f"plugin: cannot serve: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
