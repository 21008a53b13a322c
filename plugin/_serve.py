"""Serving drivers on the unix socket the daemon dials."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from ._driver import Driver
from ._socket import listening, socket_path

if TYPE_CHECKING:
    import _socket

__all__ = ["configure_logging", "serve", "serve_on"]

log = logging.getLogger("plugin")


class _MaxLevel(logging.Filter):
    def __init__(self, below: int) -> None:
        super().__init__()
        self.below = below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.below


def _level(level: str | int | None) -> int:
    if level is None:
        level = os.environ.get("LOG_LEVEL", "info")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            level = logging.INFO
    return level


def configure_logging(level: str | int | None = None) -> None:
    """Info to stdout, warnings and errors to stderr: the daemon logs a
    plugin's stdout at info level and its stderr at error level."""
    fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(fmt)
    out.addFilter(_MaxLevel(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [out, err]
    root.setLevel(_level(level))


def serve(
    *drivers: Driver,
    socket: str | None = None,
    path: str | None = None,
    mode: int = 0o660,
    group: str | int | None = None,
    log_level: str | None = None,
) -> None:
    """Serve ``drivers`` until SIGTERM or SIGINT, then return.

    ``socket`` is the file name from ``config.json`` ``interface.socket``; the
    socket is ``/run/docker/plugins/<socket>``. ``path`` overrides the whole
    path, for a legacy plugin or a run outside Docker. The socket gets
    ``mode`` and, if given, ``group``; it is removed on exit.

    Unless logging is already configured, logs go to stdout (info) and stderr
    (warnings, errors), where the daemon picks them up; ``log_level``
    defaults to the ``LOG_LEVEL`` environment variable.
    """
    if not drivers:
        raise ValueError("serve() needs at least one driver")
    for driver in drivers:
        if not isinstance(driver, Driver):
            raise TypeError(f"{driver!r} is not a driver instance (did you pass the class?)")
    where = socket_path(socket, path)
    setup_logging(log_level)
    with _StopOnSignal() as stop, listening(where, mode=mode, group=group) as sock:
        serve_on(drivers, sock, where, stop)
    log.info("stopped")


def setup_logging(log_level: str | None) -> None:
    """``configure_logging`` unless logging is configured already."""
    root = logging.getLogger()
    if not root.handlers:
        configure_logging(log_level)
    elif log_level is not None:
        root.setLevel(_level(log_level))


def _uvicorn() -> Any:
    """uvicorn's package, without running its ``__init__`` until something
    else asks for more than ``Config`` and ``Server``.

    Its ``__init__`` imports the command line (click) and the process
    supervisors (multiprocessing), which a plugin never uses: about 2 MB of
    memory and 20 ms before the first answer. Any other attribute of the
    package runs the real ``__init__`` then, so ``uvicorn.run`` and the like
    keep working for a driver that wants them.
    """
    import importlib.util

    package = sys.modules.get("uvicorn")
    if package is not None:
        return package
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> Any:  # PEP 562; gone once __init__ has run
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["uvicorn"] = package
    try:
        from uvicorn.config import Config
        from uvicorn.server import Server
    except BaseException:
        del sys.modules["uvicorn"]
        raise
    # What uvicorn's own modules import from the package.
    package.Config = Config  # type: ignore[attr-defined]
    package.Server = Server  # type: ignore[attr-defined]
    return package


def serve_on(
    drivers: tuple[Driver, ...] | list[Driver],
    sock: _socket.socket,
    where: str,
    stop: _StopOnSignal,
) -> None:
    """Serve ``drivers`` on the listening ``sock`` (at ``where``) until
    ``stop`` is signalled."""
    from ._defer import defer_unused

    defer_unused()
    uvicorn = _uvicorn()

    from ._app import make_app

    app = make_app(*drivers)
    names = ", ".join(f"{type(d).__name__} ({d.implements})" for d in drivers)
    log.info("serving %s on %s", names, where)
    _run_app(uvicorn, app, sock, stop)


def _run_app(uvicorn: Any, app: Any, sock: _socket.socket, stop: _StopOnSignal) -> None:
    """Serve the ASGI ``app`` on the listening ``sock`` until ``stop``."""
    import socket

    if not isinstance(sock, socket.socket):  # a bare one (plugin._socket.bind_unix)
        sock = socket.socket(fileno=sock.detach())
    server = _server(uvicorn, app)
    stop.server = server
    try:
        if not stop.signalled:
            server.run(sockets=[sock])
    finally:
        sock.close()


def _server(uvicorn: Any, app: Any) -> Any:
    """The uvicorn server of a plugin, serving ``app``."""
    from ._http import protocol_class

    config = uvicorn.Config(
        app,
        http=protocol_class(),
        # uvicorn >= 0.36 takes a loop class ("module:name"); before, "auto".
        loop="plugin._http:PluginLoop" if hasattr(uvicorn.Config, "get_loop_factory") else "auto",
        ws="none",
        interface="asgi3",
        lifespan="off",
        proxy_headers=False,
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        # Longer than the daemon's 30 s idle timeout, so that the daemon, not
        # the plugin, closes idle connections (no race on a reused one).
        timeout_keep_alive=65,
        # In-flight calls get 8 s; the daemon sends SIGKILL 10 s after SIGTERM.
        timeout_graceful_shutdown=8,
    )
    return uvicorn.Server(config)


class _StopOnSignal:
    """SIGTERM and SIGINT stop the server and let serve() return normally.

    uvicorn handles both while it runs, then re-raises the signal to the
    handler that was there before it; with Python's default handler the
    process would die of SIGTERM (status 143) without removing its socket.
    This handler is that previous one: it stops the server, or keeps it from
    starting when the signal comes during start-up.
    """

    def __init__(self) -> None:
        self.server: Any = None
        self.signalled = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        # Signals can only be handled in the main thread (uvicorn skips them too).
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signalled = True
        if self.server is not None:
            self.server.should_exit = True
