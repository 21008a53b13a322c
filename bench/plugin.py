"""The reference plugin's own figures (``python3 -m bench --plugin``).

- its bundle (``reference/localvol/rootfs-build/``, what ``make plugin`` built): rootfs size;
  time from process start to a listening socket inside that rootfs (run as
  the daemon would: chroot, private mounts, the config's entrypoint and
  environment), median of several starts; its slowest imports
  (``-X importtime``);
- the plugin enabled on the daemon (``localvol:latest``): RSS of its
  process right after enable and after 10,000 requests (Capabilities and
  List, the read-only calls) on its own socket.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from . import client

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "reference" / "localvol" / "rootfs-build"
NAME = "localvol:latest"
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _command(config: dict[str, Any], rootfs: Path, sock_dir: str, extra: list[str]) -> list[str]:
    """The entrypoint in ``rootfs``, in a private mount namespace with the
    daemon's mounts (tmpfs for the data and propagated mount, the socket dir
    bound to ``sock_dir``)."""
    mounts = [m["destination"] for m in config.get("mounts") or []]
    if config.get("propagatedMount"):
        mounts.append(config["propagatedMount"])
    script = ["set -e"]
    for dest in mounts:
        script.append(f"mount -t tmpfs tmpfs {shlex.quote(str(rootfs) + dest)}")
    script.append(f"mount -t proc proc {shlex.quote(str(rootfs / 'proc'))}")
    script.append(
        f"mount --bind {shlex.quote(sock_dir)} {shlex.quote(str(rootfs / 'run/docker/plugins'))}"
    )
    entry = config["entrypoint"]
    argv = [entry[0], *extra, *entry[1:]]
    script.append("exec chroot " + shlex.quote(str(rootfs)) + " " + shlex.join(argv))
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]


def _environment(config: dict[str, Any]) -> dict[str, str]:
    env = {"PATH": DAEMON_PATH, "LOG_LEVEL": "warning"}
    for item in config.get("env") or []:
        if item.get("value") is not None and item["name"] != "LOG_LEVEL":
            env[item["name"]] = item["value"]
    # chroot starts in /, not in the config's workdir: put it on the path.
    workdir = config.get("workdir") or "/"
    env["PYTHONPATH"] = ":".join(p for p in (env.get("PYTHONPATH"), workdir) if p)
    return env


def bundle_figures(starts: int, bundle: Path = BUNDLE) -> None:
    config_file = bundle / "config.json"
    if not config_file.exists() or os.geteuid() != 0 or not shutil.which("unshare"):
        print(f"\nno bundle in {bundle} (make build), or not root: bundle figures skipped")
        return
    config = json.loads(config_file.read_text())
    rootfs = bundle / "rootfs"
    print(f"\nbundle {bundle}: rootfs {tree_bytes(rootfs) / 1e6:.1f} MB")
    env = _environment(config)
    listen = []
    with tempfile.TemporaryDirectory(prefix="dpk-bench-", dir="/tmp") as sock_dir:
        sock = os.path.join(sock_dir, config["interface"]["socket"])
        cmd = _command(config, rootfs, sock_dir, [])
        for _ in range(starts):
            if os.path.lexists(sock):
                os.unlink(sock)
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
            try:
                client.wait_listening(sock, proc)
                listen.append((time.perf_counter() - t0) * 1000)
            finally:
                proc.terminate()
                proc.wait(10)
        print(
            f"start to listen in the plugin's rootfs: {statistics.median(listen):.0f} ms "
            f"(median of {starts}, min {min(listen):.0f} ms; includes unshare, mounts, chroot)"
        )
        if os.path.lexists(sock):
            os.unlink(sock)
        traced = subprocess.Popen(
            _command(config, rootfs, sock_dir, ["-X", "importtime"]),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        client.wait_listening(sock, traced)
        conn = client.UnixConnection(sock)
        client.post(conn, "/VolumeDriver.Capabilities", b"{}\n")
        conn.close()
        traced.terminate()
        _, err = traced.communicate(timeout=10)
    roots = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line[12:].split("|"))
            if not line.split("|")[2].startswith("  ") and cumulative.isdigit():
                roots.append((int(cumulative), name.strip()))
    roots.sort(reverse=True)
    if not roots:
        print("no -X importtime output (the traced start failed): imports not shown")
        return
    print("slowest top-level imports (-X importtime, us cumulative; the socket is bound")
    print("once the drivers are made; uvicorn and the app are imported after that):")
    for us, name in roots[:8]:
        print(f"  {us:>7}  {name}")


def daemon_figures(requests: int, name: str = NAME) -> None:
    try:
        info = json.loads(
            subprocess.run(
                ["docker", "plugin", "inspect", name], capture_output=True, text=True, check=True
            ).stdout
        )[0]
    except (OSError, subprocess.CalledProcessError, ValueError):
        print(f"\n{name} is not on the daemon (make plugin): RSS in the daemon skipped")
        return
    if not info.get("Enabled"):
        print(f"\n{name} is not enabled: RSS in the daemon skipped")
        return
    plugin_id = info["Id"]
    state = subprocess.run(
        ["runc", "--root", "/run/docker/runtime-runc/plugins.moby", "state", plugin_id],
        capture_output=True,
        text=True,
    )
    if state.returncode != 0:
        print(f"\ncannot find {name}'s process (runc state): RSS skipped")
        return
    pid = json.loads(state.stdout)["pid"]
    sock = f"/run/docker/plugins/{plugin_id}/{info['Config']['Interface']['Socket']}"
    before = client.rss_mb(pid)
    conn = client.UnixConnection(sock)
    for i in range(requests):
        path = "/VolumeDriver.Capabilities" if i % 2 else "/VolumeDriver.List"
        status, _ = client.post(conn, path, b"{}\n")
        if status != 200:
            raise AssertionError(f"{path}: {status}")
    conn.close()
    time.sleep(0.5)
    print(
        f"\n{name} on the daemon (pid {pid}): RSS {before:.1f} MB idle, "
        f"{client.rss_mb(pid):.1f} MB after {requests} requests"
    )


def report(bundle: Path = BUNDLE, name: str = NAME, starts: int = 7, requests: int = 10_000) -> int:
    bundle_figures(starts, bundle)
    daemon_figures(requests, name)
    return 0
