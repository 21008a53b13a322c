"""A driver whose dependencies are not on the build host: its declarations
are read where it imports (the built image), or the error says what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugin._requirements import requirements
from plugin.bundle import BuildError, load_project
from plugin.bundle._describe import describe_in_image, stand_ins
from plugin.bundle._rootfs import DRIVERS_FILE, MissingOnHost, load_drivers
from plugin.bundle._slim import probe_calls
from plugin.volume import VolumeDriver

ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import fancylib  # only in the plugin's rootfs

from plugin import Env, Mount, settings
from plugin.volume import VolumeDriver


class FancySettings(settings.Settings):
    default_size = settings.size("64m", "size of a new volume")


class Fancy(VolumeDriver):
    settings = FancySettings
    mounts = (Mount("state", destination="/state", source="/var/lib/fancy"),)
    env = (Env("SPEED", fancylib.DEFAULT_SPEED, "how fast"),)
    propagated_mount = "/mnt/fancy"
    linux_capabilities = ("CAP_SYS_ADMIN",)
    scope = "global"

    def create(self, req): ...
    def remove(self, req): ...
    def mount(self, req): ...
    def unmount(self, req): ...
    def path(self, req): ...
    def get(self, req): ...
    def list(self): ...
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "fancy"
    (root / "fancyvol").mkdir(parents=True)
    (root / "fancyvol" / "__init__.py").write_text("")
    (root / "fancyvol" / "driver.py").write_text(DRIVER)
    (root / "plugin.toml").write_text(
        '[plugin]\nname = "fancy"\ndrivers = ["fancyvol.driver:Fancy"]\n'
        '[build]\nrequirements = ["fancylib==1.0"]\n'
    )
    # What the image has and this host does not: the dependency.
    (tmp_path / "site" / "fancylib").mkdir(parents=True)
    (tmp_path / "site" / "fancylib" / "__init__.py").write_text('DEFAULT_SPEED = "11"\n')
    return root


class Image:
    """Stands in for the docker client: runs the script as the image would,
    with the project's packages and the dependency importable."""

    def __init__(self, root: Path, site: Path | None) -> None:
        self.root, self.site = root, site
        self.containers = self

    def run(self, image: str, command: list[str], **kwargs: Any) -> bytes:
        assert kwargs["entrypoint"] == [] and kwargs["network_mode"] == "none"
        paths = [str(ROOT), *([str(self.site)] if self.site else [])]
        proc = subprocess.run(
            [sys.executable, *command[1:]],
            cwd=self.root,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
            capture_output=True,
        )
        return proc.stdout + proc.stderr


def test_a_missing_dependency_is_named(project: Path) -> None:
    with pytest.raises(MissingOnHost) as exc:
        load_drivers(load_project(project))
    assert exc.value.module == "fancylib"
    assert str(exc.value) == (
        "plugin.drivers: cannot load fancyvol.driver:Fancy here: No module named 'fancylib' "
        "(a dependency of the driver, not installed on this host: `build` reads the drivers in "
        "the built image, where plugin.toml's [build] requirements are installed)"
    )


def test_the_declarations_read_in_the_image_stand_in(project: Path, tmp_path: Path) -> None:
    described = describe_in_image(
        Image(project, tmp_path / "site"), "img", "python3", ["fancyvol.driver:Fancy"]
    )
    [fancy] = stand_ins(described)
    assert issubclass(fancy, VolumeDriver)
    assert (fancy.__name__, fancy.__module__, fancy.scope) == ("Fancy", "fancyvol.driver", "global")
    reqs = requirements([fancy])
    assert [(m.name, m.source) for m in reqs.mounts] == [("state", "/var/lib/fancy")]
    assert [(e.name, e.value) for e in reqs.env] == [
        ("SPEED", "11"),
        ("DEFAULT_SIZE", "64m"),
        ("LOG_LEVEL", "info"),
    ]
    assert reqs == requirements([_real(project, tmp_path)])
    assert reqs.propagated_mount == "/mnt/fancy"
    assert reqs.linux_capabilities == ("CAP_SYS_ADMIN",)
    # The slim probe drives the calls of the type, as for the real class.
    assert probe_calls([fancy]) == probe_calls([_real(project, tmp_path)])
    # Saved next to the bundle, they serve later commands (render, --strict).
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / DRIVERS_FILE).write_text(json.dumps(described))
    [again] = load_drivers(load_project(project), bundle)
    assert requirements([again]) == reqs


def _real(project: Path, tmp_path: Path) -> type[VolumeDriver]:
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        [cls] = load_drivers(load_project(project))
    finally:
        sys.path.remove(str(tmp_path / "site"))
        sys.modules.pop("fancyvol.driver", None)
        sys.modules.pop("fancyvol", None)
        sys.modules.pop("fancylib", None)
    assert issubclass(cls, VolumeDriver)
    return cls


def test_missing_in_the_image_too(project: Path) -> None:
    described = describe_in_image(Image(project, None), "img", "python3", ["fancyvol.driver:Fancy"])
    assert described == {
        "error": "fancyvol.driver:Fancy: ModuleNotFoundError: No module named 'fancylib'"
    }
    with pytest.raises(BuildError) as exc:
        stand_ins(described)
    assert str(exc.value) == (
        "plugin.drivers: cannot load fancyvol.driver:Fancy: ModuleNotFoundError: "
        "No module named 'fancylib'"
    )


def test_a_missing_module_of_the_project_itself_is_no_dependency(project: Path) -> None:
    (project / "plugin.toml").write_text(
        '[plugin]\nname = "fancy"\ndrivers = ["fancyvol.nodriver:Fancy"]\n'
    )
    with pytest.raises(BuildError) as exc:
        load_drivers(load_project(project))
    assert not isinstance(exc.value, MissingOnHost)
    assert str(exc.value) == (
        "plugin.drivers: cannot load fancyvol.nodriver:Fancy: ValueError: driver "
        "'fancyvol.nodriver:Fancy': no module named 'fancyvol.nodriver'"
    )
