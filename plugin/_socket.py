"""The plugin's unix socket: where it is, what it may be named, binding it.

The one home of the socket-name rule and the plugin directory, for the
runtime and the builder alike. Light on purpose: ``python -m plugin``
checks its socket's name before it imports anything else, and binds with
the C ``_socket`` module (the ``socket`` module, with ``selectors`` and its
enums, comes with the server's imports, after the plugin listens).
"""

from __future__ import annotations

import _socket
import contextlib
import os
import stat
from collections.abc import Iterator

__all__ = [
    "MAX_SOCKET_NAME",
    "MAX_SOCKET_PATH",
    "PLUGIN_DIR",
    "bind_unix",
    "listening",
    "socket_name_problem",
    "socket_path",
]

#: Where managed plugins listen (the daemon bind-mounts its socket directory
#: here), and where the daemon discovers legacy plugins.
PLUGIN_DIR = "/run/docker/plugins"
#: The daemon's socket path, /run/docker/plugins/<64-hex id>/<name>, must stay
#: under the 108-byte limit of AF_UNIX paths.
MAX_SOCKET_NAME = 23
#: sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def socket_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a socket file name (config.json's
    ``interface.socket``), or None when it is fine."""
    if not name:
        return "must not be empty"
    if "/" in name or name in (".", ".."):
        return f"must be a file name, not a path: {name!r}"
    if len(name) > MAX_SOCKET_NAME:
        return (
            f"{name!r} is {len(name)} characters; the daemon's limit is {MAX_SOCKET_NAME} "
            "(its socket path must fit in 108 bytes)"
        )
    return None


def socket_path(socket: str | None, path: str | None) -> str:
    """The path to listen on: ``PLUGIN_DIR/socket``, or ``path`` itself."""
    if socket is not None and path is not None:
        raise ValueError("serve() takes socket= or path=, not both")
    if path is not None:
        size = len(os.fsencode(path))
        if size > MAX_SOCKET_PATH:
            raise ValueError(
                f"socket path {path!r} is {size} bytes; unix sockets allow at most "
                f"{MAX_SOCKET_PATH}"
            )
        return path
    if not socket:
        raise ValueError("serve() needs socket= (the config's interface.socket) or path=")
    problem = socket_name_problem(socket)
    if problem is not None:
        # "socket must be a file name, ...", "socket name 'x...' is 24 characters; ..."
        what = "socket" if problem.startswith("must") else "socket name"
        raise ValueError(f"{what} {problem}")
    return os.path.join(PLUGIN_DIR, socket)


def bind_unix(path: str, mode: int = 0o660, group: str | int | None = None) -> _socket.socket:
    """Bind a listening unix socket at ``path``, replacing a stale socket file
    (never another kind of file), with ``mode`` and ``group``. A bare
    ``_socket.socket``: ``socket.socket(fileno=sock.detach())`` makes it a
    full one.

    The file appears at ``path`` only once the socket listens, with its mode
    and group: it is bound in a private directory beside ``path`` and renamed
    there. Whoever waits for the file (the daemon checking that a plugin
    listens, a test) can connect as soon as it finds it; a socket file found
    between bind and listen refuses connections. (The private directory,
    not a private name: the daemon takes any socket file directly in its
    plugin directory for a legacy plugin, a directory only with DIR/DIR.sock
    in it.) ``getsockname()`` names the private path: say ``path``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    private = os.path.join(directory, f".dpk{os.urandom(4).hex()}")
    bound = os.path.join(private, "s")
    if len(os.fsencode(bound)) > MAX_SOCKET_PATH:
        # No room for the private path: bound in place (the stale file goes first).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return _listening_at(path, mode, group)
    os.mkdir(private, 0o700)
    try:
        sock = _listening_at(bound, mode, group)
        try:
            os.rename(bound, path)  # atomic: a stale socket is replaced, never missing
        except BaseException:
            sock.close()
            os.unlink(bound)
            raise
    finally:
        os.rmdir(private)
    return sock


def _listening_at(path: str, mode: int, group: str | int | None) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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


@contextlib.contextmanager
def listening(
    path: str, mode: int = 0o660, group: str | int | None = None
) -> Iterator[_socket.socket]:
    """``bind_unix``, then on exit close the socket and remove its file,
    unless another process has put its own socket there since."""
    sock = bind_unix(path, mode=mode, group=group)
    ours = _identity(path)
    try:
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            if _identity(path) == ours:  # never remove a successor's socket
                os.unlink(path)


def _identity(path: str) -> tuple[int, int, int]:
    # The inode alone is not enough: a successor's socket may reuse it at once.
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


def _gid(group: str | int) -> int:
    if isinstance(group, int):
        return group
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {group!r}") from None
