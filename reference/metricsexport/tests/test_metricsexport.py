"""metricsexport, called as the daemon calls it, with a stand-in for the
daemon's metrics socket and real TCP requests on a loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from metricsexport.driver import MetricsExport

from plugin.testing import PluginClient

METRICS = (
    b'engine_daemon_engine_info{version="20.10.24"} 1\n'
    b"engine_daemon_container_actions_seconds_count 3"
)


class FakeDaemon:
    """The daemon's metrics socket: answers every connection with ``answer``."""

    def __init__(self, path: str, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                    data += chunk
                conn.sendall(self.answer)


@pytest.fixture
def metrics_socket() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="dpk-mx-", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(directory, "metrics.sock")
    daemon = FakeDaemon(path, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + METRICS)
    yield path
    daemon.sock.close()
    os.unlink(path)
    os.rmdir(directory)


def get(client: PluginClient, port: int, request: bytes) -> tuple[int, bytes]:
    """One HTTP request to the plugin's port, while the plugin's loop runs."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer

    answer = client._loop.run_until_complete(asyncio.wait_for(exchange(), 10))
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def fetch(client: PluginClient, port: int, path: str) -> tuple[int, bytes]:
    return get(client, port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def test_serves_the_daemons_metrics_and_its_own(metrics_socket: str) -> None:
    driver = MetricsExport("127.0.0.1", 0, metrics_socket)
    with PluginClient(driver) as client:
        assert client.call("MetricsCollector.StartMetrics") == {}
        assert driver.bound is not None and driver.bound[0] == "127.0.0.1"
        port = driver.bound[1]
        status, body = fetch(client, port, "/metrics")
        assert status == 200
        assert body.startswith(METRICS + b"\n# HELP metricsexport_scrapes_total")
        assert b"\nmetricsexport_scrapes_total 1\n" in body
        assert b"\nmetricsexport_daemon_up 1\n" in body
        assert fetch(client, port, "/health") == (200, b"ok\n")
        assert client.call("MetricsCollector.StopMetrics") == {}


def test_start_stop_start_listens_again(metrics_socket: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = MetricsExport("127.0.0.1", port, metrics_socket)
    with PluginClient(driver) as client:
        client.call("MetricsCollector.StartMetrics")
        assert fetch(client, port, "/health")[0] == 200
        client.call("MetricsCollector.StopMetrics")
        assert driver.bound is None
        with pytest.raises(ConnectionRefusedError):
            fetch(client, port, "/health")
        client.call("MetricsCollector.StartMetrics")
        assert fetch(client, port, "/health")[0] == 200
        client.call("MetricsCollector.StartMetrics")  # again without a stop: still serving
        assert fetch(client, port, "/health")[0] == 200
        client.call("MetricsCollector.StopMetrics")


def test_loopback_by_default_and_exposing_is_explicit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ADDRESS", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    default = MetricsExport()
    assert (default.address, default.port) == ("127.0.0.1", 9324)
    monkeypatch.setenv("ADDRESS", "0.0.0.0")
    monkeypatch.setenv("PORT", "9400")
    exposed = MetricsExport()
    assert (exposed.address, exposed.port) == ("0.0.0.0", 9400)


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        (
            "PORT",
            "0",
            'bad setting PORT="0": not an integer from 1 to 65535; change it with docker plugin '
            "set PLUGIN PORT=VALUE",
        ),
        (
            "ADDRESS",
            "localhost",
            'bad setting ADDRESS="localhost": not an IP address (127.0.0.1: this host only, '
            "0.0.0.0: every interface); change it with docker plugin set PLUGIN ADDRESS=VALUE",
        ),
    ],
)
def test_bad_settings(monkeypatch: pytest.MonkeyPatch, name: str, value: str, error: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as err:
        MetricsExport()
    assert str(err.value) == error


def test_a_port_in_use(metrics_socket: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with PluginClient(MetricsExport("127.0.0.1", port, metrics_socket)) as client:
            reply = client.post("/MetricsCollector.StartMetrics")
    assert (reply.status, reply.json) == (
        500,
        {
            "Err": f"cannot serve metrics on 127.0.0.1:{port}: Address already in use "
            "(docker plugin set PLUGIN PORT=<another port>)"
        },
    )


def test_the_daemon_gone(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sock")
    driver = MetricsExport("127.0.0.1", 0, missing)
    with PluginClient(driver) as client:
        client.call("MetricsCollector.StartMetrics")
        assert driver.bound is not None
        port = driver.bound[1]
        reason = (
            f"cannot read the daemon's metrics from {missing}: No such file or directory (the "
            "daemon mounts the socket into plugins whose interface types include "
            "docker.metricscollector/1.0)\n"
        ).encode()
        assert fetch(client, port, "/metrics") == (503, reason)
        assert fetch(client, port, "/health") == (503, reason)
        assert driver.errors == 1
        client.call("MetricsCollector.StopMetrics")


def test_other_requests(metrics_socket: str) -> None:
    driver = MetricsExport("127.0.0.1", 0, metrics_socket)
    with PluginClient(driver) as client:
        client.call("MetricsCollector.StartMetrics")
        assert driver.bound is not None
        port = driver.bound[1]
        assert fetch(client, port, "/") == (404, b"not found: /metrics and /health are served\n")
        post = b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        assert get(client, port, post) == (405, b"method not allowed: GET only\n")
        assert get(client, port, b"HEAD /health HTTP/1.1\r\n\r\n") == (200, b"")
        assert get(client, port, b"garbage\r\n\r\n") == (400, b"bad request\n")
        assert fetch(client, port, "/metrics?x=1")[0] == 200
        client.call("MetricsCollector.StopMetrics")
