"""The slim rootfs never drops what a plugin may import, and per-host
settings, on the real daemon, with the test plugin tests/fixtures/lazyvol:
its driver imports sqlite3, decimal and idna, loads libzstd with ctypes and
reads /etc/os-release only for options the slim step's probe never sends.

Tests run in file order on one plugin: lazy paths, typed settings and a
rebuild that keeps them, then a bad setting that stops enable.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plugin.bundle.__main__ import main

from .conftest import ROOT, TEST_IMAGE, docker

pytestmark = pytest.mark.e2e

FIXTURE = ROOT / "tests" / "fixtures" / "lazyvol"
LABEL = "io.docker-plugin-kit.bundle"


def _project(tmp: Path) -> Path:
    """A copy of the fixture project (a rebuild test edits its driver), with
    the reference plugin's wheelhouse when there is one: the same runtime
    pins, so nothing is downloaded."""
    shutil.copytree(FIXTURE, tmp, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = ROOT / "reference" / "localvol" / ".build" / "wheels"
    if wheels.is_dir():
        shutil.copytree(wheels, tmp / ".build" / "wheels")
    return tmp


@dataclass
class Lazy:
    project: Path
    name: str
    build_log: str
    volumes: list[str] = field(default_factory=list)

    @property
    def bundle(self) -> Path:
        return self.project / "rootfs-build"

    def run(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        code = main(
            ["--project", str(self.project / "plugin.toml"), "--name", self.name, *argv], out
        )
        return code, out.getvalue()

    def volume(self, *opts: str) -> dict[str, object]:
        """A new volume made with ``opts``; its status."""
        name = f"lazy-{uuid.uuid4().hex[:10]}"
        self.volumes.append(name)
        args = [x for opt in opts for x in ("-o", opt)]
        docker("volume", "create", "-d", self.name, *args, name)
        return json.loads(docker("volume", "inspect", name).stdout)[0]["Status"]  # type: ignore[no-any-return]

    def images(self) -> list[str]:
        """The images built for this bundle (the builder labels them)."""
        label = f"label={LABEL}={self.bundle}"
        return docker("images", "-q", "--no-trunc", "--filter", label).stdout.split()

    def info(self) -> dict[str, object]:
        return json.loads(docker("plugin", "inspect", self.name).stdout)[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def lazy(engine_ready: None) -> Iterator[Lazy]:
    """lazyvol built, created and enabled by `plugin`, under a unique name."""
    tag = uuid.uuid4().hex[:8]
    project = _project(Path(f"/var/tmp/dpk-e2e-lazyvol-{tag}"))
    plugin = Lazy(project, f"dpk-e2e-lazy-{tag}/lazyvol:latest", "")
    try:
        code, plugin.build_log = plugin.run("plugin")
        assert code == 0, plugin.build_log
        yield plugin
    finally:
        for volume in plugin.volumes:
            docker("volume", "rm", "-f", volume, check=False)
        docker("plugin", "rm", "-f", plugin.name, check=False)
        for image in plugin.images():  # tagged or not, only what this module built
            docker("image", "rm", "-f", image, check=False)
        shutil.rmtree(project, ignore_errors=True)


def test_the_slim_rootfs_holds_what_the_probe_never_saw(lazy: Lazy) -> None:
    trace = json.loads((lazy.bundle / ".slim-trace.json").read_text())
    # The walk-through never took the lazy paths...
    assert not {"sqlite3", "decimal", "idna"} & set(trace["modules"])
    assert not [f for f in trace["used"] if "libzstd" in f or "os-release" in f]
    # ... and yet all of it is in the slim rootfs, and imports there.
    assert {"sqlite3", "decimal", "idna", "ctypes", "zoneinfo"} <= set(trace["importable"])
    imported = [line for line in lazy.build_log.splitlines() if "importable modules import" in line]
    assert len(imported) == 1, lazy.build_log
    rootfs = lazy.bundle / "rootfs"
    assert list(rootfs.glob("usr/lib/*-linux-gnu/libsqlite3.so.0*"))
    assert list(rootfs.glob("usr/lib/*-linux-gnu/libzstd.so.1*"))  # [build] keep
    assert (rootfs / "etc" / "os-release").is_symlink()  # [build] keep, and its target
    assert (rootfs / "usr" / "lib" / "os-release").is_file()
    assert not list(rootfs.glob("usr/lib/python3*/test"))


def test_lazy_imports_work_through_the_daemon(lazy: Lazy) -> None:
    status = lazy.volume(
        "kind=sqlite", "quota=1.5G", "compress=zstd", "host=bücher.example", "distro=1"
    )
    assert status["kind"] == "sqlite" and str(status["sqlite"]).startswith("3.")
    assert status["quota_bytes"] == 1610612736
    assert isinstance(status["zstd"], int) and status["zstd"] > 10000
    assert status["host"] == "xn--bcher-kva.example"
    assert status["distro"] == "debian"
    (volume,) = lazy.volumes
    listing = docker("run", "--rm", "-v", f"{volume}:/d", TEST_IMAGE, "ls", "/d").stdout
    assert listing.split() == ["status.json", "volume.db"]


def test_typed_settings_and_a_rebuild_that_keeps_them(lazy: Lazy) -> None:
    env = {e["Name"]: e for e in lazy.info()["Config"]["Env"]}  # type: ignore[index]
    assert env["DEFAULT_SIZE"]["Value"] == "64m" and env["DEFAULT_SIZE"]["Settable"] == ["value"]
    assert env["FLAVOUR"]["Description"] == (
        "kind of a volume made without -o kind; one of plain, sqlite"
    )
    docker("plugin", "disable", "-f", lazy.name)
    docker("plugin", "set", lazy.name, "DEFAULT_SIZE=16m", "LABEL=host-a")
    docker("plugin", "enable", lazy.name)
    assert lazy.volume()["size"] == 16 << 20
    (old_image,) = lazy.images()
    # A one-line change of the driver, then `plugin` again: a new image, a new plugin.
    with (lazy.project / "lazyvol" / "driver.py").open("a") as f:
        f.write("# changed by test_slim\n")
    code, out = lazy.run("plugin")
    assert code == 0, out
    lines = out.splitlines()
    assert "    keeping this host's settings: DEFAULT_SIZE=16m LABEL=host-a" in lines
    assert f"    removed the image it replaces ({old_image[7:19]})" in lines
    assert len(lazy.images()) == 1 and lazy.images() != [old_image]  # none left dangling
    status = lazy.volume("kind=plain")
    assert (status["size"], status["label"]) == (16 << 20, "host-a")


def test_a_bad_setting_stops_enable_with_its_name_and_value(lazy: Lazy) -> None:
    docker("plugin", "disable", "-f", lazy.name)
    docker("plugin", "set", lazy.name, "DEFAULT_SIZE=16x")
    code, out = lazy.run("enable")
    assert code == 1
    plugin_id = lazy.info()["Id"]
    assert out.splitlines()[-2:] == [
        f'error: enable {lazy.name}: the plugin stopped at start: bad setting DEFAULT_SIZE="16x": '
        "not a size (bytes, or a whole number with k, m, g or t, such as 64m); change it with "
        f"docker plugin set {lazy.name} DEFAULT_SIZE=VALUE",
        f"  (the daemon said: dial unix /run/docker/plugins/{plugin_id}/lazyvol.sock: connect: "
        "no such file or directory)",
    ]
    # Disabled, not restarting: a set (allowed only on a disabled plugin) works.
    assert lazy.info()["Enabled"] is False
    docker("plugin", "set", lazy.name, "DEFAULT_SIZE=32m")
    code, out = lazy.run("enable")
    assert code == 0, out
    assert lazy.volume()["size"] == 32 << 20
