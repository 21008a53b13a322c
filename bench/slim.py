"""``python3 -m bench.slim BUNDLE [BUNDLE ...]``: slim rootfs against slim rootfs.

For each bundle (a built ``rootfs-build/``-like directory): the size of its
rootfs (regular files), of its module zip, and the time from process start to
a listening socket inside it, run as the daemon would (bench/plugin.py:
chroot, private mounts, the config's entrypoint and environment). Starts are
interleaved, bundle after bundle, so that the machine's load falls on all of
them alike; the medians are compared with the first bundle.

    python3 -m bench.slim /var/tmp/before-bundle rootfs-build

Root is needed (unshare, mount, chroot).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import client
from .plugin import _command, _environment, tree_bytes

#: The reference plugin's budget (issue 7): rootfs size and start to listen.
MAX_MB = 30.0
MAX_LISTEN_MS = 150.0


def _zip_bytes(rootfs: Path) -> int:
    return sum(p.stat().st_size for p in (rootfs / "usr/lib").glob("python3*.zip"))


def _start(config: dict[str, object], rootfs: Path, sock_dir: str) -> float:
    sock = os.path.join(sock_dir, config["interface"]["socket"])  # type: ignore[index]
    if os.path.lexists(sock):
        os.unlink(sock)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        _command(config, rootfs, sock_dir, []),
        env=_environment(config),
        stdout=subprocess.DEVNULL,
    )
    try:
        client.wait_listening(sock, proc)
        return (time.perf_counter() - t0) * 1000
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.slim", description=__doc__)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--starts", type=int, default=15, help="starts per bundle")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.slim needs root (unshare, mount, chroot)", file=sys.stderr)
        return 2
    configs = {b: json.loads((b / "config.json").read_text()) for b in args.bundles}
    times: dict[Path, list[float]] = {b: [] for b in args.bundles}
    with tempfile.TemporaryDirectory(prefix="dpk-bench-slim-", dir="/tmp") as sock_dir:
        for b in args.bundles:  # a first start each, not timed (page cache)
            _start(configs[b], b / "rootfs", sock_dir)
        for _ in range(args.starts):
            for b in args.bundles:
                times[b].append(_start(configs[b], b / "rootfs", sock_dir))
    first = statistics.median(times[args.bundles[0]])
    print(f"{'bundle':<40} {'rootfs':>9} {'zip':>8} {'listen p50':>11} {'min':>7} {'ratio':>6}")
    for b in args.bundles:
        rootfs = b / "rootfs"
        size = tree_bytes(rootfs) / 1e6
        median = statistics.median(times[b])
        print(
            f"{b!s:<40} {size:>6.1f} MB {_zip_bytes(rootfs) / 1e6:>5.1f} MB "
            f"{median:>8.0f} ms {min(times[b]):>4.0f} ms {median / first:>5.2f}x"
        )
    print(
        f"(median of {args.starts} interleaved starts each; start to listen includes unshare, "
        f"mounts and chroot; budget {MAX_MB:.0f} MB, {MAX_LISTEN_MS:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
