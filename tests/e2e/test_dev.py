"""Dev mode through the real daemon: ``docker-plugin-kit dev`` on a copy of the
reference project outside the checkout, a saved change answered by the new
code, a broken save reported and recovered from, dev mode left cleanly.

Tests run in file order on one dev session (starting it creates a plugin from
the whole image: the slowest step).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ROOT, TEST_IMAGE, docker, wait_for

pytestmark = pytest.mark.e2e

PROJECT = ROOT / "reference" / "localvol"
DRIVER = Path("localvol") / "driver.py"

#: Appended to the driver: Get shows which save answers.
MARK = """
_dev_test_get = LocalVolumes.get


def _dev_test_marked_get(self, req):
    answer = _dev_test_get(self, req)
    answer.volume.status["dev"] = {mark!r}
    return answer


LocalVolumes.get = _dev_test_marked_get
"""


@dataclass
class DevSession:
    project: Path
    name: str
    data: Path
    log: Path
    proc: subprocess.Popen[bytes]
    original: str
    volumes: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def save(self, text: str) -> None:
        """Save the driver as editors do: a new file renamed over the old one."""
        path = self.project / DRIVER
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def save_mark(self, mark: str) -> None:
        self.save(self.original + MARK.format(mark=mark))

    def mark(self, volume: str) -> str | None:
        info = json.loads(docker("volume", "inspect", volume).stdout)[0]
        return info["Status"].get("dev")  # type: ignore[no-any-return]

    def plugin_id(self) -> str:
        return docker("plugin", "inspect", "-f", "{{.Id}}", self.name).stdout.strip()


@pytest.fixture(scope="module")
def dev(engine_ready: None) -> Iterator[DevSession]:
    """``docker-plugin-kit dev`` running on a copy of the reference project in
    /var/tmp, with the checkout's kit, under a unique name."""
    tag = uuid.uuid4().hex[:8]
    project = Path(f"/var/tmp/dpk-e2e-dev-{tag}")
    shutil.copytree(
        PROJECT,
        project,
        ignore=shutil.ignore_patterns("rootfs-build", ".build", "__pycache__", ".pytest_cache"),
    )
    wheels = PROJECT / ".build" / "wheels"
    if wheels.is_dir():
        shutil.copytree(wheels, project / ".build" / "wheels")
    name = f"dpk-e2e-dev-{tag}/localvol:latest"
    data = Path(f"/var/tmp/dpk-e2e-dev-data-{tag}")
    log = Path(f"/var/tmp/dpk-e2e-dev-{tag}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin.bundle", "--name", name, "dev", f"data.source={data}"],
            cwd=project,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    session = DevSession(project, name, data, log, proc, (project / DRIVER).read_text())
    try:
        wait_for(
            "dev mode to serve",
            lambda: "serving (server 1" in session.output() or proc.poll() is not None,
            timeout=300,
        )
        assert proc.poll() is None, f"dev mode exited:\n{session.output()}"
        yield session
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.stderr.write(session.output())
        for volume in session.volumes:
            docker("volume", "rm", "-f", volume, check=False)
        removed = docker("plugin", "rm", "-f", name, check=False)
        gone = docker("plugin", "inspect", name, check=False)
        if removed.returncode == 0 or "not found" in gone.stderr:
            shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(project, ignore_errors=True)
        log.unlink(missing_ok=True)
        # Its images, once another build took the tag.
        from plugin.bundle import BundleError
        from plugin.bundle._engine import docker_client
        from plugin.bundle._rootfs import remove_replaced_images

        with contextlib.suppress(BundleError):
            remove_replaced_images(docker_client(), project / "rootfs-build", keep="")


def test_dev_mode_creates_a_marked_plugin_that_runs_the_source_from_the_host(
    dev: DevSession,
) -> None:
    info = json.loads(docker("plugin", "inspect", dev.name).stdout)[0]
    assert info["Enabled"] is True
    env = {e["Name"]: e["Value"] for e in info["Config"]["Env"]}
    assert env["DPK_DEV_SOURCE"] == str(dev.project)
    assert info["Config"]["Description"].startswith(
        f"[dev mode: runs the source in {dev.project} on the host that made it; never push] "
    )
    mounts = {m["Name"]: (m["Source"], m["Destination"]) for m in info["Settings"]["Mounts"]}
    assert mounts["dev-source"] == (str(dev.project), "/plugin-dev/src")
    assert mounts["data"][0] == str(dev.data)
    volume = f"dpk-e2e-dev-{uuid.uuid4().hex[:8]}"
    dev.volumes.append(volume)
    docker("volume", "create", "-d", dev.name, volume)
    assert dev.mark(volume) is None


def test_a_save_is_answered_by_the_new_code_and_no_call_fails_meanwhile(
    dev: DevSession,
) -> None:
    volume = dev.volumes[0]
    # A container keeps the volume mounted across the reload.
    container = f"dpk-e2e-dev-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", container, "-v", f"{volume}:/data", TEST_IMAGE,
           "sh", "-c", "echo kept > /data/f; sleep 600")  # fmt: skip
    try:
        wait_for("the container's write", lambda: (dev.data / "volumes" / volume / "f").exists())
        errors: list[str] = []
        done = threading.Event()

        def inspect_meanwhile() -> None:
            while not done.is_set():
                proc = docker("volume", "inspect", volume, check=False)
                if proc.returncode != 0:
                    errors.append(proc.stderr.strip())

        thread = threading.Thread(target=inspect_meanwhile)
        thread.start()
        try:
            saved = time.monotonic()
            dev.save_mark("one")
            wait_for("the new code to answer", lambda: dev.mark(volume) == "one", timeout=30)
            took = time.monotonic() - saved
        finally:
            done.set()
            thread.join()
        sys.stderr.write(f"dev mode: save to answer through the daemon in {took:.2f} s\n")
        assert errors == []
        reloaded = re.compile(r"localvol/driver\.py changed: reloaded in [0-9.]+ s")
        wait_for("dev's report", lambda: reloaded.search(dev.output()))
        # The volume stayed mounted: the plugin's state survived the new server.
        assert docker("exec", container, "cat", "/data/f").stdout == "kept\n"
        info = json.loads(docker("volume", "inspect", volume).stdout)[0]
        assert info["Status"]["mounts"] == 1
    finally:
        docker("rm", "-f", container)
    # The new server unmounted it (it knew the mount from the state on disk).
    assert json.loads(docker("volume", "inspect", volume).stdout)[0]["Status"]["mounts"] == 0


def test_a_broken_save_is_reported_the_old_code_serves_and_the_next_save_is_picked_up(
    dev: DevSession,
) -> None:
    volume = dev.volumes[0]
    broken = dev.original + MARK.format(mark="two") + "\ndef oops(:\n"
    line = broken.count("\n")
    dev.save(broken)
    where = f"{dev.project}/{DRIVER}, line {line}"
    expected = f"localvol/driver.py changed: error: SyntaxError: invalid syntax ({where})"
    wait_for("the error in dev's output", lambda: expected in dev.output())
    assert "still serving the previous code until the next save" in dev.output()
    assert dev.mark(volume) == "one"
    # The daemon's log has it too, with the host's path.
    from plugin.bundle._engine import _daemon_log_lines

    plugin_id = dev.plugin_id()
    logged = f"ERROR plugin.dev: cannot import the drivers: SyntaxError: invalid syntax ({where})"
    wait_for(
        "the error in the daemon's log",
        lambda: any(ln.startswith(logged) for ln in _daemon_log_lines(plugin_id, limit=40)),
    )
    dev.save_mark("three")
    wait_for("the fixed code to answer", lambda: dev.mark(volume) == "three", timeout=30)
    assert dev.plugin_id() == plugin_id  # the same plugin, never re-created


def test_push_refuses_the_dev_plugin(dev: DevSession) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "plugin.bundle", "--name", dev.name, "push"],
        cwd=dev.project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"error: push {dev.name}: this is a dev plugin (docker-plugin-kit dev): it runs the "
        f"source in {dev.project} on the host that made it, and would not work anywhere else; "
        "build a normal one first (make plugin, or docker-plugin-kit plugin), then push"
    )


def test_leaving_dev_mode_removes_the_plugin_and_its_files(dev: DevSession) -> None:
    for volume in dev.volumes:
        docker("volume", "rm", volume)
    dev.volumes.clear()
    dev.proc.send_signal(signal.SIGTERM)  # what Ctrl-C does
    assert dev.proc.wait(60) == 0
    assert dev.output().splitlines()[-1] == "dev mode left"
    assert f"==> remove the dev plugin {dev.name}" in dev.output()
    gone = docker("plugin", "inspect", dev.name, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr
    assert not (dev.project / ".build" / "dev").exists()
    # The volumes' data stays where the host keeps it.
    assert (dev.data / "state.json").exists()
