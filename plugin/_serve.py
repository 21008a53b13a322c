"""Serving drivers on the unix socket the daemon dials."""

from __future__ import annotations

import grp
import logging
import os
import socket as socketlib
import stat
import sys

from ._driver import Driver

__all__ = ["MAX_SOCKET_NAME", "PLUGIN_DIR", "bind_unix", "configure_logging", "serve"]

#: Where managed plugins listen (the daemon bind-mounts its socket dir here),
#: and where legacy plugins are discovered.
PLUGIN_DIR = "/run/docker/plugins"
#: The daemon's socket path, /run/docker/plugins/<64-hex id>/<name>, must stay
#: under the 108-byte limit of AF_UNIX paths.
MAX_SOCKET_NAME = 23

log = logging.getLogger("plugin")


class _MaxLevel(logging.Filter):
    def __init__(self, below: int) -> None:
        super().__init__()
        self.below = below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.below


def configure_logging(level: str | int | None = None) -> None:
    """Info to stdout, warnings and errors to stderr: the daemon logs a
    plugin's stdout at info level and its stderr at error level."""
    if level is None:
        level = os.environ.get("LOG_LEVEL", "info")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            level = logging.INFO
    fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(fmt)
    out.addFilter(_MaxLevel(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [out, err]
    root.setLevel(level)


def socket_path(socket: str | None, path: str | None) -> str:
    if path is not None:
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
        os.chmod(path, mode)
        if group is not None:
            gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


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
    path, for a legacy plugin or a run outside Docker. Logs go to stdout
    (info) and stderr (warnings, errors); ``log_level`` defaults to the
    ``LOG_LEVEL`` environment variable.
    """
    # Bind before the heavier imports so a misconfiguration fails fast.
    configure_logging(log_level)
    where = socket_path(socket, path)
    sock = bind_unix(where, mode=mode, group=group)

    import uvicorn

    from ._app import make_app

    app = make_app(*drivers)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=8,
    )
    server = uvicorn.Server(config)
    names = ", ".join(f"{type(d).__name__} ({d.implements})" for d in drivers)
    log.info("serving %s on %s", names, where)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        try:
            os.unlink(where)
        except OSError:
            pass
    log.info("stopped")
