"""The benchmark's client: what the daemon sends, over AF_UNIX with keep-alive.

One ``http.client`` connection per server, reused for every request, with
the daemon's headers (Go's user agent, the v1.2 Accept, Content-Length,
Accept-Encoding gzip, bodies ending with the newline of Go's JSON encoder).

Server CPU per request is read from ``/proc/<pid>/stat`` (user + system
time of all the server's threads) around a batch of requests from the same
client.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The calls the daemon makes before almost every volume operation:
#: Capabilities, then Get.
CALLS = (
    ("/VolumeDriver.Capabilities", b"{}\n"),
    ("/VolumeDriver.Get", b'{"Name":"v1"}\n'),
)
EXPECTED = {
    "/VolumeDriver.Capabilities": {"Capabilities": {"Scope": "local"}},
    "/VolumeDriver.Get": {"Volume": {"Name": "v1", "Mountpoint": "/mnt/volumes/v1"}},
}


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("plugin.moby.localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def post(conn: UnixConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", "plugin.moby.localhost")
    conn.putheader("User-Agent", "Go-http-client/1.1")
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Accept", "application/vnd.docker.plugins.v1.2+json")
    conn.putheader("Accept-Encoding", "gzip")
    conn.endheaders(body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def check(conn: UnixConnection) -> None:
    """Every server must answer the same: 200 and the same JSON."""
    for path, body in CALLS:
        status, data = post(conn, path, body)
        if status != 200 or json.loads(data) != EXPECTED[path]:
            raise AssertionError(f"{path}: {status} {data[:200]!r}")


@dataclass
class Run:
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def sequential(conn: UnixConnection, n: int) -> Run:
    """``n`` requests, one after the other, alternating the two calls."""
    clock = time.perf_counter
    latencies = []
    start = clock()
    for i in range(n):
        path, body = CALLS[i & 1]
        t = clock()
        status, _ = post(conn, path, body)
        latencies.append((clock() - t) * 1000)
        if status != 200:
            raise AssertionError(f"{path}: {status}")
    return Run(n, clock() - start, latencies)


def wait_listening(path: str, proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
            return
        except (FileNotFoundError, ConnectionRefusedError):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: not listening after {timeout} s") from None
            time.sleep(0.0002)


def start_times(
    cmd: Sequence[str], path: str, env: dict[str, str], runs: int
) -> tuple[float, float]:
    """Median milliseconds from spawning the process to (a) connect() succeeding,
    which is all the daemon waits for, and (b) the first answer."""
    listen, answer = [], []
    for _ in range(runs):
        if os.path.lexists(path):
            os.unlink(path)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(path, proc)
            listen.append((time.perf_counter() - t0) * 1000)
            conn = UnixConnection(path)
            post(conn, *CALLS[0])
            answer.append((time.perf_counter() - t0) * 1000)
            conn.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return statistics.median(listen), statistics.median(answer)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may hold spaces: fields are counted after its ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(path: str, pid: int, n: int, *, keep_alive: bool) -> float:
    """Seconds of the server's CPU for ``n`` requests (Capabilities and Get
    alternating) from the benchmark's client, on one kept-alive connection or
    on a new connection each."""
    conn = UnixConnection(path)
    before = cpu_seconds(pid)
    for i in range(n):
        path_, body = CALLS[i & 1]
        status, _ = post(conn, path_, body)
        if status != 200:
            raise AssertionError(f"{path_}: {status}")
        if not keep_alive:
            conn.close()
    conn.close()
    # A connection's end (the server's close) is work too: let it finish.
    time.sleep(0.05)
    return cpu_seconds(pid) - before
