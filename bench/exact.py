"""``python3 -m bench.exact``: what load does not move, per request to the SDK.

System calls (``strace -c``) and user-space instructions (valgrind's
callgrind) of the SDK server (``bench.trivial:Trivial``, as in
``python3 -m bench``) per request, on one kept-alive connection and with a
new connection each. ``--root DIR`` measures the runtime of another
checkout (``git worktree add /tmp/old HEAD~5``) for a before/after.
Needs ``strace`` and ``valgrind`` (Debian packages of those names); each is
skipped when missing. Slow under valgrind: about a minute.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import client

ROOT = Path(__file__).resolve().parent.parent
SPEC = "bench.trivial:Trivial"
MODES = (("keep", True), ("new", False))


def _server(root: Path, sock: str, tool: list[str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join((str(root), str(ROOT))),
    }
    return subprocess.Popen(
        [*tool, sys.executable, "-m", "plugin", "--path", sock, SPEC],
        env=env,
        stderr=subprocess.DEVNULL,
    )


def syscalls(root: Path, requests: int) -> dict[str, float]:
    """System calls per request, by ``strace -c -f`` on the running server."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="dpk-exact-", dir="/tmp") as tmp:
        sock = f"{tmp}/s.sock"
        server = _server(root, sock, [])
        try:
            client.wait_listening(sock, server)
            client.server_cpu(sock, server.pid, 200, keep_alive=True)
            for mode, keep in MODES:
                report = f"{tmp}/{mode}.strace"
                tracer = subprocess.Popen(
                    ["strace", "-c", "-f", "-p", str(server.pid), "-o", report],
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)  # strace attaches to every thread
                client.server_cpu(sock, server.pid, requests, keep_alive=keep)
                tracer.send_signal(2)
                tracer.wait(30)
                text = Path(report).read_text()
                total = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)", text, re.M)
                if total is None:
                    raise RuntimeError(f"no strace summary in {report}:\n{text}")
                out[mode] = int(total.group(1)) / requests
        finally:
            server.terminate()
            server.wait(10)
    return out


def instructions(root: Path, requests: int) -> dict[str, float]:
    """User-space instructions per request (callgrind, counters zeroed after
    a warm-up and dumped after ``requests``)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="dpk-exact-", dir="/tmp") as tmp:
        sock = f"{tmp}/s.sock"
        tool = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p"]
        server = _server(root, sock, tool)
        try:
            client.wait_listening(sock, server, timeout=120)
            for mode, keep in MODES:
                client.server_cpu(sock, server.pid, 200, keep_alive=keep)
                subprocess.run(["callgrind_control", "-z", str(server.pid)], capture_output=True)
                client.server_cpu(sock, server.pid, requests, keep_alive=keep)
                subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True)
                time.sleep(0.5)
                dumps = sorted(glob.glob(f"{tmp}/cg.{server.pid}.*"), key=os.path.getmtime)
                text = Path(dumps[-1]).read_text()
                found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
                if found is None:
                    raise RuntimeError(f"no total in {dumps[-1]}")
                out[mode] = int(found.group(1)) / requests
        finally:
            server.terminate()
            server.wait(30)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.exact", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="a checkout whose plugin/ to run")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"SDK runtime of {args.root}, {args.requests} requests per figure")
    if shutil.which("strace"):
        calls = syscalls(args.root, args.requests)
        print(
            f"system calls per request: {calls['keep']:.2f} keep-alive, "
            f"{calls['new']:.2f} new connection each"
        )
    else:
        print("strace not found: system calls skipped")
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        ir = instructions(args.root, args.requests)
        print(
            f"user-space instructions per request: {ir['keep'] / 1000:.1f}k keep-alive, "
            f"{ir['new'] / 1000:.1f}k new connection each"
        )
    else:
        print("valgrind not found: instructions skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
