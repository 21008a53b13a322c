"""metricsexport: the reference metrics plugin. It serves the Docker daemon's
metrics (Prometheus' text format) on a TCP port of the host, read afresh from
the daemon's metrics socket at every scrape, with its own counters added::

    GET /metrics   the daemon's metrics, then metricsexport_* (200), or 503
                   with the reason when the daemon's socket does not answer
    GET /health    200 "ok" while the daemon's metrics can be read, else 503

Settings (``docker plugin set PLUGIN PORT=9400`` while it is disabled):
``PORT`` (default 9324) and ``ADDRESS`` (default ``127.0.0.1``: only this
host). The endpoint has no authentication: serving it to the network is
explicit, ``ADDRESS=0.0.0.0`` (or one interface's address).

It listens from ``StartMetrics`` (the daemon sends it when the plugin is
enabled and when the daemon starts) to ``StopMetrics`` (the daemon shuts
down), and again at the next ``StartMetrics``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time

from plugin import PluginError, settings
from plugin.metrics import (
    METRICS_SOCKET,
    DaemonMetricsError,
    MetricsCollector,
    read_daemon_metrics_async,
)

__all__ = ["ExportSettings", "MetricsExport"]

log = logging.getLogger("metricsexport")


class ExportSettings(settings.Settings):
    """Where the metrics are served (``docker plugin set``)."""

    port = settings.integer(9324, "TCP port the metrics are served on", minimum=1, maximum=65535)
    address = settings.string(
        "127.0.0.1",
        "IP address the metrics are served on: 127.0.0.1 is this host only; 0.0.0.0 exposes "
        "the (unauthenticated) metrics to the network",
    )


#: Seconds a client gets to send its request.
REQUEST_TIMEOUT = 10.0
MAX_REQUEST = 8192


class MetricsExport(MetricsCollector):
    """The daemon's metrics on ``ADDRESS:PORT`` (see the module's doc).

    ``MetricsExport()`` reads the settings; tests pass ``address``,
    ``port`` (0: any free port, then see ``bound``) and ``socket``.
    """

    network = "host"  # its port is the host's
    settings = ExportSettings

    def __init__(
        self, address: str | None = None, port: int | None = None, socket: str = METRICS_SOCKET
    ) -> None:
        values = ExportSettings.from_env()
        self.address = _address(values.address) if address is None else address
        self.port = values.port if port is None else port
        self.socket = socket
        self.scrapes = 0
        self.errors = 0
        self._server: asyncio.Server | None = None

    @property
    def bound(self) -> tuple[str, int] | None:
        """Where it listens now, or None."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start_metrics(self) -> None:
        if self._server is not None:
            return  # already serving (the daemon restarted without a StopMetrics)
        try:
            self._server = await asyncio.start_server(
                self._serve, self.address, self.port, reuse_address=True
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise PluginError(
                f"cannot serve metrics on {self.address}:{self.port}: {reason} "
                "(docker plugin set PLUGIN PORT=<another port>)"
            ) from None
        log.info("serving the daemon's metrics on %s:%d", *self.bound or (self.address, 0))

    async def stop_metrics(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
            log.info("stopped serving metrics")

    # --- HTTP -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, kind = await self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, body, kind = 400, b"bad request\n", "text/plain"
        except ConnectionError:
            writer.close()
            return
        method = head.split(b" ", 1)[0] if status != 400 else b""
        writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, _REASONS[status], kind.encode(), len(body))
        )
        if method != b"HEAD":
            writer.write(body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        if len(head) > MAX_REQUEST:
            return 400, b"bad request\n", "text/plain"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/metrics", b"/health"):
            return 404, b"not found: /metrics and /health are served\n", "text/plain"
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed: GET only\n", "text/plain"
        if target == b"/health":
            try:
                await read_daemon_metrics_async(self.socket, timeout=5)
            except DaemonMetricsError as exc:
                return 503, f"{exc}\n".encode(), "text/plain"
            return 200, b"ok\n", "text/plain"
        self.scrapes += 1
        started = time.perf_counter()
        try:
            metrics = await read_daemon_metrics_async(self.socket)
            up = 1
        except DaemonMetricsError as exc:
            self.errors += 1
            log.warning("scrape failed: %s", exc)
            return 503, f"{exc}\n".encode(), "text/plain"
        seconds = time.perf_counter() - started
        own = (
            "# HELP metricsexport_scrapes_total Scrapes of the daemon's metrics socket.\n"
            "# TYPE metricsexport_scrapes_total counter\n"
            f"metricsexport_scrapes_total {self.scrapes}\n"
            "# HELP metricsexport_scrape_errors_total Scrapes that failed.\n"
            "# TYPE metricsexport_scrape_errors_total counter\n"
            f"metricsexport_scrape_errors_total {self.errors}\n"
            "# HELP metricsexport_daemon_up Whether the daemon's metrics could be read.\n"
            "# TYPE metricsexport_daemon_up gauge\n"
            f"metricsexport_daemon_up {up}\n"
            "# HELP metricsexport_scrape_seconds Time to read the daemon's metrics.\n"
            "# TYPE metricsexport_scrape_seconds gauge\n"
            f"metricsexport_scrape_seconds {seconds:.6f}\n"
        ).encode()
        if metrics and not metrics.endswith(b"\n"):
            metrics += b"\n"
        return 200, metrics + own, "text/plain; version=0.0.4; charset=utf-8"


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    503: b"Service Unavailable",
}


def _address(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(
            f"bad setting ADDRESS={json.dumps(text[:64])}: not an IP address (127.0.0.1: this "
            "host only, 0.0.0.0: every interface); change it with docker plugin set PLUGIN "
            "ADDRESS=VALUE"
        ) from None
    return text
