"""plugin.state.StateFile: a driver's state, replaced whole, safe at any instant."""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugin.state import StateError, StateFile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "state.json"


def test_a_fresh_directory_has_no_state_and_is_made(path: Path) -> None:
    assert StateFile(str(path), 1).load() is None
    assert path.parent.is_dir()
    assert os.listdir(path.parent) == []


def test_save_commits_and_load_reads_it_back(path: Path) -> None:
    state = StateFile(str(path), 3)
    path.parent.mkdir()
    state.save({"pools": {"p": "10.0.0.0/24"}, "version": 1})
    assert StateFile(str(path), 3).load() == {"pools": {"p": "10.0.0.0/24"}, "version": 3}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["state.json"]  # no temp file left


def test_save_fsyncs_the_file_then_its_directory(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path.parent.mkdir()
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    StateFile(str(path), 1).save({})
    assert len(synced) == 2
    assert Path(synced[0]).parent == path.parent
    assert Path(synced[0]).name.startswith(".state.json.")
    assert synced[1] == "dir"


def test_a_failed_save_keeps_the_old_state_and_no_temp_file(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateFile(str(path), 1)
    path.parent.mkdir()
    state.save({"n": 1})
    before = path.read_bytes()

    def enospc(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", enospc)
    with pytest.raises(OSError, match="No space left on device"):
        state.save({"n": 2})
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["state.json"]


def test_a_failed_directory_fsync_is_logged_after_the_commit(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with caplog.at_level(logging.WARNING, "plugin.state"):
        StateFile(str(path), 1).save({"n": 1})
    assert caplog.messages == [f"fsync of {path.parent} failed: [Errno 5] Input/output error"]
    assert StateFile(str(path), 1).load() == {"n": 1, "version": 1}


def test_load_removes_only_its_own_unfinished_writes(path: Path) -> None:
    path.parent.mkdir()
    StateFile(str(path), 1).save({})
    (path.parent / ".state.json.0123abcd.tmp").write_text('{"version": 1, "po')
    # Another state file's write in flight, and files that only look alike.
    kept = [".other.json.0123abcd.tmp", ".state.json.0123abcd", "state.json.tmp"]
    for name in kept:
        (path.parent / name).write_text("")
    assert StateFile(str(path), 1).load() == {"version": 1}
    assert sorted(os.listdir(path.parent)) == sorted([*kept, "state.json"])


def refusal(state: StateFile, content: str) -> str:
    """The error loading ``content`` raises; the file is left as it was."""
    path = Path(state.path)
    path.parent.mkdir(exist_ok=True)
    path.write_text(content)
    with pytest.raises(StateError) as info:
        state.load()
    assert path.read_text() == content
    return str(info.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "{",
            "not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
        ("", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        ("[1]", "not a plugin state file (expected a JSON object)"),
        (
            "[" * 100_000,
            "not valid JSON (maximum recursion depth exceeded while decoding "
            "a JSON array from a unicode string)",
        ),
    ],
)
def test_a_damaged_file_is_refused_and_left_untouched(
    path: Path, content: str, problem: str
) -> None:
    assert refusal(StateFile(str(path), 1), content) == (
        f"{path}: {problem}; it was left untouched: repair or remove it"
    )


def test_an_unsupported_version_is_refused(path: Path) -> None:
    assert refusal(StateFile(str(path), 1), '{"pools": {}}') == (
        f"{path}: unsupported state version None (this plugin reads version 1); "
        "it was left untouched"
    )


def test_the_owner_and_the_remedy_name_what_the_driver_knows(path: Path) -> None:
    state = StateFile(str(path), 1, owner="localvol", remedy="move it aside to adopt the volumes")
    assert refusal(state, "[]") == (
        f"{path}: not a localvol state file (expected a JSON object); it was left untouched: "
        "move it aside to adopt the volumes"
    )
    assert str(state.corrupt('"volumes" must be an object')) == (
        f'{path}: "volumes" must be an object; it was left untouched: '
        "move it aside to adopt the volumes"
    )
    assert refusal(state, '{"version": 2}') == (
        f"{path}: unsupported state version 2 (this localvol reads version 1); "
        "it was left untouched"
    )


def test_a_link_at_the_state_file_is_never_read_through(path: Path, tmp_path: Path) -> None:
    # save would replace the link, not its target: reading through it would
    # start from one file and commit to another.
    path.parent.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"version": 1}')
    path.symlink_to(elsewhere)
    state = StateFile(str(path), 1)
    with pytest.raises(StateError) as info:
        state.load()
    assert str(info.value) == f"cannot read {path}: Too many levels of symbolic links"
    state.save({"n": 1})
    assert not path.is_symlink()
    assert elsewhere.read_text() == '{"version": 1}'


def test_importing_it_loads_no_module_a_plugin_would_not_load_anyway() -> None:
    # It is imported before the plugin's socket is bound: each module costs
    # start-up time and room in the slim rootfs (tempfile pulls in shutil,
    # random, bz2, lzma).
    out = subprocess.run(
        [sys.executable, "-S", "-c", "import sys, plugin.state; print(*sorted(sys.modules))"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "plugin.state" in out
    assert not {"tempfile", "shutil", "random"} & set(out)
