"""Metrics collectors: ``docker.metricscollector/1.0`` (``/MetricsCollector.*``).

Read top to bottom: wire constants, the driver base class, the endpoint
table, and the helpers that read the daemon's metrics.

The daemon serves its Prometheus metrics over HTTP on a unix socket, which
it bind-mounts into every metrics plugin at ``/run/docker/metrics.sock``.
``StartMetrics`` says the socket is there (right after enable, and when the
daemon starts), ``StopMetrics`` that it is going away (the daemon shuts
down); both have empty bodies, and the daemon only looks at the status of
the answer. A collector reads the socket with ``read_daemon_metrics``::

    class Exporter(MetricsCollector):
        network = "host"

        async def start_metrics(self) -> None:
            ...  # start serving, e.g. on a TCP port

        async def stop_metrics(self) -> None:
            ...
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from typing import ClassVar

from ._driver import Driver, Endpoint

__all__ = [
    "METRICS_SOCKET",
    "DaemonMetricsError",
    "MetricsCollector",
    "read_daemon_metrics",
    "read_daemon_metrics_async",
]

IMPLEMENTS = "MetricsCollector"
CAPABILITY = "docker.metricscollector/1.0"
#: The daemon's metrics socket, as the daemon mounts it into the plugin.
METRICS_SOCKET = "/run/docker/metrics.sock"
#: The largest answer accepted from the daemon (its metrics are ~100 KB).
MAX_METRICS = 64 * 1024 * 1024


class MetricsCollector(Driver):
    """Base class of a metrics collector.

    Override ``start_metrics`` and ``stop_metrics`` (plain or ``async``);
    both default to doing nothing. ``start_metrics`` can come again after
    ``stop_metrics`` (the daemon restarted): start again then. A collector
    that serves its metrics on a TCP port needs the host's network
    (``network = "host"``), or its port is only reachable inside the
    plugin.
    """

    implements: ClassVar[str] = IMPLEMENTS
    prefix: ClassVar[str] = IMPLEMENTS
    capability: ClassVar[str] = CAPABILITY

    def start_metrics(self) -> Awaitable[None] | None:
        return None

    def stop_metrics(self) -> Awaitable[None] | None:
        return None


MetricsCollector.endpoints = (
    Endpoint("StartMetrics", None, None),
    Endpoint("StopMetrics", None, None),
)


# --- the daemon's metrics -------------------------------------------------------------


class DaemonMetricsError(OSError):
    """The daemon's metrics could not be read; the message says why."""


_REQUEST = b"GET /metrics HTTP/1.0\r\nHost: docker\r\nAccept: text/plain\r\n\r\n"


def _parse(answer: bytes, path: str) -> bytes:
    # HTTP/1.0: no chunked body, the body ends when the daemon closes.
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        raise DaemonMetricsError(f"{path}: the daemon's answer ended before its headers did")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise DaemonMetricsError(f"{path}: not an HTTP answer: {status_line[:80]!r}")
    if parts[1] != "200":
        raise DaemonMetricsError(f"{path}: the daemon answered {status_line[9:80]}")
    return body


def _unreachable(path: str, exc: OSError) -> DaemonMetricsError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return DaemonMetricsError(
        f"cannot read the daemon's metrics from {path}: {reason} (the daemon mounts the "
        "socket into plugins whose interface types include docker.metricscollector/1.0)"
    )


def read_daemon_metrics(path: str = METRICS_SOCKET, timeout: float = 10.0) -> bytes:
    """The daemon's metrics, in Prometheus' text format (blocking).

    DaemonMetricsError when the socket is missing, the daemon does not
    answer within ``timeout`` seconds, or answers with an error.
    """
    chunks = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(_REQUEST)
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_METRICS:
                    raise DaemonMetricsError(f"{path}: answer over {MAX_METRICS} bytes")
    except DaemonMetricsError:
        raise
    except TimeoutError:
        raise DaemonMetricsError(
            f"cannot read the daemon's metrics from {path}: no answer within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise _unreachable(path, exc) from None
    return _parse(b"".join(chunks), path)


async def read_daemon_metrics_async(path: str = METRICS_SOCKET, timeout: float = 10.0) -> bytes:
    """``read_daemon_metrics`` for ``async`` code."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(_REQUEST)
                await writer.drain()
                answer = await reader.read(MAX_METRICS + 1)
                while chunk := await reader.read(1 << 16):
                    answer += chunk
                    if len(answer) > MAX_METRICS:
                        break
            finally:
                writer.close()
    except TimeoutError:
        raise DaemonMetricsError(
            f"cannot read the daemon's metrics from {path}: no answer within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise _unreachable(path, exc) from None
    if len(answer) > MAX_METRICS:
        raise DaemonMetricsError(f"{path}: answer over {MAX_METRICS} bytes")
    return _parse(answer, path)
