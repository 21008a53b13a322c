"""The slim step's pure parts: the walk-through, the entrypoint, the comparison,
and the probe's ELF reader (run on this host's own interpreter)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from localvol.driver import LocalVolumes

from plugin.bundle._errors import BuildError
from plugin.bundle._slim import PROBE, _interpreter, compare, probe_args, probe_calls
from plugin.volume import VolumeDriver


def test_the_walk_through_calls_everything_twice_creating_first_removing_last() -> None:
    calls, target = probe_calls([LocalVolumes])
    assert calls[0] == ["POST", "/Plugin.Activate", ""]
    volume = [c for c in calls if c[0] == "POST" and c[2].endswith("\n")][:16]
    paths = [c[1] for c in volume]
    assert paths[:8] == paths[8:]  # two passes
    assert paths[0] == "/VolumeDriver.Create" and paths[7] == "/VolumeDriver.Remove"
    assert sorted(paths[:8]) == sorted(f"/VolumeDriver.{e.name}" for e in VolumeDriver.endpoints)
    bodies = {c[1]: json.loads(c[2]) for c in volume}
    assert bodies["/VolumeDriver.Create"] == {"Name": "dpk-probe", "Opts": {}}
    assert bodies["/VolumeDriver.Mount"] == {"Name": "dpk-probe", "ID": "dpk-probe"}
    assert bodies["/VolumeDriver.List"] == {}
    # The SDK's error paths: bad JSON, wrong types, invalid UTF-8, a trailing
    # slash (404), another method (405), an unknown call.
    assert target == "/VolumeDriver.Create"
    errors = calls[17:]
    assert ["POST", target, "{not json"] in errors
    assert ["POST", target, '"\xff\xfe"'] in errors
    assert ["POST", target + "/", "{}"] in errors
    assert ["GET", "/VolumeDriver.Create", ""] in errors
    assert calls[-1] == ["POST", "/NoSuch.Call", "{}"]


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        (["/usr/bin/python3", "-u", "-m", "plugin", "--socket", "s"], (["-u"], True, "plugin")),
        (
            ["python3", "-X", "importtime", "-I", "app.py", "x"],
            (["-X", "importtime", "-I"], False, "app.py"),
        ),
    ],
)
def test_the_entrypoint_is_split_like_the_interpreter_does(
    entrypoint: list[str], expected: tuple[Any, ...]
) -> None:
    assert _interpreter(entrypoint)[:3] == expected


def test_only_python_entrypoints_can_be_slimmed() -> None:
    with pytest.raises(BuildError, match="not a Python interpreter"):
        _interpreter(["/docker-volume-sshfs"])
    with pytest.raises(BuildError, match="cannot tell what"):
        _interpreter(["python3", "-c", "print()"])


def test_probe_args_follow_the_config() -> None:
    config = {
        "entrypoint": ["/usr/bin/python3", "-u", "-m", "plugin", "--socket", "lv.sock", "r:D"],
        "interface": {"socket": "lv.sock", "types": ["docker.volumedriver/1.0"]},
        "mounts": [{"name": "data", "destination": "/data"}],
        "propagatedMount": "/mnt/volumes",
        "args": {"value": ["--log-level", "debug"]},
    }
    args = probe_args(config, [LocalVolumes], ["plugin", "reference"], "trace")
    assert args["module"] is True and args["run"] == "plugin"
    assert args["args"] == ["--socket", "lv.sock", "r:D", "--log-level", "debug"]
    assert args["socket"] == "/run/docker/plugins/lv.sock"
    assert args["dirs"] == ["/run/docker/plugins", "/data", "/mnt/volumes"]
    assert {"/data", "/mnt/volumes", "/proc", "/tmp"} <= set(args["skip"])


def _report(modules: list[str], answers: list[Any], stderr: str = "") -> dict[str, Any]:
    return {"modules": modules, "answers": answers, "stderr": stderr}


def test_compare_names_what_the_slim_rootfs_does_differently() -> None:
    ok = [["POST", "/VolumeDriver.Get", [200, '{"Volume": {"CreatedAt": "1"}}']]]
    same = [["POST", "/VolumeDriver.Get", [200, '{"Volume": {"CreatedAt": "2"}}']]]
    compare(_report(["a", "b"], ok), _report(["b", "a"], same))  # times may differ
    with pytest.raises(BuildError, match="modules not loaded: b"):
        compare(_report(["a", "b"], ok), _report(["a"], ok))
    failed = [["POST", "/VolumeDriver.Get", [500, '{"Err": "unexpected ImportError"}']]]
    with pytest.raises(BuildError, match="different answers"):
        compare(_report(["a"], ok), _report(["a"], failed))
    with pytest.raises(BuildError, match="ModuleNotFoundError: No module named 'x'"):
        compare(_report(["a"], ok), _report(["a"], ok, "ModuleNotFoundError: No module named 'x'"))


def test_the_probes_elf_reader_finds_what_the_interpreter_links(tmp_path: Path) -> None:
    # The probe is a script for the image's Python; load its functions here
    # without running it (it installs its audit hook only when run).
    probe = runpy.run_path(str(PROBE), run_name="dpk_probe_under_test")
    import struct

    needed, _, interp = probe["_elf_needs"](sys.executable, struct)
    # The dynamic loader's own account of the same file: every library the
    # reader finds is one the loader loads, and libc is among them.
    ldd = subprocess.run(["ldd", sys.executable], capture_output=True, text=True, check=True)
    loaded = {line.split()[0] for line in ldd.stdout.splitlines() if line.strip()}
    assert "libc.so.6" in needed
    assert set(needed) <= loaded, (needed, ldd.stdout)
    assert interp is not None and interp.startswith("/")
    assert os.path.basename(interp) in {os.path.basename(name) for name in loaded}
    with pytest.raises(ValueError, match="not ELF"):
        probe["_elf_needs"](str(PROBE), struct)


def test_the_rootfs_is_exported_again_only_when_what_it_came_from_changes() -> None:
    import dataclasses

    from plugin.bundle._builder import _export_stamp
    from plugin.bundle._project import load_project

    project = load_project(Path(__file__).resolve().parents[2] / "reference" / "localvol")
    config = {"entrypoint": ["python3", "-m", "plugin"], "env": []}
    stamp = _export_stamp(project, "sha256:1", config)
    assert stamp == _export_stamp(project, "sha256:1", dict(config))
    assert stamp != _export_stamp(project, "sha256:2", config)
    assert stamp != _export_stamp(project, "sha256:1", {**config, "env": [{"name": "X"}]})
    other = dataclasses.replace(project, drivers=("other.mod:Driver",))
    assert stamp != _export_stamp(other, "sha256:1", config)
    unslimmed = dataclasses.replace(project, slim=False)
    assert _export_stamp(unslimmed, "sha256:1", None) == {"image": "sha256:1", "slim": False}
