"""Serving drivers on the unix socket the daemon dials."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import signal
import socket as socketlib
import stat
import sys
import threading
from typing import Any

from ._driver import Driver
from ._listen import TLS, Listener, activation_sockets, bind_tcp, describe, parse_address

__all__ = ["MAX_SOCKET_NAME", "PLUGIN_DIR", "bind_unix", "configure_logging", "serve"]

#: Where managed plugins listen (the daemon bind-mounts its socket dir here),
#: and where legacy plugins are discovered.
PLUGIN_DIR = "/run/docker/plugins"
#: The daemon's socket path, /run/docker/plugins/<64-hex id>/<name>, must stay
#: under the 108-byte limit of AF_UNIX paths.
MAX_SOCKET_NAME = 23
#: sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

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


def socket_path(socket: str | None, path: str | None) -> str:
    if socket is not None and path is not None:
        raise ValueError("serve() takes socket= or path=, not both")
    if path is not None:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"socket path {path!r} is {len(os.fsencode(path))} bytes; unix sockets "
                f"allow at most {MAX_SOCKET_PATH}"
            )
        return path
    if not socket:
        raise ValueError("serve() needs socket= (the config's interface.socket) or path=")
    if "/" in socket or socket in (".", ".."):
        raise ValueError(f"socket must be a file name, not a path: {socket!r}")
    if len(socket) > MAX_SOCKET_NAME:
        raise ValueError(
            f"socket name {socket!r} is {len(socket)} characters; the daemon's limit "
            f"is {MAX_SOCKET_NAME}"
        )
    return os.path.join(PLUGIN_DIR, socket)


def bind_unix(path: str, mode: int = 0o660, group: str | int | None = None) -> socketlib.socket:
    """Bind a listening unix socket at ``path``, replacing a stale socket file
    (never another kind of file), with ``mode`` and ``group``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
        os.unlink(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    try:
        os.chmod(path, mode)
        if group is not None:
            os.chown(path, -1, _gid(group))
        sock.listen(128)
    except BaseException:
        sock.close()
        os.unlink(path)
        raise
    return sock


def _gid(group: str | int) -> int:
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {group!r}") from None


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
        where = socket_path(socket, path)
        listener = Listener("unix", path=where)
    root = logging.getLogger()
    if not root.handlers:
        configure_logging(log_level)
    elif log_level is not None:
        root.setLevel(_level(log_level))
    # Listen before the heavier imports: the daemon gives up on a plugin whose
    # socket does not accept connections within ~9.5 s, and connections made
    # meanwhile wait in the backlog.
    with _StopOnSignal() as stop:
        owned = None
        if activated:
            sockets = activated
        elif listener is not None and listener.scheme == "unix":
            sockets = [bind_unix(listener.path, mode=mode, group=group)]
            owned = (listener.path, _identity(listener.path))
        else:
            assert listener is not None
            sockets = [bind_tcp(listener)]
        where = ", ".join(describe(sock, tls is not None) for sock in sockets)
        if activated:
            where += " (passed by systemd)"
        try:
            _run(drivers, sockets, where, stop, tls)
        finally:
            for sock in sockets:
                sock.close()
            with contextlib.suppress(OSError):
                # Never remove a successor's socket, nor systemd's.
                if owned is not None and _identity(owned[0]) == owned[1]:
                    os.unlink(owned[0])
    log.info("stopped")


def _identity(path: str) -> tuple[int, int, int]:
    # The inode alone is not enough: a successor's socket may reuse it at once.
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


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


def _run(
    drivers: tuple[Driver, ...],
    sockets: list[socketlib.socket],
    where: str,
    stop: _StopOnSignal,
    tls: TLS | None = None,
) -> None:
    uvicorn = _uvicorn()

    from ._app import make_app

    app = make_app(*drivers)
    names = ", ".join(f"{type(d).__name__} ({d.implements})" for d in drivers)
    log.info("serving %s on %s", names, where)
    _run_app(uvicorn, app, sockets, stop, tls)


def _run_app(
    uvicorn: Any,
    app: Any,
    sockets: socketlib.socket | list[socketlib.socket],
    stop: _StopOnSignal,
    tls: TLS | None = None,
) -> None:
    """Serve the ASGI ``app`` on the listening ``sockets`` until ``stop``."""
    server = _server(uvicorn, app, tls)
    stop.server = server
    if not stop.signalled:
        server.run(sockets=sockets if isinstance(sockets, list) else [sockets])


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
    config = uvicorn.Config(
        app,
        http="auto",
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
