"""End-to-end fixtures: the reference plugin built and enabled on the real daemon.

Each session builds the bundle once and creates the plugin under a unique
name with its own data directory; teardown removes only what it made. With
no daemon the tests are skipped locally, but fail under CI (CI=true): the
end-to-end tests never skip there.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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
    code = main(["--project", str(ROOT / "plugin.toml"), "--bundle", str(path), "build"], out=out)
    seconds = time.monotonic() - start
    sys.stderr.write(out.getvalue())
    assert code == 0, f"build failed:\n{out.getvalue()}"
    yield BuiltBundle(path, out.getvalue(), seconds)
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Plugin:
    name: str
    data_dir: Path
    volumes: list[str] = field(default_factory=list)

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
        for volume in plugin.volumes:
            docker("volume", "rm", "-f", volume, check=False)
        docker("plugin", "rm", "-f", name, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
