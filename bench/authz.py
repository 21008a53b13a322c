"""``python3 -m bench.authz``: Engine API latency with the reference
authorization plugin against the same daemon without it, side by side.

A private dockerd (tests/e2e/private_daemon.py: the shared daemon is never
reconfigured) answers ``GET /v1.41/containers/json`` on one keep-alive
connection, as the docker CLI and SDKs send it. The rounds alternate between
the daemon's authorization plugins (switched by a daemon.json reload), so
drift hits all alike: none; a Go plugin that allows everything (net/http and
encoding/json, as go-plugins-helpers serves one: the floor of any plugin);
the SDK's smallest plugin (``allow()``, async); policyauthz with its policy
and decision log. Each request costs the daemon two calls to the plugin
(AuthZReq, then AuthZRes). policyauthz runs twice: as
installed, and with LOG_LEVEL=warning (no decision log, which the daemon
copies into its own log line by line).

Then containers run through the API (create, start, wait, delete: what
``docker run --rm`` asks, without attaching), the modes taking turns run by
run.

Printed per mode: requests/s, p50, p90 and p99 latency of the GET (medians
over the rounds), the median container run, and the ratios to no plugin.
The target of issue 9 is 1.2x at most.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1.41/containers/json"
IMAGE = "docker-plugin-kit/busybox:latest"
POLICY = "version: 1\nself: {name}\n"


class EngineConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("docker", timeout=30)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def call(conn: EngineConnection, method: str, path: str, body: bytes | None = None) -> bytes:
    conn.putrequest(method, path, skip_accept_encoding=True)
    conn.putheader("User-Agent", "Docker-Client/20.10.24 (linux)")
    if body is not None:
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    reply = conn.getresponse()
    data = reply.read()
    if reply.status >= 300:
        raise AssertionError(f"{method} {path}: {reply.status} {data[:200]!r}")
    return data


def lifecycle(conn: EngineConnection) -> None:
    """What `docker run --rm IMAGE true` asks of the API (without attaching)."""
    body = json.dumps({"Image": IMAGE, "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})
    cid = json.loads(call(conn, "POST", "/v1.41/containers/create", body.encode()))["Id"]
    call(conn, "POST", f"/v1.41/containers/{cid}/start", b"")
    call(conn, "POST", f"/v1.41/containers/{cid}/wait")
    call(conn, "DELETE", f"/v1.41/containers/{cid}")


def get(conn: EngineConnection) -> None:
    conn.putrequest("GET", PATH, skip_accept_encoding=True)
    conn.putheader("User-Agent", "Docker-Client/20.10.24 (linux)")
    conn.endheaders()
    reply = conn.getresponse()
    body = reply.read()
    if reply.status != 200 or not body.startswith(b"["):
        raise AssertionError(f"GET {PATH}: {reply.status} {body[:200]!r}")


@dataclass
class Mode:
    name: str
    rates: list[float] = field(default_factory=list)
    latencies: list[list[float]] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)

    def run(self, conn: EngineConnection, n: int) -> None:
        samples = []
        start = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            get(conn)
            samples.append((time.perf_counter() - t) * 1000)
        self.rates.append(n / (time.perf_counter() - start))
        self.latencies.append(sorted(samples))

    def run_container(self, conn: EngineConnection) -> None:
        t = time.perf_counter()
        lifecycle(conn)
        self.runs.append((time.perf_counter() - t) * 1000)

    def p(self, q: float) -> float:
        return statistics.median(s[min(len(s) - 1, int(len(s) * q / 100))] for s in self.latencies)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


ALLOW_ALL = """
from plugin import serve
from plugin.authz import AuthzPlugin, allow

class AllowAll(AuthzPlugin):
    async def auth_z_req(self, req):
        return allow()

serve(AllowAll(), socket="policyauthz.sock")
"""


def _variant(bundle: Path, where: Path, **config: object) -> Path:
    """A copy of ``bundle`` (its rootfs hard-linked) with config changes."""
    data = json.loads((bundle / "config.json").read_text())
    data.update(config)
    where.mkdir()
    (where / "config.json").write_text(json.dumps(data))
    subprocess.run(["cp", "-al", str(bundle / "rootfs"), str(where)], check=True)
    return where


def _go_bundle(where: Path) -> Path | None:
    """The Go plugin's bundle: its static binary and a config.json."""
    go = shutil.which("go")
    if go is None:
        return None
    (where / "rootfs" / "run" / "docker" / "plugins").mkdir(parents=True)
    env = {**os.environ, "CGO_ENABLED": "0"}
    subprocess.run(
        [go, "build", "-o", str(where / "rootfs" / "goauthz"), "."],
        cwd=ROOT / "bench" / "goauthz", env=env, check=True,
    )  # fmt: skip
    config = {
        "description": "allows everything (bench)",
        "entrypoint": ["/goauthz"],
        "interface": {"types": ["docker.authz/1.0"], "socket": "goauthz.sock"},
        "network": {"type": ""},
    }
    (where / "config.json").write_text(json.dumps(config))
    return where


@contextlib.contextmanager
def plugins(daemon: Any, bundle: Path | None) -> Iterator[dict[str, str]]:
    """The plugins created and enabled on ``daemon``: mode -> plugin name."""
    from plugin.bundle._engine import Engine
    from tests.e2e.conftest import reference_bundle

    tag = uuid.uuid4().hex[:8]
    tmp = Path(f"/var/tmp/dpk-bench-authz-{tag}")
    tmp.mkdir()
    policy = tmp / "policy"
    policy.mkdir()
    names: dict[str, str] = {}
    engine = Engine(daemon.client())
    with contextlib.ExitStack() as stack:
        try:
            if bundle is None:
                bundle = stack.enter_context(reference_bundle("policyauthz"))
            go = _go_bundle(tmp / "go")
            if go is not None:
                names["go, allows all"] = f"dpk-bench-{tag}/goauthz:latest"
                engine.create(names["go, allows all"], go)
            entry = json.loads((bundle / "config.json").read_text())["entrypoint"][0]
            small = _variant(bundle, tmp / "sdk", entrypoint=[entry, "-u", "-c", ALLOW_ALL],
                             mounts=[])  # fmt: skip
            names["sdk, allows all"] = f"dpk-bench-{tag}/allowall:latest"
            engine.create(names["sdk, allows all"], small)
            quiet = "policyauthz, no log"
            names[quiet] = f"dpk-bench-{tag}/quiet:latest"
            names["policyauthz"] = f"dpk-bench-{tag}/policyauthz:latest"
            (policy / "policy.yaml").write_text(
                POLICY.format(name=f"[{names[quiet]}, {names['policyauthz']}]")
            )
            for name in (names[quiet], names["policyauthz"]):
                engine.create(name, bundle)
                engine.set(name, [f"policy.source={policy}"])
            engine.set(names[quiet], ["LOG_LEVEL=warning"])  # no decision log
            for name in names.values():
                engine.enable(name, timeout=30)
            yield names
        finally:
            daemon.configure(**{"authorization-plugins": None})
            for name in names.values():
                daemon.docker("plugin", "rm", "-f", name, check=False)
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.authz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=1000, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--containers", type=int, default=15, help="runs per mode")
    parser.add_argument("--bundle", type=Path, help="a built policyauthz bundle (default: build)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.e2e.private_daemon import PrivateDaemon, stopped_cleanly

    daemon = PrivateDaemon()
    with contextlib.ExitStack() as stack:
        stack.enter_context(stopped_cleanly())
        stack.callback(daemon.shutdown)
        daemon.start()
        daemon.load_images(IMAGE)
        with plugins(daemon, args.bundle) as names:
            conn = EngineConnection(daemon.socket)
            modes = [(Mode("no authorization plugin"), [])]
            modes += [(Mode(label), [name]) for label, name in names.items()]
            for _, chain in modes:
                daemon.configure(**{"authorization-plugins": chain})
                for _ in range(args.warmup):
                    get(conn)
            for _ in range(args.rounds):
                for mode, chain in modes:
                    daemon.configure(**{"authorization-plugins": chain})
                    mode.run(conn, args.requests)
            # Container runs are slow and noisy: the modes take turns run by run.
            for _ in range(args.containers):
                for mode, chain in modes:
                    daemon.configure(**{"authorization-plugins": chain})
                    mode.run_container(conn)
            conn.close()
    print(
        f"\n{args.rounds} rounds of {args.requests} sequential GET {PATH} per mode on one "
        f"keep-alive connection, interleaved, after {args.warmup} warm-up each; medians over "
        "the rounds\n"
    )
    print(f"{'authorization plugin':<26}{'req/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'p50 ratio':>11}{'run ms':>9}{'run ratio':>11}")  # fmt: skip
    base = modes[0][0]
    for mode, _ in modes:
        run = statistics.median(mode.runs)
        print(
            f"{mode.name:<26}{mode.rate:>8.0f}{mode.p(50):>9.3f}{mode.p(90):>9.3f}"
            f"{mode.p(99):>9.3f}{mode.p(50) / base.p(50):>10.2f}x{run:>9.1f}"
            f"{run / statistics.median(base.runs):>10.2f}x"
        )
    print(
        f"\nrun: create, start, wait and delete a container ({IMAGE} true), the API calls "
        f"of `docker run --rm` without attaching; median of {args.containers}, the modes "
        "taking turns"
    )
    policy = modes[-1][0]
    run_ratio = statistics.median(policy.runs) / statistics.median(base.runs)
    go = [m for m, _ in modes if m.name.startswith("go")]
    floor = f" (the Go floor: {go[0].p(50) / base.p(50):.2f}x)" if go else ""
    print(
        f"\npolicyauthz/none: GET p50 {policy.p(50) / base.p(50):.2f}x{floor}, a container "
        f"run {run_ratio:.2f}x (target: at most 1.2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
