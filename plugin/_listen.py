"""Where a plugin listens outside Docker's plugin manager: an address as a
spec file writes it, sockets passed by systemd, and TLS.

A legacy (v1) plugin is found by the daemon through a socket in
``/run/docker/plugins/NAME.sock``, or a spec file in ``/etc/docker/plugins``:
``NAME.spec`` holds one URL (``unix:///path``, ``tcp://host:port`` or
``https://host:port``), ``NAME.json`` holds ``{"Addr": URL, "TLSConfig":
{...}}``. Only ``https://`` makes the daemon speak TLS (``TLSConfig`` is the
daemon's side: the CA it trusts and the certificate it presents).

With systemd socket activation (``LISTEN_PID`` is this process and
``LISTEN_FDS`` counts the sockets from fd 3 on), the plugin serves the
sockets it was given: they already hold the connection that started it,
which is answered like any other.
"""

from __future__ import annotations

import _socket
import json
import os
import stat
from dataclasses import dataclass

# socket (with selectors and its enums) and urllib.parse (with ipaddress)
# are imported where used: a plugin on its unix socket needs neither before
# it listens (7 ms of its start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket as socketlib

__all__ = ["TLS", "Listener", "activation_sockets", "parse_address", "read_spec"]

#: The first file descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
SCHEMES = ("unix", "tcp", "https")


@dataclass(frozen=True)
class TLS:
    """The plugin's side of TLS: its certificate and key, and the CA that
    signs the certificates of the clients it accepts (None: no client
    certificate asked for)."""

    cert: str
    key: str
    client_ca: str | None = None


@dataclass(frozen=True)
class Listener:
    """An address to listen on: ``scheme`` unix (``path``) or tcp/https
    (``host``, ``port``)."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_address(address: str, where: str = "address") -> Listener:
    """``unix:///run/x.sock``, ``tcp://127.0.0.1:8080`` or
    ``https://0.0.0.0:9443`` -> a Listener; ValueError otherwise."""
    from urllib.parse import urlsplit

    url = urlsplit(address.strip())
    if url.scheme not in SCHEMES:
        why = "has no scheme" if not url.scheme else f"has the scheme {url.scheme!r}"
        raise ValueError(
            f"{where}: {address.strip()!r} {why}; the daemon dials unix://PATH, "
            "tcp://HOST:PORT or https://HOST:PORT"
        )
    if url.scheme == "unix":
        path = url.path if not url.netloc else f"/{url.netloc}{url.path}"
        if not path.startswith("/"):
            raise ValueError(f"{where}: {address.strip()!r} needs an absolute path")
        return Listener("unix", path=path)
    try:
        port = url.port
    except ValueError:
        port = None
    if not url.hostname or port is None:
        raise ValueError(f"{where}: {address.strip()!r} needs a host and a port")
    return Listener(url.scheme, host=url.hostname, port=port)


def read_spec(path: str) -> Listener:
    """The address of a spec file, read as the daemon reads it: ``.json``
    is ``{"Addr": URL, ...}``, anything else is one URL."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"spec file {path}: {exc.strerror}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"spec file {path}: not JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("Addr"), str):
            raise ValueError(f'spec file {path}: no "Addr" (a URL such as https://HOST:PORT)')
        text = data["Addr"]
    return parse_address(text, f"spec file {path}")


def activation_sockets(environ: dict[str, str] | None = None) -> list[socketlib.socket]:
    """The listening sockets systemd passed to this process, none when it
    passed none. The variables are removed, so a child never takes them for
    its own; a descriptor that is not a listening stream socket is an error."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if pid is None or count is None:
        return []
    if not pid.isdigit() or int(pid) != os.getpid():
        return []  # meant for another process (our parent)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"LISTEN_FDS={count!r}: expected the number of sockets passed")
    import socket as socketlib

    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            raise ValueError(f"LISTEN_FDS: fd {fd} is not open") from None
        if not stat.S_ISSOCK(mode):
            raise ValueError(f"LISTEN_FDS: fd {fd} is not a socket")
        sock = socketlib.socket(fileno=fd)
        listening = sock.getsockopt(socketlib.SOL_SOCKET, socketlib.SO_ACCEPTCONN)
        if sock.type != socketlib.SOCK_STREAM or not listening:
            sock.detach()
            raise ValueError(
                f"LISTEN_FDS: fd {fd} is not a listening stream socket "
                "(the socket unit needs ListenStream= and Accept=no)"
            )
        os.set_inheritable(fd, False)
        sockets.append(sock)
    return sockets


def bind_tcp(listener: Listener) -> socketlib.socket:
    """A listening TCP socket on the listener's host and port."""
    import socket as socketlib

    family = socketlib.AF_INET6 if ":" in listener.host else socketlib.AF_INET
    return socketlib.create_server((listener.host, listener.port), family=family, backlog=128)


def describe(sock: socketlib.socket, tls: bool = False) -> str:
    """Where a listening socket listens: a unix socket's path, or a TCP
    address as ``tcp://host:port`` (``https://`` with ``tls``)."""
    name = sock.getsockname()
    if sock.family == _socket.AF_UNIX:
        return name if isinstance(name, str) else os.fsdecode(name)
    host, port = name[0], name[1]
    return f"{'https' if tls else 'tcp'}://{f'[{host}]' if ':' in host else host}:{port}"
