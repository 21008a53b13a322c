"""An author's first plugin, as the README tells it, outside the checkout.

The kit is installed from a wheel built from this checkout into a fresh
virtual environment (its dependencies come from the host's site packages, so
no index is needed); nothing of the checkout is on ``sys.path``. Then, for
every type ``init`` knows: ``init``, ``make plugin``, ``make test`` in the new
project, and the plugin used through the daemon. A project whose driver
needs a package this host does not have is built too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugin.bundle._init import TYPES

from .conftest import ROOT, TEST_IMAGE, docker

pytestmark = pytest.mark.e2e


@dataclass
class Kit:
    venv: Path
    env: dict[str, str]
    work: Path

    def run(self, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="session")
def kit(engine_ready: None) -> Iterator[Kit]:
    """docker-plugin-kit installed from a wheel of this checkout, in a venv."""
    work = Path(f"/var/tmp/dpk-e2e-init-{uuid.uuid4().hex[:8]}")
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "plugin", src / "plugin", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        built = subprocess.run(
            # No build isolation: setuptools and wheel (a test dependency) are
            # here; no index is needed.
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             str(src), "-w", str(work / "dist")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        [wheel] = (work / "dist").glob("docker_plugin_kit-*.whl")
        venv = work / "venv"
        # No pip of its own (ensurepip takes seconds): the host's pip installs into it.
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
            check=True,
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        env["VIRTUAL_ENV"] = str(venv)
        kit = Kit(venv, env, work)
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "--quiet", "--no-index", f"{wheel}[bundle]"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        where = kit.run("python", "-c", "import plugin, sys; print(plugin.__file__)", cwd=work)
        assert where.stdout.startswith(f"{venv}/lib/"), where.stdout + where.stderr
        yield kit
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Made:
    root: Path
    name: str
    init_to_enabled: float


def _use_volume(name: str) -> None:
    volume = f"v-{uuid.uuid4().hex[:8]}"
    plugin_id = docker("plugin", "inspect", "-f", "{{.Id}}", f"{name}:latest").stdout.strip()
    # The skeleton keeps each volume as a directory of its propagated mount.
    data = Path(f"/var/lib/docker/plugins/{plugin_id}/propagated-mount/{volume}")
    try:
        assert docker("volume", "create", "-d", name, volume).stdout.strip() == volume
        script = "echo hello > /data/hi && cat /data/hi"
        out = docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "sh", "-c", script)
        assert out.stdout == "hello\n"
        again = docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "cat", "/data/hi")
        assert again.stdout == "hello\n"
        assert (data / "hi").read_text() == "hello\n"
        docker("volume", "rm", volume)
        assert not data.exists()
    finally:
        docker("volume", "rm", "-f", volume, check=False)


#: How each type's plugin is used through the daemon; a type init knows
#: needs one here.
USE: dict[str, Callable[[str], None]] = {"volume": _use_volume}


@contextlib.contextmanager
def make(kit: Kit, kind: str, tweak: Callable[[Path], None] | None = None) -> Iterator[Made]:
    """init a project of ``kind`` under a unique name, then ``make plugin``;
    removes the plugin, its image and the project at the end."""
    tag = uuid.uuid4().hex[:8]
    short = f"my{kind}"[:12]
    name = f"dpk-e2e-{tag}/{short}"
    root = kit.work / f"{short}-{tag}"
    start = time.monotonic()
    try:
        made = kit.run("docker-plugin-kit", "init", str(root), "--type", kind, "--name", name,
                       cwd=kit.work)  # fmt: skip
        assert made.returncode == 0, made.stderr
        if tweak is not None:
            tweak(root)
        built = kit.run("make", "plugin", cwd=root)
        assert built.returncode == 0, built.stdout + built.stderr
        assert f"plugin {name}:latest is enabled." in built.stderr
        yield Made(root, name, time.monotonic() - start)
    finally:
        docker("plugin", "rm", "-f", f"{name}:latest", check=False)
        docker("image", "rm", "-f", f"{name}-rootfs:build", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_init_make_plugin_make_test_and_use_it(kit: Kit, kind: str, tally: object) -> None:
    assert kind in USE, f"add how a {kind} plugin is used to USE"
    with make(kit, kind) as made:
        tests = kit.run("make", "test", cwd=made.root)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert " passed" in tests.stdout.splitlines()[-1]
        info = docker("plugin", "inspect", "-f", "{{.Enabled}}", f"{made.name}:latest")
        assert info.stdout.strip() == "true"
        USE[kind](made.name)
        tally.note(  # type: ignore[attr-defined]
            f"init --type {kind} to an enabled plugin: {made.init_to_enabled:.1f} s"
        )


def _needs_humanize(root: Path) -> None:
    """A driver that imports a package this host does not have."""
    toml = root / "plugin.toml"
    toml.write_text(toml.read_text().replace("requirements = []", 'requirements = ["humanize"]'))
    driver = root / "myvolume" / "driver.py"
    text = driver.read_text().replace("import logging\n", "import logging\n\nimport humanize\n")
    text = text.replace(
        'status={"mounts": mounted}', 'status={"mounts": humanize.apnumber(mounted)}'
    )
    driver.write_text(text)


def test_a_dependency_only_in_the_rootfs(kit: Kit) -> None:
    missing = kit.run("python", "-c", "import humanize", cwd=kit.work)
    assert missing.returncode != 0, "humanize is installed here: pick another package"
    with make(kit, "volume", _needs_humanize) as made:
        log = (made.root / "rootfs-build" / ".drivers.json").read_text()
        assert '"MyvolumeVolumes"' in log
        volume = f"v-{uuid.uuid4().hex[:8]}"
        try:
            docker("volume", "create", "-d", made.name, volume)
            status = docker("volume", "inspect", "-f", "{{.Status.mounts}}", volume)
            assert status.stdout.strip() == "zero"
        finally:
            docker("volume", "rm", "-f", volume, check=False)
