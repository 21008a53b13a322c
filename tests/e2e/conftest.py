"""End-to-end fixtures: the reference plugin built and enabled on the real daemon.

Each session builds the bundle once and creates the plugin under a unique
name with its own data directory; teardown removes only what it made. With
no daemon the tests are skipped locally, but fail under CI (CI=true): the
end-to-end tests never skip there.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .private_daemon import PrivateDaemon, private_daemon  # noqa: F401 (a session fixture)

ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGE = "docker-plugin-kit/busybox:latest"


def docker(
    *args: str, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI, as a user would."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


def _daemon_up() -> bool:
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def engine_ready() -> None:
    if not _daemon_up():
        message = "no Docker daemon answers (run scripts/setup)"
        if os.environ.get("CI"):
            pytest.fail(message + ": end-to-end tests never skip in CI")
        pytest.skip(message)
    if docker("image", "inspect", TEST_IMAGE, check=False).returncode != 0:
        pytest.fail(f"test image {TEST_IMAGE} missing (run scripts/setup)")


@dataclass
class BuiltBundle:
    path: Path
    build_log: str
    seconds: float


@pytest.fixture(scope="session")
def bundle(engine_ready: None) -> Iterator[BuiltBundle]:
    """A bundle built by the real builder from the repo's Dockerfile, in a private dir."""
    from plugin.bundle.__main__ import main

    out = io.StringIO()
    start = time.monotonic()
    # A private bundle: never the user's rootfs-build/, nor another run's.
    path = Path(f"/var/tmp/dpk-e2e-bundle-{uuid.uuid4().hex[:8]}")
    code = main(
        [
            "--project",
            str(ROOT / "reference" / "localvol" / "plugin.toml"),
            "--bundle",
            str(path),
            "build",
        ],
        out=out,
    )
    seconds = time.monotonic() - start
    sys.stderr.write(out.getvalue())
    assert code == 0, f"build failed:\n{out.getvalue()}"
    yield BuiltBundle(path, out.getvalue(), seconds)
    shutil.rmtree(path, ignore_errors=True)
    # Its image, once another build took the tag (the builder removes only
    # the images of its own bundle, and no later build uses this one).
    from plugin.bundle._engine import docker_client
    from plugin.bundle._rootfs import remove_replaced_images

    remove_replaced_images(docker_client(), path, keep="")


@dataclass
class Plugin:
    name: str
    data_dir: Path
    volumes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(docker("plugin", "inspect", "-f", "{{.Id}}", self.name).stdout.strip())

    def pid(self) -> int | None:
        """The plugin's process on this host (its cgroup is named by the plugin ID)."""
        plugin_id = self.id
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if plugin_id in (proc / "cgroup").read_text():
                    return int(proc.name)
            except OSError:
                continue  # gone meanwhile
        return None

    def socket(self) -> str:
        """The plugin's socket as seen from this host."""
        return f"/run/docker/plugins/{self.id}/localvol.sock"

    def state(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "state.json").read_bytes())  # type: ignore[no-any-return]

    def listed(self) -> set[str]:
        """The volumes of this plugin as `docker volume ls` shows them."""
        out = docker("volume", "ls", "-q", "--filter", f"driver={self.name}").stdout
        return set(out.split())

    def volume(self, prefix: str = "v") -> str:
        """A fresh volume name, removed at teardown."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.volumes.append(name)
        return name

    def create_volume(self, *opts: str, prefix: str = "v") -> str:
        name = self.volume(prefix)
        args = ["volume", "create", "-d", self.name]
        for opt in opts:
            args += ["-o", opt]
        assert docker(*args, name).stdout.strip() == name
        return name


#: Several test sessions may share one daemon (pytest-xdist workers, people
#: working side by side). Each holds this lock shared for its whole run; a
#: test that restarts the daemon takes it exclusively, so it waits until no
#: other session is using the daemon, and none starts meanwhile: flock(2)
#: lets new shared holders in ahead of a waiting exclusive one (with sessions
#: overlapping, a restart waited for ever), so a session passes GATE (shared)
#: to take its share, and a restart holds GATE exclusively while it waits.
DAEMON_LOCK = Path(os.environ.get("DPK_E2E_LOCK", "/run/dpk-e2e.lock"))
GATE = DAEMON_LOCK.with_name(DAEMON_LOCK.name + ".gate")
_lock_fd: list[int] = []


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@pytest.fixture(scope="session", autouse=True)
def _daemon_in_use() -> Iterator[None]:
    fd = _open(DAEMON_LOCK)
    gate = _open(GATE)
    try:
        fcntl.flock(gate, fcntl.LOCK_SH)  # waits while a restart is pending
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(gate)
    _lock_fd.append(fd)
    try:
        yield
    finally:
        _lock_fd.remove(fd)
        os.close(fd)


def engine_restart() -> None:
    """Restart the daemon (scripts/engine restart, 10-15 s), once no other
    test session uses it; skipped where the daemon is not ours to restart,
    except under CI."""
    fd = _lock_fd[0] if _lock_fd else None
    gate = _open(GATE)
    if fd is not None:
        # Give up this session's share first: two sessions both waiting for
        # the exclusive lock while holding a share would wait for ever.
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(gate, fcntl.LOCK_EX)  # no new session from now on
        fcntl.flock(fd, fcntl.LOCK_EX)  # the running ones have finished
    try:
        proc = subprocess.run(
            [str(ROOT / "scripts" / "engine"), "restart"],
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        os.close(gate)  # lets new sessions in
    if proc.returncode != 0:
        message = f"cannot restart the daemon: {proc.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def remove_plugin(plugin: Plugin, keep_data: bool = False) -> None:
    """Remove the volumes a test made, the plugin, then its data directory,
    but only once the plugin is gone: dockerd 20.10 panics at start-up (nil
    pointer in the volume restore) when a plugin that holds volumes cannot be
    enabled because its mount source was deleted, e.g. by a teardown that ran
    while the daemon was down."""
    for volume in plugin.volumes:
        docker("volume", "rm", "-f", volume, check=False)
    removed = docker("plugin", "rm", "-f", plugin.name, check=False)
    if removed.returncode != 0:
        gone = docker("plugin", "inspect", plugin.name, check=False)
        if gone.returncode == 0 or "not found" not in gone.stderr:
            sys.stderr.write(f"kept {plugin.data_dir}: {plugin.name} may still exist\n")
            return
    if not keep_data:
        shutil.rmtree(plugin.data_dir, ignore_errors=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def extra_plugin(
    bundle: BuiltBundle,
    label: str,
    *,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> Iterator[Plugin]:
    """Another instance of the reference plugin, under a unique name with its
    own data directory (made unless given), removed with its volumes at the end.
    ``env`` adds variables to a copy of the bundle's config.json (test hooks
    that the real config does not offer)."""
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    name = f"dpk-e2e-{label}-{tag}/localvol:latest"
    data_dir = data_dir or Path(f"/var/tmp/dpk-e2e-{label}-{tag}")
    source = bundle.path
    variant = Path(f"/var/tmp/dpk-e2e-bundle-{label}-{tag}")
    if env:
        config = json.loads((bundle.path / "config.json").read_text())
        config["env"] += [{"name": k, "description": "test", "value": v} for k, v in env.items()]
        variant.mkdir()
        (variant / "config.json").write_text(json.dumps(config))
        # Hard links: a copy of the rootfs in no time and no space.
        subprocess.run(["cp", "-al", str(bundle.path / "rootfs"), str(variant)], check=True)
        source = variant
    engine = Engine(report=lambda line: None)
    plugin = Plugin(name, data_dir)
    try:
        engine.create(name, source)
        engine.set(name, [f"data.source={data_dir}"])
        engine.enable(name, timeout=30)
        yield plugin
    finally:
        shutil.rmtree(variant, ignore_errors=True)
        remove_plugin(plugin, keep_data=os.path.ismount(data_dir))


@pytest.fixture(scope="session")
def localvol(bundle: BuiltBundle) -> Iterator[Plugin]:
    """The reference plugin, created under a unique name and enabled, storing
    its volumes in a fresh host directory."""
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    name = f"dpk-e2e-{tag}/localvol:latest"
    data_dir = Path(f"/var/tmp/dpk-e2e-{tag}")
    engine = Engine(report=lambda line: None)
    plugin = Plugin(name, data_dir)
    engine.create(name, bundle.path)
    try:
        engine.set(name, [f"data.source={data_dir}"])
        engine.enable(name, timeout=30)  # creates the missing data_dir
        yield plugin
    finally:
        remove_plugin(plugin)


@contextlib.contextmanager
def reference_bundle(name: str) -> Iterator[Path]:
    """The bundle of the reference project ``reference/<name>/``, built by the
    real builder into a private directory, removed at the end."""
    from plugin.bundle.__main__ import main

    out = io.StringIO()
    path = Path(f"/var/tmp/dpk-e2e-bundle-{name}-{uuid.uuid4().hex[:8]}")
    try:
        project = ROOT / "reference" / name
        code = main(["--project", str(project), "--bundle", str(path), "build"], out=out)
        sys.stderr.write(out.getvalue())
        assert code == 0, f"build of {name} failed:\n{out.getvalue()}"
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def plugin_pid(plugin_id: str) -> int | None:
    """The process of a plugin on this host (its cgroup is named by its ID)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if plugin_id in (proc / "cgroup").read_text():
                return int(proc.name)
        except OSError:
            continue  # gone meanwhile
    return None
