"""End-to-end fixtures: the reference plugins built and enabled on the real daemon.

Bundles are built once per content and shared by every test session
(``built_bundle``: pytest-xdist workers, people side by side); each session
creates its plugins under unique names with their own data directories, and
teardown removes only what it made. With no daemon the tests are skipped
locally, but fail under CI (CI=true): the end-to-end tests never skip there.

Sessions share one daemon, which no test restarts or reconfigures: a test
that does so starts a private daemon of its own (private_daemon.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .private_daemon import (  # noqa: F401 (fixtures)
    PrivateDaemon,
    own_daemon,
    private_daemon,
    push_daemon,
    push_daemon_session,
)

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
    remove_stale_sockets()
    if not _daemon_up():
        message = "no Docker daemon answers (run scripts/setup)"
        if os.environ.get("CI"):
            pytest.fail(message + ": end-to-end tests never skip in CI")
        pytest.skip(message)
    if docker("image", "inspect", TEST_IMAGE, check=False).returncode != 0:
        pytest.fail(f"test image {TEST_IMAGE} missing (run scripts/setup)")


def remove_stale_sockets(directory: Path = Path("/run/docker/plugins")) -> list[Path]:
    """Remove the legacy plugins' sockets a killed test session left behind
    (``dpk-e2e-*.sock`` that nothing listens on); what was removed.

    dockerd scans that directory for legacy plugins whatever daemon the test
    used, and keeps every one it found: once its socket is dead, each volume
    call that asks all drivers (``volume ls``, ``inspect`` of an unknown
    name) dials it for 15 s, and every later test slows down."""
    removed = []
    for path in sorted(directory.glob("dpk-e2e-*.sock")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
                removed.append(path)
            except OSError:
                pass
    return removed


@dataclass
class BuiltBundle:
    path: Path
    build_log: str
    seconds: float


#: Built bundles, shared by every session on this host: one directory per
#: project (and architecture), each holding the builder's own bundle
#: (``work/``, rebuilt in place: the builder's stamps make an unchanged
#: project's rebuild a matter of a second) and immutable snapshots of it
#: (``bundle-<digest>/``, what tests get), under a file lock.
BUNDLES = Path(os.environ.get("DPK_E2E_BUNDLES", "/var/tmp/dpk-e2e-bundles"))
#: A snapshot no session has used for this long is removed.
BUNDLE_TTL = 6 * 3600
_built: dict[tuple[Path, str | None], BuiltBundle] = {}


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_once(project: str | Path, arch: str | None = None) -> BuiltBundle:
    """The bundle of ``project`` (a directory with plugin.toml, or the file),
    built by the real builder once per content and shared: within a session
    it is built once; across sessions and pytest-xdist workers, the first
    builds and the others find it built (the builder's own stamps decide
    whether anything changed, under a lock per project). The directory
    returned never changes and must not be changed: a test that needs
    another config makes a variant of its own (``copy_rootfs`` and a
    config.json of its own, as ``extra_plugin`` does)."""
    from plugin.bundle.__main__ import main

    project = Path(project).resolve()
    if project.name == "plugin.toml":
        project = project.parent
    if (project, arch) in _built:
        return _built[project, arch]
    where = hashlib.sha256(str(project).encode()).hexdigest()[:10]
    home = BUNDLES / f"{project.name}{'-' + arch if arch else ''}-{where}"
    home.mkdir(parents=True, exist_ok=True)
    work = home / "work"
    with _flocked(home / "lock"):
        out = io.StringIO()
        start = time.monotonic()
        argv = ["--project", str(project), "--bundle", str(work)]
        code = main([*argv, *(["--arch", arch] if arch else []), "build"], out=out)
        seconds = time.monotonic() - start
        sys.stderr.write(out.getvalue())
        assert code == 0, f"build of {project} failed:\n{out.getvalue()}"
        # What the bundle is: its config and what its rootfs was made from.
        digest = hashlib.sha256()
        for name in ("config.json", ".rootfs-stamp.json", ".drivers.json"):
            if (work / name).exists():
                digest.update(name.encode() + b"\0" + (work / name).read_bytes())
        snapshot = home / f"bundle-{digest.hexdigest()[:16]}"
        for old in home.glob(".tmp-*"):  # from a session that died copying
            shutil.rmtree(old, ignore_errors=True)
        if not snapshot.exists():
            tmp = home / f".tmp-{uuid.uuid4().hex[:8]}"
            subprocess.run(["cp", "-a", "--reflink=auto", str(work), str(tmp)], check=True)
            tmp.rename(snapshot)
        # When it was last used, beside it (a change of the directory itself
        # would fail another session's tar of it: "file changed as we read it").
        Path(f"{snapshot}.used").touch()
        for old in home.glob("bundle-*.used"):
            if time.time() - old.stat().st_mtime > BUNDLE_TTL:
                shutil.rmtree(str(old)[: -len(".used")], ignore_errors=True)
                old.unlink()
    built = _built[project, arch] = BuiltBundle(snapshot, out.getvalue(), seconds)
    return built


def built_bundle(project: str | Path, arch: str | None = None) -> Path:
    """The directory of ``project``'s bundle (config.json + rootfs/), built
    once per content and shared (see ``build_once``); never write into it."""
    return build_once(project, arch).path


@pytest.fixture(scope="session")
def bundle(engine_ready: None) -> BuiltBundle:
    """The bundle of the reference volume plugin (reference/localvol)."""
    return build_once(ROOT / "reference" / "localvol")


def copy_rootfs(bundle: Path, variant: Path) -> None:
    """Copy ``bundle``/rootfs into ``variant`` (a bundle of the test's own).
    Not hard links: a link made while another session packs the bundle
    (``plugin create``) changes the files' ctime, and tar fails with "file
    changed as we read it"."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(bundle / "rootfs"), str(variant)], check=True)


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


E2E = Path(__file__).resolve().parent


#: The e2e files, slowest first (measured on the test command's run): each
#: process takes the next file when it is done with one, so the slow ones
#: start first and none starts last. Files not named come after, by name.
SLOWEST_FIRST = (
    "test_init.py",
    "test_publish.py",
    "test_logging.py",
    "test_netipam.py",
    "test_authz.py",
    "test_faults.py",
    "test_localvol.py",
    "test_secrets.py",
    "test_load.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``, as scripts/test runs them):
    the tests of a file run in one process, in file order (modules share
    plugins and state from test to test), unless the module says
    ``INDEPENDENT_TESTS = True``: then each of its tests may run in any
    process; a test marked with an ``xdist_group`` of its own (one that
    shares nothing with its file's other tests) runs in that group. Files run
    slowest first (SLOWEST_FIRST)."""

    def rank(item: pytest.Item) -> tuple[int, str]:
        if not item.path.is_relative_to(E2E):
            return (-1, "")
        name = item.path.name
        return (SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST), name)

    items.sort(key=rank)  # stable: each file's own order is kept
    for item in items:
        module = getattr(item, "module", None)
        if (
            item.path.is_relative_to(E2E)
            and not getattr(module, "INDEPENDENT_TESTS", False)
            and item.get_closest_marker("xdist_group") is None
        ):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def remove_plugin(plugin: Plugin, keep_data: bool = False) -> None:
    """Remove the volumes a test made, the plugin, then its data directory,
    but only once the plugin is gone: dockerd 20.10 panics at start-up (nil
    pointer in the volume restore) when a plugin that holds volumes cannot be
    enabled because its mount source was deleted, e.g. by a teardown that ran
    while the daemon was down."""
    names = plugin.volumes
    enabled = docker("plugin", "inspect", "-f", "{{.Enabled}}", plugin.name, check=False)
    if names and enabled.stdout.strip() == "true":
        # It lists its volumes: remove only those left (the daemon asks every
        # volume driver about a name it does not know, a dead one for 15 s).
        names = sorted(set(names) & plugin.listed())
    for volume in names:
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
        copy_rootfs(bundle.path, variant)
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
    """The bundle of the reference project ``reference/<name>/`` (see
    ``built_bundle``: built once per content, shared, never written into)."""
    yield built_bundle(ROOT / "reference" / name)


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
