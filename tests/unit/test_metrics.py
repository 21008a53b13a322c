"""Metrics collectors (plugin/metrics.py): the two calls, and reading the
daemon's metrics socket, against a stand-in for the daemon."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.metrics import (
    DaemonMetricsError,
    MetricsCollector,
    read_daemon_metrics,
    read_daemon_metrics_async,
)
from plugin.testing import PluginClient

METRICS = b'# HELP engine_daemon_engine_info x\nengine_daemon_engine_info{version="20.10"} 1\n'


class Recorder(MetricsCollector):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start_metrics(self) -> None:
        self.calls.append("start")

    def stop_metrics(self) -> None:
        self.calls.append("stop")


def test_start_and_stop_with_empty_bodies() -> None:
    driver = Recorder()
    with PluginClient(driver) as client:
        assert client.call("Plugin.Activate") == {"Implements": ["MetricsCollector"]}
        assert client.call("MetricsCollector.StartMetrics") == {}
        assert client.call("MetricsCollector.StopMetrics") == {}
        assert client.call("MetricsCollector.StartMetrics") == {}
    assert driver.calls == ["start", "stop", "start"]


def test_the_defaults_do_nothing() -> None:
    with PluginClient(MetricsCollector()) as client:
        assert client.call("MetricsCollector.StartMetrics") == {}
        assert client.call("MetricsCollector.StopMetrics") == {}


class FakeDaemon:
    """Answers each connection on a unix socket with ``answer`` (or closes)."""

    def __init__(self, path: str, answer: bytes) -> None:
        self.path = path
        self.answer = answer
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                if self.answer:
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dpk-m-", dir="/tmp"))  # AF_UNIX paths are short
    yield path
    for f in path.iterdir():
        f.unlink()
    path.rmdir()


def both(path: str, timeout: float = 10.0) -> list[bytes | Exception]:
    """The answer of the plain and of the async reader (or their errors)."""
    out: list[bytes | Exception] = []
    for read in (
        lambda: read_daemon_metrics(path, timeout),
        lambda: asyncio.run(read_daemon_metrics_async(path, timeout)),
    ):
        try:
            out.append(read())
        except DaemonMetricsError as exc:
            out.append(exc)
    return out


def test_reads_the_metrics(sock_dir: Path) -> None:
    path = str(sock_dir / "metrics.sock")
    daemon = FakeDaemon(path, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + METRICS)
    try:
        assert both(path) == [METRICS, METRICS]
        assert daemon.requests[0].startswith(b"GET /metrics HTTP/1.0\r\n")
    finally:
        daemon.close()


def test_a_missing_socket(sock_dir: Path) -> None:
    path = str(sock_dir / "none.sock")
    message = (
        f"cannot read the daemon's metrics from {path}: No such file or directory (the daemon "
        "mounts the socket into plugins whose interface types include "
        "docker.metricscollector/1.0)"
    )
    assert [str(e) for e in both(path)] == [message, message]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy",
            "the daemon answered 503 Service Unavailable",
        ),
        (b"SSH-2.0-x\r\n\r\n", "not an HTTP answer: 'SSH-2.0-x'"),
        (b"HTTP/1.0 200 OK\r\n", "the daemon's answer ended before its headers did"),
        (b"", "the daemon's answer ended before its headers did"),
    ],
)
def test_bad_answers(sock_dir: Path, answer: bytes, error: str) -> None:
    path = str(sock_dir / "metrics.sock")
    daemon = FakeDaemon(path, answer)
    try:
        assert [str(e) for e in both(path)] == [f"{path}: {error}"] * 2
    finally:
        daemon.close()


def test_a_daemon_that_never_answers(sock_dir: Path) -> None:
    path = str(sock_dir / "metrics.sock")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(path)
    silent.listen(8)
    try:
        message = f"cannot read the daemon's metrics from {path}: no answer within 0.2 s"
        assert [str(e) for e in both(path, timeout=0.2)] == [message, message]
    finally:
        silent.close()
        os.unlink(path)
