"""``python3 -m bench.devloop``: from a save of the driver to the daemon
answering with the new code, in dev mode and with ``make plugin``, side by side.

Two copies of the reference project (``reference/localvol/``) outside the
checkout, each with its own plugin and data directory: one in dev mode
(``docker-plugin-kit dev``), one rebuilt with ``make plugin`` after each save
(caches warm: a first build fills them). Each round saves a change to both
drivers in turn: Get adds a new mark to the volume's status. The time of a
round runs from the save (the file renamed into place) to the first
``docker volume inspect`` (through the daemon's API) whose status shows the
new mark; for ``make plugin`` it includes the build. Rounds interleave the
two, so the machine's other load falls on both alike. Calls the daemon
failed meanwhile are counted (dev mode: there must be none).

Then dev mode is left (SIGTERM, as Ctrl-C) and its plugin must be gone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "reference" / "localvol"
DRIVER = Path("localvol") / "driver.py"

#: Where dev mode's output is kept after the run.
KEPT_LOG = Path("/var/tmp/dpk-bench-devloop.log")

#: The label the builder puts on the images it builds: their bundle directory.
LABEL = "io.docker-plugin-kit.bundle"

#: Appended to the driver: Get shows which save answered.
MARK = """
# bench/devloop: which save answers
_bench_get = LocalVolumes.get


def _bench_marked_get(self, req):
    answer = _bench_get(self, req)
    answer.volume.status["bench"] = {mark!r}
    return answer


LocalVolumes.get = _bench_marked_get
"""


@dataclass
class Side:
    label: str
    project: Path
    name: str
    data: Path
    volume: str
    times: list[float] = field(default_factory=list)
    failed_calls: int = 0
    original: str = ""

    def save(self, mark: str) -> float:
        """Write the driver with ``mark`` as editors do; the time it landed."""
        path = self.project / DRIVER
        tmp = path.with_name(f".{path.name}.bench")
        tmp.write_text(self.original + MARK.format(mark=mark))
        os.replace(tmp, path)
        return time.monotonic()


def copy_project(dest: Path) -> None:
    shutil.copytree(
        PROJECT,
        dest,
        ignore=shutil.ignore_patterns("rootfs-build", ".build", "__pycache__", ".pytest_cache"),
    )
    wheels = PROJECT / ".build" / "wheels"
    if wheels.is_dir():  # the wheelhouse of a build in the checkout: no download
        shutil.copytree(wheels, dest / ".build" / "wheels")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def answered(client: Any, side: Side, mark: str) -> bool:
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    try:
        status = client.api.inspect_volume(side.volume).get("Status") or {}
    except docker.errors.APIError as exc:
        side.failed_calls += 1
        print(f"    {side.label}: the daemon failed a call: {exc}", file=sys.stderr)
        return False
    return bool(status.get("bench") == mark)


def wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/devloop: timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def daemon_retries(plugin_id: str) -> int | None:
    """How many calls to the plugin the daemon had to retry ("Unable to
    connect to plugin", a refused or reset connection), from its log when
    readable here (scripts/engine writes /var/log/dpk-dockerd.log)."""
    path = Path(os.environ.get("DPK_DOCKERD_LOG", "/var/log/dpk-dockerd.log"))
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    mark = f"/run/docker/plugins/{plugin_id}/"
    return sum(1 for line in text.splitlines() if "Unable to connect" in line and mark in line)


def summary(times: list[float]) -> str:
    return (
        f"median {statistics.median(times):5.2f} s, min {min(times):5.2f} s, "
        f"max {max(times):5.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.devloop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import docker  # type: ignore[import-untyped,unused-ignore]

    client = docker.from_env(timeout=120)
    tag = uuid.uuid4().hex[:8]
    top = Path(f"/var/tmp/dpk-bench-devloop-{tag}")
    dev = Side("dev mode", top / "dev", f"dpk-bench-dev-{tag}/localvol:latest",
               top / "dev-data", f"dpk-bench-dev-{tag}")  # fmt: skip
    make = Side("make plugin", top / "make", f"dpk-bench-make-{tag}/localvol:latest",
                top / "make-data", f"dpk-bench-make-{tag}")  # fmt: skip
    log = top / "dev.log"
    proc: subprocess.Popen[bytes] | None = None
    say = lambda text: print(f"==> {text}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        for side in (dev, make):
            copy_project(side.project)
            side.original = (side.project / DRIVER).read_text()
        # The first build fills the caches and sets this host's data directory
        # (never the default one, which a user's localvol may use); make plugin
        # keeps it on each rebuild.
        say(f"first build in {make.project} (fills the caches)")
        first = [sys.executable, "-m", "plugin.bundle", "--project", str(make.project),
                 "--name", make.name, "plugin", f"data.source={make.data}"]  # fmt: skip
        subprocess.run(first, env=env(), check=True, capture_output=True)
        make_cmd = [
            "make", "-C", str(make.project), "plugin", "NAME=" + make.name.rsplit(":", 1)[0],
            "TAG=latest", "DPK=python3 -m plugin.bundle",
        ]  # fmt: skip
        say(f"docker-plugin-kit dev in {dev.project}")
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "plugin.bundle", "--name", dev.name, "dev",
                 f"data.source={dev.data}"],
                cwd=dev.project, env=env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait("dev mode", lambda: "serving (server 1" in log.read_text(), 300)
        dev_start = time.monotonic() - started
        for side in (dev, make):
            client.api.create_volume(side.volume, driver=side.name)
        for n in range(1, args.rounds + 1):
            for side in (dev, make):
                mark = f"{side.label} {n}"
                saved = side.save(mark)
                if side is make:
                    subprocess.run(make_cmd, env=env(), check=True, capture_output=True)
                wait(f"{side.label}: round {n}", lambda s=side, m=mark: answered(client, s, m), 120)
                side.times.append(time.monotonic() - saved)
                say(f"round {n}: {side.label} {side.times[-1]:.2f} s")
        retries = daemon_retries(client.api.inspect_plugin(dev.name)["Id"])
        say("leaving dev mode (SIGTERM)")
        proc.send_signal(signal.SIGTERM)
        left = proc.wait(120)
        gone = not [p for p in client.plugins.list() if p.name == dev.name]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for side in (dev, make):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_volume(side.volume, force=True)
            subprocess.run(["docker", "plugin", "rm", "-f", side.name], capture_output=True)
        # The images built in the copies (labelled with their bundle directory).
        for image in client.images.list(filters={"label": LABEL}):
            if str(image.labels.get(LABEL, "")).startswith(str(top)):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(image.id, force=True)
        if log.exists():  # dev mode's own output, for a look afterwards
            shutil.copy(log, KEPT_LOG)
        shutil.rmtree(top, ignore_errors=True)
    print(f"\nfrom a save of the driver to the daemon answering with the new code "
          f"({args.rounds} rounds, interleaved):")  # fmt: skip
    for side in (dev, make):
        print(f"  {side.label:<12} {summary(side.times)}; calls failed: {side.failed_calls}")
    ratio = statistics.median(make.times) / statistics.median(dev.times)
    shown = "unknown (no daemon log here)" if retries is None else str(retries)
    print(f"  the daemon retried {shown} calls to the dev plugin (a connection refused or reset)")
    print(f"  dev mode is {ratio:.1f}x faster (medians); dev mode started in {dev_start:.1f} s, "
          f"left with status {left}, its plugin {'removed' if gone else 'STILL THERE'}"
    )  # fmt: skip
    return 0 if gone and left == 0 and dev.failed_calls == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
