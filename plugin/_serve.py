"""Serving drivers on the unix socket the daemon dials (or, as a host
service, where a spec file or systemd says)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from ._driver import Driver
from ._listen import TLS, Listener, activation_sockets, bind_tcp, describe, parse_address
from ._socket import _identity, bind_unix, socket_path

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
    listen: str | None = None,
    tls: TLS | None = None,
    mode: int = 0o660,
    group: str | int | None = None,
    log_level: str | None = None,
) -> None:
    """Serve ``drivers`` until SIGTERM or SIGINT, then return.

    ``socket`` is the file name from ``config.json`` ``interface.socket``; the
    socket is ``/run/docker/plugins/<socket>``. ``path`` overrides the whole
    path, for a legacy plugin or a run outside Docker. The socket gets
    ``mode`` and, if given, ``group``; it is removed on exit.

    Outside Docker's plugin manager, ``listen`` is an address as a spec file
    writes it: ``unix:///path``, ``tcp://host:port``, or ``https://host:port``
    with ``tls=TLS(cert, key, client_ca)`` (the daemon speaks TLS only to an
    ``https://`` address). Started by systemd socket activation
    (``LISTEN_FDS``), the plugin serves the sockets systemd passed instead,
    with TLS when ``listen`` is ``https://``, and leaves them to systemd.

    Unless logging is already configured, logs go to stdout (info) and stderr
    (warnings, errors), where the daemon picks them up; ``log_level``
    defaults to the ``LOG_LEVEL`` environment variable.
    """
    if not drivers:
        raise ValueError("serve() needs at least one driver")
    for driver in drivers:
        if not isinstance(driver, Driver):
            raise TypeError(f"{driver!r} is not a driver instance (did you pass the class?)")
    given = [
        n for n, v in (("socket", socket), ("path", path), ("listen", listen)) if v is not None
    ]
    if len(given) > 1 and listen is not None:
        raise ValueError(
            f"serve() takes one of socket=, path= or listen=, not {' and '.join(given)}"
        )
    listener = parse_address(listen, "listen") if listen else None
    if listener is not None and listener.tls and tls is None:
        raise ValueError(
            f"{listener} asks for TLS: pass tls=TLS(cert, key) (--tls-cert, --tls-key)"
        )
    if tls is not None and not (listener is not None and listener.tls):
        raise ValueError("tls= needs an https:// address: the daemon speaks TLS only to those")
    activated = activation_sockets()
    if not activated and listener is None:
        if not given:
            raise ValueError(
                "serve() needs socket= (the config's interface.socket), path= or listen=, "
                "unless systemd passes it its sockets (LISTEN_FDS)"
            )
        listener = Listener("unix", path=socket_path(socket, path))
    setup_logging(log_level)
    with _StopOnSignal() as stop:
        owned = None
        sockets: list[_socket.socket]
        if activated:
            sockets = list(activated)
        elif listener is not None and listener.scheme == "unix":
            sockets = [bind_unix(listener.path, mode=mode, group=group)]
            owned = (listener.path, _identity(listener.path))
        else:
            assert listener is not None
            sockets = [bind_tcp(listener)]
        if owned is not None:
            where = owned[0]  # bind_unix's socket names its private path
        else:
            where = ", ".join(describe(sock, tls is not None) for sock in sockets)  # type: ignore[arg-type]
        if activated:
            where += " (passed by systemd)"
        try:
            serve_on(drivers, sockets, where, stop, tls)
        finally:
            for sock in sockets:
                sock.close()
            with contextlib.suppress(OSError):
                # Never remove a successor's socket, nor systemd's.
                if owned is not None and _identity(owned[0]) == owned[1]:
                    os.unlink(owned[0])
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
    sockets: list[_socket.socket],
    where: str,
    stop: _StopOnSignal,
    tls: TLS | None = None,
) -> None:
    """Serve ``drivers`` on the listening ``sockets`` (described by ``where``)
    until ``stop`` is signalled."""
    from ._defer import defer_unused

    defer_unused()
    uvicorn = _uvicorn()

    from ._app import make_app

    app = make_app(*drivers)
    names = ", ".join(f"{type(d).__name__} ({d.implements})" for d in drivers)
    log.info("serving %s on %s", names, where)
    _run_app(uvicorn, app, sockets, stop, tls)


def _run_app(
    uvicorn: Any,
    app: Any,
    sockets: _socket.socket | list[_socket.socket],
    stop: _StopOnSignal,
    tls: TLS | None = None,
) -> None:
    """Serve the ASGI ``app`` on the listening ``sockets`` until ``stop``."""
    import socket

    # Bare sockets (plugin._socket.bind_unix) made whole for asyncio.
    listening = [
        s if isinstance(s, socket.socket) else socket.socket(fileno=s.detach())
        for s in (sockets if isinstance(sockets, list) else [sockets])
    ]
    server = _server(uvicorn, app, tls)
    stop.server = server
    try:
        if not stop.signalled:
            server.run(sockets=listening)
    finally:
        for s in listening:
            s.close()


def _tls_options(tls: TLS | None) -> dict[str, Any]:
    if tls is None:
        return {}
    import ssl

    options: dict[str, Any] = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
    if tls.client_ca:
        options.update(ssl_ca_certs=tls.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def _server(uvicorn: Any, app: Any, tls: TLS | None = None) -> Any:
    """The uvicorn server of a plugin, serving ``app`` (over TLS with ``tls``)."""
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
        **_tls_options(tls),
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
