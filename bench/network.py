"""``python3 -m bench.network``: a container on bridgenet+poolipam vs Docker's bridge.

Builds both reference plugins into private bundles, creates them under
unique names, then times ``docker run --rm`` of a busybox container on a
bridgenet network (addresses from poolipam) and on a network of Docker's
built-in bridge driver, interleaved round by round in one run so that the
ratio holds on a busy machine. Prints the medians and their ratio (target:
at most 1.1), the plugins' RSS on the daemon after the runs, and the size of
each plugin's rootfs. Removes everything it made.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "docker-plugin-kit/busybox:latest"


def docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def build(name: str, tag: str) -> Path:
    """Build reference/<name> (an author's project) into a private bundle."""
    from plugin.bundle.__main__ import main

    bundle = Path(f"/var/tmp/dpk-bench-bundle-{name}-{tag}")
    out = io.StringIO()
    project = ROOT / "reference" / name
    code = main(["--project", str(project), "--bundle", str(bundle), "build"], out=out)
    if code != 0:
        raise SystemExit(f"build of {name} failed:\n{out.getvalue()}")
    return bundle


def du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def plugin_rss(name: str) -> float:
    plugin_id = docker("plugin", "inspect", "-f", "{{.Id}}", name).strip()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if plugin_id in (proc / "cgroup").read_text():
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    return float("nan")


def timed_run(network: str) -> float:
    start = time.perf_counter()
    docker("run", "--rm", "--network", network, IMAGE, "true")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.network", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="containers per network")
    args = parser.parse_args(argv)
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    engine = Engine(report=lambda line: None)
    bundles = {name: build(name, tag) for name in ("bridgenet", "poolipam")}
    names = {name: f"dpk-bench-{tag}/{name}:latest" for name in bundles}
    data = {name: f"/var/tmp/dpk-bench-{name}-{tag}" for name in bundles}
    second = random.randint(160, 250)
    nets = {"bridgenet": f"dpk-bench-net-{tag}", "bridge": f"dpk-bench-br-{tag}"}
    made: list[str] = []
    try:
        for name, bundle in bundles.items():
            engine.create(names[name], bundle)
            made.append(names[name])
            engine.set(names[name], [f"data.source={data[name]}"])
            engine.enable(names[name], timeout=30)
        docker(
            "network", "create", "-d", names["bridgenet"], "--ipam-driver", names["poolipam"],
            "--subnet", f"10.{second}.1.0/24", nets["bridgenet"],
        )  # fmt: skip
        docker(
            "network", "create", "-d", "bridge", "--subnet", f"10.{second}.2.0/24", nets["bridge"]
        )
        for net in nets.values():
            timed_run(net)  # warm: image, plugin code paths
        times: dict[str, list[float]] = {k: [] for k in nets}
        for i in range(args.rounds):
            order = list(nets) if i % 2 == 0 else list(reversed(nets))
            for kind in order:
                times[kind].append(timed_run(nets[kind]))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"docker run --rm busybox true, {args.rounds} each, interleaved:")
        for kind in nets:
            print(
                f"  {kind:10s} median {med[kind] * 1000:6.0f} ms  "
                f"(min {min(times[kind]) * 1000:.0f}, max {max(times[kind]) * 1000:.0f})"
            )
        print(f"  ratio bridgenet/bridge: {med['bridgenet'] / med['bridge']:.3f} (target <= 1.1)")
        for name in bundles:
            size = du(bundles[name] / "rootfs") / 1e6
            print(
                f"{name}: RSS {plugin_rss(names[name]):.1f} MiB on the daemon, rootfs {size:.1f} MB"
            )
    finally:
        for net in nets.values():
            docker("network", "rm", net, check=False)
        for name in reversed(made):
            docker("plugin", "rm", "-f", name, check=False)
        for name in bundles:
            shutil.rmtree(bundles[name], ignore_errors=True)
            shutil.rmtree(data[name], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
