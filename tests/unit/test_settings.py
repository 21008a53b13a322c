"""Typed per-host settings: declaration, config.json entries, parsing, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugin import settings as s
from plugin._requirements import requirements
from plugin.manifest import Env
from plugin.settings import SettingsError
from plugin.volume import VolumeDriver


class Tmp(s.Settings):
    default_size = s.size("64m", "size of a volume created without -o size")
    max_volumes = s.integer(100, "volumes at most", minimum=1, maximum=1000)
    sync = s.boolean(False, "fsync every write")
    root = s.path("/mnt/volumes", "where volumes are mounted")
    flavour = s.choice(["fast", "safe"], "safe", "how to mount")
    token = s.string(None, "API token", name="TMP_TOKEN")


def test_values_are_parsed_to_their_types() -> None:
    values = Tmp.parse(
        {
            "DEFAULT_SIZE": "16m",
            "MAX_VOLUMES": "12",
            "SYNC": "Yes",
            "ROOT": "/srv//vols/",
            "FLAVOUR": "FAST",
            "TMP_TOKEN": "t0k",
        }
    )
    assert values.default_size == 16 << 20
    assert values.max_volumes == 12
    assert values.sync is True
    assert values.root == "/srv/vols"
    assert values.flavour == "fast"
    assert values.token == "t0k"


def test_missing_settings_take_their_defaults() -> None:
    # The daemon does not add the defaults of settings new in an upgraded
    # version: the declared default applies.
    values = Tmp.parse({"TMP_TOKEN": ""})
    assert (values.default_size, values.max_volumes, values.sync) == (64 << 20, 100, False)
    assert (values.root, values.flavour, values.token) == ("/mnt/volumes", "safe", "")


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("512", 512), ("4k", 4096), ("64M", 64 << 20), ("1GiB", 1 << 30), ("2 tb", 2 << 40)],
)
def test_sizes(text: str, size: int) -> None:
    assert Tmp.parse({"DEFAULT_SIZE": text, "TMP_TOKEN": ""}).default_size == size


@pytest.mark.parametrize(("text", "value"), [("on", True), ("1", True), ("OFF", False)])
def test_booleans(text: str, value: bool) -> None:
    assert Tmp.parse({"SYNC": text, "TMP_TOKEN": ""}).sync is value


def test_every_bad_value_is_named_with_the_setting_and_the_value() -> None:
    with pytest.raises(SettingsError) as exc:
        Tmp.parse(
            {
                "DEFAULT_SIZE": "16x",
                "MAX_VOLUMES": "0",
                "SYNC": "maybe",
                "ROOT": "vols",
                "FLAVOUR": "loud",
            }
        )
    assert exc.value.problems == [
        'bad setting DEFAULT_SIZE="16x": not a size (bytes, or a whole number with k, m, g or '
        "t, such as 64m); change it with docker plugin set PLUGIN DEFAULT_SIZE=VALUE",
        'bad setting MAX_VOLUMES="0": not an integer from 1 to 1000; change it with docker '
        "plugin set PLUGIN MAX_VOLUMES=VALUE",
        'bad setting SYNC="maybe": not true or false; change it with docker plugin set PLUGIN '
        "SYNC=VALUE",
        'bad setting ROOT="vols": not an absolute path; change it with docker plugin set '
        "PLUGIN ROOT=VALUE",
        'bad setting FLAVOUR="loud": not one of fast, safe; change it with docker plugin set '
        "PLUGIN FLAVOUR=VALUE",
        "setting TMP_TOKEN is not set (text, no default); set it with docker plugin set "
        "PLUGIN TMP_TOKEN=VALUE",
    ]
    assert str(exc.value) == "; ".join(exc.value.problems)
    assert isinstance(exc.value, ValueError)  # python -m plugin reports it in one line


@pytest.mark.parametrize("bad", ["1.5", "12abc", "", " ", "1_000", "0x10"])
def test_integers_are_plain_decimal(bad: str) -> None:
    with pytest.raises(SettingsError, match=f'bad setting MAX_VOLUMES="{bad}": not an integer'):
        Tmp.parse({"MAX_VOLUMES": bad, "TMP_TOKEN": ""})


def test_a_long_bad_value_is_cut_in_the_message() -> None:
    with pytest.raises(SettingsError) as exc:
        Tmp.parse({"ROOT": "x" * 100, "TMP_TOKEN": ""})
    assert f'ROOT="{"x" * 64}...": not an absolute path' in str(exc.value)


def test_the_declaration_renders_the_config_env_entries() -> None:
    assert Tmp.env() == (
        Env(
            "DEFAULT_SIZE",
            "64m",
            "size of a volume created without -o size; a size: bytes, or a whole number with "
            "k, m, g or t, such as 64m",
        ),
        Env("MAX_VOLUMES", "100", "volumes at most; an integer from 1 to 1000"),
        Env("SYNC", "false", "fsync every write; true or false"),
        Env("ROOT", "/mnt/volumes", "where volumes are mounted; an absolute path"),
        Env("FLAVOUR", "safe", "how to mount; one of fast, safe"),
        Env("TMP_TOKEN", None, "API token; text, required (no default)"),
    )


def test_a_drivers_settings_render_with_its_other_declarations() -> None:
    class Volumes(VolumeDriver):
        settings = Tmp
        env = (Env("EXTRA", "1", "an untyped variable"),)

    names = [e.name for e in requirements([Volumes]).env]
    assert names == [
        "EXTRA",
        "DEFAULT_SIZE",
        "MAX_VOLUMES",
        "SYNC",
        "ROOT",
        "FLAVOUR",
        "TMP_TOKEN",
        "LOG_LEVEL",
    ]


def test_two_drivers_may_share_one_declaration_but_not_disagree() -> None:
    class A(VolumeDriver):
        settings = Tmp

    class B(VolumeDriver):
        settings = Tmp

    class Other(s.Settings):
        default_size = s.size("1g")

    class C(VolumeDriver):
        settings = Other

    assert len(requirements([A, B]).env) == len(Tmp.declared()) + 1  # and LOG_LEVEL
    with pytest.raises(ValueError, match="env 'DEFAULT_SIZE' is declared differently by A"):
        requirements([A, C])


def test_declarations_are_checked_when_the_class_is_made() -> None:
    with pytest.raises(ValueError, match=r"default '64q' of a size setting is not a size \(bytes"):
        s.size("64q")
    with pytest.raises(ValueError, match="default '3' of a choice setting is not one of a, b"):
        s.choice(["a", "b"], "3")
    with pytest.raises(ValueError, match=r"'my\.size' cannot be an environment variable"):

        class Dotted(s.Settings):
            size = s.size("1m", name="my.size")

    with pytest.raises(ValueError, match="Twice: a and b are both named A"):

        class Twice(s.Settings):
            a = s.string("x")
            b = s.string("y", name="A")


def test_subclasses_add_settings_after_their_bases() -> None:
    class More(Tmp):
        extra = s.boolean(True)

    assert [x.name for x in More.declared()][-2:] == ["TMP_TOKEN", "EXTRA"]
    assert More.parse({"TMP_TOKEN": ""}).extra is True


def test_check_reports_the_problems_of_every_class_once() -> None:
    class Other(s.Settings):
        level = s.choice(["a", "b"], "a")

    with pytest.raises(SettingsError) as exc:
        s.check([Tmp, Other, Tmp], {"LEVEL": "c"})
    assert exc.value.problems == [
        "setting TMP_TOKEN is not set (text, no default); set it with docker plugin set "
        "PLUGIN TMP_TOKEN=VALUE",
        'bad setting LEVEL="c": not one of a, b; change it with docker plugin set PLUGIN '
        "LEVEL=VALUE",
    ]
    s.check([Tmp, Other], {"TMP_TOKEN": "x"})


# --- at start: python -m plugin -----------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


class SizedVolumes(VolumeDriver):
    """A driver that reads its settings when it is made."""

    settings = Tmp

    def __init__(self) -> None:
        self.config = Tmp.from_env()

    def create(self, req: Any) -> None: ...
    def remove(self, req: Any) -> None: ...
    def mount(self, req: Any) -> Any: ...
    def unmount(self, req: Any) -> None: ...
    def path(self, req: Any) -> Any: ...
    def get(self, req: Any) -> Any: ...
    def list(self) -> Any: ...


def start(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m plugin`` with this module's driver, as the daemon runs it."""
    environ = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}
    socket = str(tmp_path / "s.sock")
    return subprocess.run(
        [sys.executable, "-m", "plugin", "--path", socket, *extra, f"{__name__}:SizedVolumes"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_bad_setting_stops_the_plugin_at_start_in_one_line(tmp_path: Path) -> None:
    proc = start(tmp_path, {"DEFAULT_SIZE": "16x", "TMP_TOKEN": "t"})
    assert proc.returncode == 1
    assert proc.stderr == (
        'plugin: cannot start: bad setting DEFAULT_SIZE="16x": not a size (bytes, or a whole '
        "number with k, m, g or t, such as 64m); change it with docker plugin set PLUGIN "
        "DEFAULT_SIZE=VALUE\n"
    )
    assert list(tmp_path.iterdir()) == []  # never listened


def test_a_bad_log_level_stops_it_too_unless_the_command_line_sets_one(tmp_path: Path) -> None:
    proc = start(tmp_path, {"LOG_LEVEL": "loud", "TMP_TOKEN": "t", "SYNC": "perhaps"})
    assert proc.returncode == 1
    assert proc.stderr == (
        'plugin: cannot start: bad setting LOG_LEVEL="loud": not one of debug, info, warning, '
        "error, critical; change it with docker plugin set PLUGIN LOG_LEVEL=VALUE; "
        'bad setting SYNC="perhaps": not true or false; change it with docker plugin set '
        "PLUGIN SYNC=VALUE\n"
    )
    proc = start(tmp_path, {"LOG_LEVEL": "loud", "SYNC": "perhaps"}, "--log-level", "debug")
    assert proc.returncode == 1
    assert proc.stderr.startswith('plugin: cannot start: bad setting SYNC="perhaps"')


def test_the_driver_gets_the_parsed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_SIZE", "2g")
    monkeypatch.setenv("TMP_TOKEN", "abc")
    monkeypatch.setenv("FLAVOUR", "Fast")
    driver = SizedVolumes()
    assert (driver.config.default_size, driver.config.flavour) == (2 << 30, "fast")
    assert driver.config == Tmp.parse(os.environ)
