"""``python3 -m bench.logs``: a log driver plugin against the built-in
``json-file``, side by side in one run.

Per round and driver (interleaved): the time for a detached container to
print ``--lines`` lines and exit (``docker run -d`` to ``docker wait``), then
the time ``docker logs`` takes to give them all back (each line checked).
For the plugin, its CPU time (user + system, from /proc) per line written
and its RSS after the run. ``none`` runs once per round as the floor.
The plugin (default ``filelog:latest``, ``make plugin``) must be enabled.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

IMAGE = "docker-plugin-kit/busybox:latest"


def docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Driver:
    name: str
    write_s: list[float] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def median(self, what: str) -> float:
        values = getattr(self, what)
        return statistics.median(values) if values else float("nan")


class PluginProcess:
    def __init__(self, name: str) -> None:
        info = json.loads(docker("plugin", "inspect", name))[0]
        if not info["Enabled"]:
            raise SystemExit(f"{name} is not enabled (make plugin)")
        self.id = info["Id"]
        mounts = {m["Name"]: m["Source"] for m in info["Settings"]["Mounts"]}
        self.logs = Path(mounts["logs"]) if "logs" in mounts else None

    def pid(self) -> int:
        state = subprocess.run(
            ["runc", "--root", "/run/docker/runtime-runc/plugins.moby", "state", self.id],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(json.loads(state.stdout)["pid"])

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid()}/stat").read_text().rsplit(")", 1)[1].split()
        import os

        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def one(driver: Driver, lines: int, plugin: PluginProcess | None, read: bool) -> None:
    cpu0 = plugin.cpu() if plugin else 0.0
    start = time.perf_counter()
    cid = docker("run", "-d", "--log-driver", driver.name, IMAGE, "seq", "1", str(lines)).strip()
    try:
        docker("wait", cid)
        driver.write_s.append(time.perf_counter() - start)
        if plugin:
            driver.cpu_s.append(plugin.cpu() - cpu0)
        if read:
            start = time.perf_counter()
            proc = subprocess.Popen(["docker", "logs", cid], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            count = 0
            last = b""
            for line in proc.stdout:
                count += 1
                last = line
            proc.wait()
            driver.read_s.append(time.perf_counter() - start)
            if count != lines or last != b"%d\n" % lines:
                raise SystemExit(f"{driver.name}: docker logs gave {count} lines, last {last!r}")
    finally:
        docker("rm", "-f", cid)
        if plugin and plugin.logs is not None:
            shutil.rmtree(plugin.logs / cid, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.logs", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plugin", default="filelog:latest")
    args = parser.parse_args(argv)
    plugin = PluginProcess(args.plugin)
    json_file, ours, none = Driver("json-file"), Driver(args.plugin), Driver("none")
    for _ in range(args.rounds):
        one(none, args.lines, None, read=False)
        one(json_file, args.lines, None, read=True)
        one(ours, args.lines, plugin, read=True)
    n = args.lines
    print(f"\n{n} lines (seq 1 {n}) per container, median of {args.rounds} interleaved rounds")
    print(f"{'driver':<18}{'run -> exit':>12}{'docker logs':>13}")
    for d in (none, json_file, ours):
        read = f"{d.median('read_s'):>11.2f} s" if d.read_s else f"{'-':>13}"
        print(f"{d.name:<18}{d.median('write_s'):>10.2f} s{read}")
    write_ratio = ours.median("write_s") / json_file.median("write_s")
    read_ratio = ours.median("read_s") / json_file.median("read_s")
    print(
        f"{args.plugin}/json-file: write {write_ratio:.2f}x (target <= 1.25x), "
        f"docker logs {read_ratio:.2f}x"
    )
    print(
        f"{args.plugin}: CPU {ours.median('cpu_s') / n * 1e6:.2f} us per line written "
        f"(user + system, {ours.median('cpu_s'):.2f} s per run), RSS {plugin.rss_mb():.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
