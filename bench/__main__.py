"""``python3 -m bench``: the SDK against a bare Starlette app and a Go plugin.

Every server answers the same two calls (Capabilities and Get, the calls of
every volume operation) with the same JSON on a unix socket; one Python
client (bench/client.py) drives them all in one run, so the ratios hold even
on a noisy machine. Printed per server: time to listen (spawn -> connect()
succeeds, all the daemon waits for) and to the first answer, sequential
keep-alive requests/s, p50 and p99 latency, RSS after 10,000 requests, and
the server's own CPU time per request (from ``/proc/<pid>/stat``: the Python
client is the bottleneck, so requests/s hides the server's cost), on one
kept-alive connection and with a new connection for each request.

With ``--plugin`` it also measures the reference plugin: its built bundle
(rootfs size, start-to-listen and RSS inside that rootfs, the slowest
imports from ``-X importtime``) and, when enabled on the daemon, the idle RSS
of its process there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import client

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    note: str = ""
    listen_ms: float = 0.0
    answer_ms: float = 0.0
    runs: list[client.Run] = field(default_factory=list)
    rss_mb: float = 0.0
    #: Server CPU seconds, one figure per round of ``cpu_round`` requests:
    #: keep-alive ("keep") and a new connection each ("new").
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"keep": [], "new": []})
    cpu_round: int = 0

    def cpu_us(self, mode: str) -> float:
        """Over all rounds (/proc's clock ticks are too coarse for one round)."""
        rounds = self.cpu[mode]
        return sum(rounds) / (len(rounds) * self.cpu_round) * 1e6

    def median(self, what: str) -> float:
        if what == "rate":
            return statistics.median(r.rate for r in self.runs)
        return statistics.median(r.percentile(float(what)) for r in self.runs)


#: Servers whose CPU per request is measured, on one kept-alive connection and
#: with a new connection for each request.
CPU_KEEP = ("go", "sdk", "bare", "sdk threaded")
CPU_NEW = ("go", "sdk", "bare")


def build_go(tmp: Path) -> str | None:
    go = shutil.which("go")
    if go is None:
        return None
    out = tmp / "goplugin"
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    subprocess.run(
        [go, "build", "-o", str(out), "."], cwd=ROOT / "bench" / "goplugin", env=env, check=True
    )
    return str(out)


def servers(go: str | None, sock: str, extra_site: str | None) -> list[Server]:
    """What runs: the plugin's own configuration (uvicorn with httptools,
    which the builder installs into every rootfs) and, for reference, the
    same apps on uvicorn's pure-Python h11 parser."""
    py = sys.executable
    base = {**os.environ, "LOG_LEVEL": "warning"}
    base.pop("PYTHONPATH", None)
    hide = str(ROOT / "bench" / "_h11only")
    h11 = {**base, "PYTHONPATH": os.pathsep.join((hide, str(ROOT)))}
    fast = {**base, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), extra_site) if p)}
    sdk = [py, "-m", "plugin", "--path", sock, "bench.trivial:Trivial"]
    threaded = [py, "-m", "plugin", "--path", sock, "bench.trivial:TrivialThreaded"]
    bare = [py, "-m", "bench.bare", sock]
    out = []
    if go:
        out.append(Server("go", [go, sock], base, "net/http, go-plugins-helpers' way"))
    out += [
        Server("sdk", sdk, fast, "python -m plugin, async methods; httptools"),
        Server("bare", bare, fast, "Starlette Route + request.json(); httptools"),
        Server("sdk threaded", threaded, fast, "plain methods (thread pool); httptools"),
        Server("bare threaded", [*bare, "--threaded"], fast, "work in the thread pool; httptools"),
        Server("sdk h11", sdk, h11, "as sdk, uvicorn's pure-Python parser"),
        Server("bare h11", bare, h11, "as bare, uvicorn's pure-Python parser"),
    ]
    return out


def measure(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="dpk-bench-") as tmp_name:
        tmp = Path(tmp_name)
        go = build_go(tmp)
        if go is None:
            print("go not found: the Go baseline is skipped (bench/run installs golang-go)")
        sock = str(tmp / "s.sock")
        todo = servers(go, sock, args.site)
        for s in todo:
            s.listen_ms, s.answer_ms = client.start_times(s.cmd, sock, s.env, args.starts)
        procs = {}
        conns = {}
        try:
            for i, s in enumerate(todo):
                path = str(tmp / f"{i}.sock")
                cmd = [path if part == sock else part for part in s.cmd]
                procs[s.name] = subprocess.Popen(cmd, env=s.env, stdout=subprocess.DEVNULL)
                client.wait_listening(path, procs[s.name])
                conns[s.name] = client.UnixConnection(path)
            for s in todo:
                client.check(conns[s.name])
                client.sequential(conns[s.name], args.warmup)
            # Rounds interleave the servers, so drift hits them all alike.
            for _ in range(args.rounds):
                for s in todo:
                    s.runs.append(client.sequential(conns[s.name], args.requests))
            for s in todo:
                s.rss_mb = client.rss_mb(procs[s.name].pid)
            # Server CPU per request, in interleaved rounds as above.
            per_round = max(1, args.cpu_requests // args.cpu_rounds)
            for _ in range(args.cpu_rounds):
                for mode, names in (("keep", CPU_KEEP), ("new", CPU_NEW)):
                    for s in todo:
                        if s.name in names:
                            path = str(tmp / f"{todo.index(s)}.sock")
                            pid = procs[s.name].pid
                            keep = mode == "keep"
                            spent = client.server_cpu(path, pid, per_round, keep_alive=keep)
                            s.cpu[mode].append(spent)
                            s.cpu_round = per_round
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(10)
    total = args.warmup + args.rounds * args.requests + 2
    print(
        f"\n{args.rounds} rounds of {args.requests} sequential keep-alive requests per server "
        f"(Capabilities and Get alternating), after {args.warmup} warm-up; start times: median "
        f"of {args.starts} starts; RSS after {total} requests\n"
    )
    cpu_n = args.cpu_rounds * max(1, args.cpu_requests // args.cpu_rounds)
    print(
        f"server CPU us/request (/proc/<pid>/stat, user + system) over {cpu_n} requests "
        f"in {args.cpu_rounds} interleaved rounds: 'cpu ka' on one kept-alive "
        "connection, 'cpu new' with a new connection each\n"
    )
    head = f"{'server':<14}{'listen':>9}{'answer':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    print(head + f"{'cpu ka':>8}{'cpu new':>8}{'RSS MB':>8}  note")
    for s in todo:
        ka = f"{s.cpu_us('keep'):>8.0f}" if s.cpu["keep"] else f"{'-':>8}"
        new = f"{s.cpu_us('new'):>8.0f}" if s.cpu["new"] else f"{'-':>8}"
        print(
            f"{s.name:<14}{s.listen_ms:>7.1f}ms{s.answer_ms:>7.1f}ms{s.median('rate'):>8.0f}"
            f"{s.median('50'):>8.3f}{s.median('99'):>8.3f}{ka}{new}{s.rss_mb:>8.1f}  {s.note}"
        )
    by = {s.name: s for s in todo}
    print()
    for sdk, bare in (("sdk", "bare"), ("sdk threaded", "bare threaded"), ("sdk h11", "bare h11")):
        a, b = by[sdk], by[bare]
        print(
            f"{sdk}/{bare}: throughput {a.median('rate') / b.median('rate'):.2f}x, "
            f"p50 {a.median('50') / b.median('50'):.2f}x, listen {a.listen_ms / b.listen_ms:.2f}x"
        )
    if "go" in by:
        a, g = by["sdk"], by["go"]
        print(
            f"sdk/go: throughput {a.median('rate') / g.median('rate'):.2f}x, "
            f"p50 {a.median('50') / g.median('50'):.2f}x, RSS {a.rss_mb / g.rss_mb:.2f}x, "
            f"server CPU per request {a.cpu_us('keep') / g.cpu_us('keep'):.2f}x keep-alive "
            f"(target 1.4x), {a.cpu_us('new') / g.cpu_us('new'):.2f}x new connection each "
            "(target 1.5x)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=1800, help="per round and server")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=7, help="process starts timed per server")
    parser.add_argument(
        "--cpu-requests", type=int, default=20_000, help="per server and mode, for server CPU"
    )
    parser.add_argument("--cpu-rounds", type=int, default=10)
    parser.add_argument("--site", help="a directory with httptools (bench/run installs it there)")
    parser.add_argument("--plugin", action="store_true", help="also measure the reference plugin")
    parser.add_argument("--bundle", type=Path, help="with --plugin: this bundle, not rootfs-build/")
    parser.add_argument("--name", default="localvol:latest", help="with --plugin: plugin name")
    parser.add_argument("--plugin-only", action="store_true", help="only the --plugin figures")
    args = parser.parse_args(argv)
    code = 0 if args.plugin_only else measure(args)
    if code == 0 and (args.plugin or args.plugin_only):
        from . import plugin

        code = plugin.report(args.bundle or plugin.BUNDLE, args.name)
    return code


if __name__ == "__main__":
    sys.exit(main())
