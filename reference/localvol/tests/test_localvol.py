"""localvol, driven the way the daemon drives it."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import errno
import json
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localvol import driver as localvol
from localvol.driver import DATA, LocalVolumes, StateError

from plugin import Mount
from plugin.__main__ import main as plugin_main
from plugin._requirements import requirements
from plugin.testing import PluginClient
from plugin.volume import CreateRequest

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
ID_A = "a" * 64
ID_B = "b" * 64
BAD_NAME = (
    "use letters, digits, '_', '.', '-', starting with a letter or digit (at most 255 characters)"
)
FREE = re.compile(r"\d+ B|\d+\.\d (KiB|MiB|GiB|TiB)")


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localvol, "_now", lambda: T0)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data: Path, tmp_path: Path) -> Iterator[PluginClient]:
    with PluginClient(LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False)) as c:
        yield c


def post(client: PluginClient, verb: str, body: Any = None) -> tuple[int, Any]:
    reply = client.post(f"/VolumeDriver.{verb}", body)
    return reply.status, reply.json


def get(client: PluginClient, name: str) -> dict[str, Any]:
    """Get's body, with Status.free checked and left out (it varies)."""
    status, body = post(client, "Get", {"Name": name})
    assert status == 200, body
    assert FREE.fullmatch(body["Volume"]["Status"].pop("free"))
    return body  # type: ignore[no-any-return]


def state(data: Path) -> Any:
    return json.loads((data / "state.json").read_text())


def volume_state(mounts: list[str] | None = None, **options: str) -> dict[str, Any]:
    return {"created_at": "2024-05-01T12:00:00Z", "options": options, "mounts": mounts or []}


def restart(data: Path, tmp_path: Path) -> PluginClient:
    return PluginClient(LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False))


# --- the protocol ------------------------------------------------------------------------


def test_appendix_c_call_sequence(client: PluginClient, data: Path) -> None:
    # The 27 requests one create, ls, inspect, run --rm -v, rm made on dockerd 20.10,
    # in their order.
    def caps() -> None:
        assert post(client, "Capabilities", {}) == (200, {"Capabilities": {"Scope": "local"}})

    mountpoint = str(data / "volumes" / "s1")
    unmounted = {
        "Volume": {
            "Name": "s1",
            "CreatedAt": "2024-05-01T12:00:00Z",
            "Status": {"options": {}, "mounts": 0, "mode": "0755", "uid": 0, "gid": 0},
        }
    }
    caps()
    assert post(client, "Get", {"Name": "s1"}) == (500, {"Err": 'no such volume: "s1"'})
    assert post(client, "Create", {"Name": "s1", "Opts": None}) == (200, {})
    assert post(client, "List", {}) == (200, {"Volumes": [{"Name": "s1"}]})
    for _ in range(2):
        caps()
        caps()
        assert get(client, "s1") == unmounted
    caps()
    assert get(client, "s1") == unmounted
    caps()
    assert post(client, "Mount", {"Name": "s1", "ID": ID_A}) == (200, {"Mountpoint": mountpoint})
    caps()
    assert get(client, "s1") == {
        "Volume": {
            "Name": "s1",
            "Mountpoint": mountpoint,
            "CreatedAt": "2024-05-01T12:00:00Z",
            "Status": {"options": {}, "mounts": 1, "mode": "0755", "uid": 0, "gid": 0},
        }
    }
    caps()
    assert post(client, "Unmount", {"Name": "s1", "ID": ID_A}) == (200, {})
    caps()
    assert get(client, "s1") == unmounted
    caps()
    caps()
    assert get(client, "s1") == unmounted
    caps()
    caps()
    assert post(client, "Remove", {"Name": "s1"}) == (200, {})
    caps()
    assert post(client, "Get", {"Name": "s1"}) == (500, {"Err": 'no such volume: "s1"'})
    assert os.listdir(data / "volumes") == []
    assert os.listdir(data / "trash") == []
    assert state(data) == {"version": 1, "volumes": {}}


def test_walk_through_with_options(client: PluginClient, data: Path) -> None:
    opts = {"uid": "1000", "gid": "1001", "mode": "750"}
    assert post(client, "Create", {"Name": "v1", "Opts": opts}) == (200, {})
    path = data / "volumes" / "v1"
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1001)
    assert get(client, "v1") == {
        "Volume": {
            "Name": "v1",
            "CreatedAt": "2024-05-01T12:00:00Z",
            "Status": {
                "options": {"gid": "1001", "mode": "0750", "uid": "1000"},
                "mounts": 0,
                "mode": "0750",
                "uid": 1000,
                "gid": 1001,
            },
        }
    }
    assert post(client, "Path", {"Name": "v1"}) == (200, {"Mountpoint": ""})
    assert post(client, "Mount", {"Name": "v1", "ID": ID_A}) == (200, {"Mountpoint": str(path)})
    assert post(client, "Path", {"Name": "v1"}) == (200, {"Mountpoint": str(path)})
    assert post(client, "List", None) == (
        200,
        {"Volumes": [{"Name": "v1", "Mountpoint": str(path)}]},
    )
    assert post(client, "Unmount", {"Name": "v1", "ID": ID_A}) == (200, {})
    assert post(client, "Path", {"Name": "v1"}) == (200, {"Mountpoint": ""})
    (path / "file").write_text("data")
    assert post(client, "Remove", {"Name": "v1"}) == (200, {})
    assert not path.exists()
    assert os.listdir(data / "trash") == []
    assert post(client, "List", {}) == (200, {"Volumes": []})


def test_list_is_sorted_and_empty_list_is_an_array(client: PluginClient) -> None:
    assert post(client, "List", {}) == (200, {"Volumes": []})
    for name in ("b", "a", "c.1"):
        assert post(client, "Create", {"Name": name, "Opts": None}) == (200, {})
    assert post(client, "List", {}) == (
        200,
        {"Volumes": [{"Name": "a"}, {"Name": "b"}, {"Name": "c.1"}]},
    )


@pytest.mark.parametrize("verb", ["Remove", "Mount", "Unmount", "Path", "Get"])
def test_unknown_volume(client: PluginClient, verb: str) -> None:
    assert post(client, verb, {"Name": "nope", "ID": ID_A}) == (
        500,
        {"Err": 'no such volume: "nope"'},
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"{",
            "bad request: body is not valid JSON "
            "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        ({"Opts": None}, "bad request: Name: required field missing"),
        ({"Name": 5}, "bad request: Name: expected a string, got number"),
        ({"Name": "v", "Opts": {"uid": 5}}, "bad request: Opts.uid: expected a string, got number"),
    ],
)
def test_undecodable_create(client: PluginClient, data: Path, body: Any, message: str) -> None:
    assert post(client, "Create", body) == (400, {"Err": message})
    assert os.listdir(data / "volumes") == []


# --- names and options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("..", '".."'),
        (".", '"."'),
        ("../x", '"../x"'),
        ("a/b", '"a/b"'),
        ("/etc", '"/etc"'),
        ("a\x00b", '"a\\u0000b"'),
        ("a\n", '"a\\n"'),
        ("", '""'),
        ("-x", '"-x"'),
        ("_x", '"_x"'),
        ("café", '"café"'),
        ("a" * 256, '"' + "a" * 64 + '..."'),
    ],
)
def test_hostile_names_are_refused(client: PluginClient, data: Path, name: str, shown: str) -> None:
    assert post(client, "Create", {"Name": name, "Opts": None}) == (
        500,
        {"Err": f"invalid volume name {shown}: {BAD_NAME}"},
    )
    assert os.listdir(data / "volumes") == []
    assert sorted(os.listdir(data)) == ["state.json", "trash", "volumes"]
    assert state(data) == {"version": 1, "volumes": {}}


def test_longest_name_is_accepted(client: PluginClient, data: Path) -> None:
    name = "a" * 255
    assert post(client, "Create", {"Name": name}) == (200, {})
    assert (data / "volumes" / name).is_dir()
    assert post(client, "Mount", {"Name": name, "ID": ID_A}) == (
        200,
        {"Mountpoint": str(data / "volumes" / name)},
    )
    assert post(client, "Unmount", {"Name": name, "ID": ID_A}) == (200, {})
    # The trash entry must stay within NAME_MAX too.
    assert post(client, "Remove", {"Name": name}) == (200, {})
    assert os.listdir(data / "volumes") == []
    assert os.listdir(data / "trash") == []


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"foo": "1"}, 'unknown option "foo" (supported: gid, mode, uid)'),
        ({"UID": "1"}, 'unknown option "UID" (supported: gid, mode, uid)'),
        (
            {"uid": "-1"},
            'invalid value for option "uid": "-1" (expected a decimal number from 0 to 4294967294)',
        ),
        (
            {"uid": "4294967295"},
            'invalid value for option "uid": "4294967295" '
            "(expected a decimal number from 0 to 4294967294)",
        ),
        (
            {"gid": "1_000"},
            'invalid value for option "gid": "1_000" '
            "(expected a decimal number from 0 to 4294967294)",
        ),
        (
            {"gid": " 1"},
            'invalid value for option "gid": " 1" (expected a decimal number from 0 to 4294967294)',
        ),
        (
            {"gid": ""},
            'invalid value for option "gid": "" (expected a decimal number from 0 to 4294967294)',
        ),
        (
            {"mode": "0800"},
            'invalid value for option "mode": "0800" '
            "(expected octal permissions from 0000 to 7777, such as 0750)",
        ),
        (
            {"mode": "17777"},
            'invalid value for option "mode": "17777" '
            "(expected octal permissions from 0000 to 7777, such as 0750)",
        ),
        (
            {"mode": "rwx"},
            'invalid value for option "mode": "rwx" '
            "(expected octal permissions from 0000 to 7777, such as 0750)",
        ),
    ],
)
def test_bad_options_are_refused(
    client: PluginClient, data: Path, opts: dict[str, str], message: str
) -> None:
    assert post(client, "Create", {"Name": "v", "Opts": opts}) == (500, {"Err": message})
    assert os.listdir(data / "volumes") == []
    assert state(data)["volumes"] == {}


def test_options_are_normalized(client: PluginClient, data: Path) -> None:
    opts = {"uid": "007", "gid": "0", "mode": "02770"}
    assert post(client, "Create", {"Name": "v", "Opts": opts}) == (200, {})
    assert state(data)["volumes"]["v"]["options"] == {"gid": "0", "mode": "2770", "uid": "7"}
    st = os.stat(data / "volumes" / "v")
    # chmod after chown, so the set-group-ID bit survives
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o2770, 7, 0)


def test_create_is_idempotent_for_equal_options(client: PluginClient, data: Path) -> None:
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "750"}}) == (200, {})
    (data / "volumes" / "v" / "keep").write_text("x")
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "0750"}}) == (200, {})
    assert (data / "volumes" / "v" / "keep").read_text() == "x"
    assert post(client, "Create", {"Name": "v", "Opts": None}) == (
        500,
        {"Err": 'volume "v" already exists with different options'},
    )
    assert state(data)["volumes"] == {"v": volume_state(mode="0750")}


def test_create_reuses_an_orphan_directory(client: PluginClient, data: Path) -> None:
    (data / "volumes" / "v").mkdir()
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "700"}}) == (200, {})
    assert stat.S_IMODE(os.stat(data / "volumes" / "v").st_mode) == 0o700


# --- reference counting and restarts ------------------------------------------------------


def test_mount_reference_counting_is_persisted(client: PluginClient, data: Path) -> None:
    mp = {"Mountpoint": str(data / "volumes" / "v")}
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (200, mp)
    # The daemon mounts an active ID again (e.g. docker cp on a running
    # container) and unmounts once per mount: every call is a reference.
    assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (200, mp)
    assert state(data)["volumes"]["v"]["mounts"] == [ID_A, ID_A]
    assert post(client, "Mount", {"Name": "v", "ID": ID_B}) == (200, mp)
    assert state(data)["volumes"]["v"]["mounts"] == [ID_A, ID_A, ID_B]
    assert get(client, "v")["Volume"]["Status"]["mounts"] == 3
    # An ID that was never mounted here is fine (and changes nothing).
    assert post(client, "Unmount", {"Name": "v", "ID": "c" * 64}) == (200, {})
    assert post(client, "Unmount", {"Name": "v", "ID": ID_A}) == (200, {})
    assert state(data)["volumes"]["v"]["mounts"] == [ID_A, ID_B]
    assert post(client, "Unmount", {"Name": "v", "ID": ID_A}) == (200, {})
    assert state(data)["volumes"]["v"]["mounts"] == [ID_B]
    assert post(client, "Path", {"Name": "v"}) == (200, mp)
    assert post(client, "Unmount", {"Name": "v", "ID": ID_B}) == (200, {})
    assert state(data)["volumes"]["v"]["mounts"] == []
    assert post(client, "Path", {"Name": "v"}) == (200, {"Mountpoint": ""})
    assert post(client, "Unmount", {"Name": "v", "ID": ID_B}) == (200, {})


def test_restart_keeps_volumes_options_created_at_and_refs(
    client: PluginClient, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert post(client, "Create", {"Name": "v", "Opts": {"uid": "5", "mode": "0700"}}) == (200, {})
    assert post(client, "Create", {"Name": "w"}) == (200, {})
    assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (
        200,
        {"Mountpoint": str(data / "volumes" / "v")},
    )
    before = get(client, "v")
    client.close()
    monkeypatch.setattr(localvol, "_now", lambda: T1)
    with restart(data, tmp_path) as again:
        assert get(again, "v") == before
        assert before["Volume"]["CreatedAt"] == "2024-05-01T12:00:00Z"
        assert post(again, "Path", {"Name": "v"}) == (
            200,
            {"Mountpoint": str(data / "volumes" / "v")},
        )
        assert post(again, "List", {}) == (
            200,
            {"Volumes": [{"Name": "v", "Mountpoint": str(data / "volumes" / "v")}, {"Name": "w"}]},
        )
        assert post(again, "Unmount", {"Name": "v", "ID": ID_A}) == (200, {})
        assert post(again, "Path", {"Name": "v"}) == (200, {"Mountpoint": ""})


def test_remove_refuses_a_volume_this_process_mounted_until_it_is_unmounted(
    client: PluginClient, data: Path
) -> None:
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    assert post(client, "Mount", {"Name": "v", "ID": ID_A})[0] == 200
    assert post(client, "Mount", {"Name": "v", "ID": ID_B})[0] == 200

    def refused(count: int) -> tuple[int, Any]:
        return (
            500,
            {
                "Err": f'cannot remove volume "v": volume has active mounts ({count} since the '
                "plugin started; they must be unmounted first)"
            },
        )

    assert post(client, "Remove", {"Name": "v"}) == refused(2)
    assert post(client, "Unmount", {"Name": "v", "ID": ID_A}) == (200, {})
    assert post(client, "Remove", {"Name": "v"}) == refused(1)
    assert (data / "volumes" / "v").is_dir()  # refused: nothing moved
    assert post(client, "Unmount", {"Name": "v", "ID": ID_B}) == (200, {})
    assert post(client, "Remove", {"Name": "v"}) == (200, {})
    assert state(data)["volumes"] == {}


def test_mounts_recorded_before_a_restart_do_not_block_remove(
    client: PluginClient, data: Path, tmp_path: Path
) -> None:
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    assert post(client, "Create", {"Name": "w"}) == (200, {})
    assert post(client, "Mount", {"Name": "v", "ID": ID_A})[0] == 200
    assert post(client, "Mount", {"Name": "w", "ID": ID_A})[0] == 200
    client.close()
    with restart(data, tmp_path) as again:
        # Still recorded (and reported) as mounted...
        assert state(data)["volumes"]["v"]["mounts"] == [ID_A]
        assert get(again, "v")["Volume"]["Status"]["mounts"] == 1
        # ...but made by the process before: the daemon decides.
        assert post(again, "Remove", {"Name": "v"}) == (200, {})
        # A mount made after the restart counts again.
        assert post(again, "Mount", {"Name": "w", "ID": ID_B})[0] == 200
        assert post(again, "Remove", {"Name": "w"})[0] == 500
        assert post(again, "Unmount", {"Name": "w", "ID": ID_B}) == (200, {})
        assert post(again, "Remove", {"Name": "w"}) == (200, {})
        assert state(data)["volumes"] == {}


def test_no_temp_files_are_left_behind(client: PluginClient, data: Path) -> None:
    for i in range(5):
        assert post(client, "Create", {"Name": f"v{i}"}) == (200, {})
    assert post(client, "Mount", {"Name": "v1", "ID": ID_A}) == (
        200,
        {"Mountpoint": str(data / "volumes" / "v1")},
    )
    assert post(client, "Remove", {"Name": "v2"}) == (200, {})
    assert sorted(os.listdir(data)) == ["state.json", "trash", "volumes"]
    assert state(data) == {
        "version": 1,
        "volumes": {
            "v0": volume_state(),
            "v1": volume_state([ID_A]),
            "v3": volume_state(),
            "v4": volume_state(),
        },
    }


def test_concurrent_creates_all_land(data: Path, tmp_path: Path) -> None:
    driver = LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False)
    names = [f"v{i:02}" for i in range(50)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))

    def create(name: str) -> None:
        start.wait()
        try:
            driver.create(CreateRequest(name, {"mode": "0700"}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [v.name for v in driver.list().volumes] == names
    assert sorted(state(data)["volumes"]) == names
    assert sorted(os.listdir(data / "volumes")) == names
    again = LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False)
    assert [v.name for v in again.list().volumes] == names


# --- failures ----------------------------------------------------------------------------


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_failed_commit_of_create_changes_nothing(
    client: PluginClient, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert post(client, "Create", {"Name": "old"}) == (200, {})
    before = (data / "state.json").read_bytes()
    monkeypatch.setattr(os, "replace", _enospc)
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "0700"}}) == (
        500,
        {"Err": 'cannot create volume "v": No space left on device'},
    )
    assert (data / "state.json").read_bytes() == before
    assert sorted(os.listdir(data)) == ["state.json", "trash", "volumes"]
    assert os.listdir(data / "volumes") == ["old"]
    assert post(client, "Get", {"Name": "v"}) == (500, {"Err": 'no such volume: "v"'})
    assert post(client, "List", {}) == (200, {"Volumes": [{"Name": "old"}]})
    monkeypatch.undo()
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "0700"}}) == (200, {})


def test_failed_mkdir_is_a_clear_error(
    client: PluginClient, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "mkdir", _enospc)
    assert post(client, "Create", {"Name": "v"}) == (
        500,
        {"Err": 'cannot create volume "v": No space left on device'},
    )
    assert state(data)["volumes"] == {}


def test_failed_commit_of_remove_restores_the_volume(
    client: PluginClient, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    (data / "volumes" / "v" / "file").write_text("data")
    monkeypatch.setattr(os, "replace", _enospc)
    assert post(client, "Remove", {"Name": "v"}) == (
        500,
        {"Err": 'cannot remove volume "v": No space left on device'},
    )
    assert (data / "volumes" / "v" / "file").read_text() == "data"
    assert os.listdir(data / "trash") == []
    assert post(client, "List", {}) == (200, {"Volumes": [{"Name": "v"}]})


def test_failed_commit_of_mount_and_unmount(
    client: PluginClient, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (
        200,
        {"Mountpoint": str(data / "volumes" / "v")},
    )
    monkeypatch.setattr(os, "replace", _enospc)
    assert post(client, "Mount", {"Name": "v", "ID": ID_B}) == (
        500,
        {"Err": 'cannot mount volume "v": No space left on device'},
    )
    assert post(client, "Unmount", {"Name": "v", "ID": ID_A}) == (
        500,
        {"Err": 'cannot unmount volume "v": No space left on device'},
    )
    assert get(client, "v")["Volume"]["Status"]["mounts"] == 1
    assert state(data)["volumes"]["v"]["mounts"] == [ID_A]


def test_get_survives_a_missing_directory(client: PluginClient, data: Path) -> None:
    # Failing Get for a known volume would make the daemon forget it.
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    os.rmdir(data / "volumes" / "v")
    assert post(client, "Get", {"Name": "v"}) == (
        200,
        {
            "Volume": {
                "Name": "v",
                "CreatedAt": "2024-05-01T12:00:00Z",
                "Status": {"options": {}, "mounts": 0, "error": "No such file or directory"},
            }
        },
    )


# --- recovery at start-up ----------------------------------------------------------------


def make_state(data: Path, volumes: dict[str, Any]) -> None:
    (data / "volumes").mkdir(parents=True, exist_ok=True)
    (data / "trash").mkdir(exist_ok=True)
    (data / "state.json").write_text(json.dumps({"version": 1, "volumes": volumes}))


def open_vols(data: Path, tmp_path: Path) -> LocalVolumes:
    return LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False)


def test_recovery_undoes_a_remove_that_did_not_commit(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_state(data, {"v": volume_state(mode="0700")})
    (data / "trash" / "0123" / "v").mkdir(parents=True)
    (data / "trash" / "0123" / "v" / "file").write_text("data")
    open_vols(data, tmp_path)
    assert (data / "volumes" / "v" / "file").read_text() == "data"
    assert os.listdir(data / "trash") == []
    assert "volume 'v': restored from" in caplog.text


def test_recovery_finishes_committed_removes(data: Path, tmp_path: Path) -> None:
    make_state(data, {"v": volume_state()})
    (data / "volumes" / "v").mkdir()
    (data / "volumes" / "v" / "new").write_text("kept")
    for leftover in ("1/v", "2/gone", "3/gone", "4/a/b", "5/a/b/c"):
        (data / "trash" / leftover).mkdir(parents=True)
        (data / "trash" / leftover / "file").write_text("old")
    (data / "trash" / "6").mkdir()  # a Remove that stopped before its rename
    (data / "trash" / "7").write_text("odd")
    vols = open_vols(data, tmp_path)
    assert os.listdir(data / "trash") == []
    assert (data / "volumes" / "v" / "new").read_text() == "kept"
    assert [v.name for v in vols.list().volumes] == ["v"]


def test_recovery_recreates_a_missing_directory(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_state(data, {"v": volume_state(gid="7", mode="0770")})
    with caplog.at_level(logging.WARNING, "localvol"):
        open_vols(data, tmp_path)
    st = os.stat(data / "volumes" / "v")
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o770, 7)
    assert os.listdir(data / "volumes" / "v") == []
    assert "volume 'v': its directory was missing; recreated empty" in caplog.messages


def test_recovery_removes_empty_orphans_and_adopts_full_ones(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_state(data, {})
    (data / "volumes" / "empty").mkdir()
    (data / "volumes" / "full").mkdir()
    (data / "volumes" / "full" / "file").write_text("precious")
    (data / "volumes" / "stray-file").write_text("not a volume")
    vols = open_vols(data, tmp_path)
    assert sorted(os.listdir(data / "volumes")) == ["full", "stray-file"]
    assert (data / "volumes" / "full" / "file").read_text() == "precious"
    assert [v.name for v in vols.list().volumes] == ["full"]
    assert state(data) == {"version": 1, "volumes": {"full": volume_state()}}
    assert any("adopting" in m and "'full'" in m for m in caplog.messages)


def test_missing_state_adopts_every_directory(data: Path, tmp_path: Path) -> None:
    (data / "volumes" / "a").mkdir(parents=True)
    (data / "volumes" / "b").mkdir()
    (data / "volumes" / "b" / "file").write_text("x")
    vols = open_vols(data, tmp_path)
    assert [v.name for v in vols.list().volumes] == ["a", "b"]
    assert state(data) == {"version": 1, "volumes": {"a": volume_state(), "b": volume_state()}}


def test_fresh_data_dir_is_laid_out(data: Path, tmp_path: Path) -> None:
    open_vols(data, tmp_path)
    assert sorted(os.listdir(data)) == ["state.json", "trash", "volumes"]
    assert state(data) == {"version": 1, "volumes": {}}


def test_stale_temp_files_are_removed(data: Path, tmp_path: Path) -> None:
    make_state(data, {})
    (data / ".state.json.abc123.tmp").write_text('{"version": 1, "vol')
    open_vols(data, tmp_path)
    assert sorted(os.listdir(data)) == ["state.json", "trash", "volumes"]


def _hint(data: Path) -> str:
    return (
        "it was left untouched: repair it, or move it aside to adopt every directory in "
        f"{data / 'volumes'} as a volume"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "{not json",
            "not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
        ("", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        ("[]", "not a localvol state file (expected a JSON object)"),
        ('{"version": 1, "volumes": []}', '"volumes" must be an object'),
        (
            '{"version": 1, "volumes": {"../x": {}}}',
            f'volume "../x": invalid volume name "../x": {BAD_NAME}',
        ),
        (
            '{"version": 1, "volumes": {"v": {"created_at": "", "options": {}}}}',
            'volume "v": "created_at" must be an RFC 3339 time, got \'\'',
        ),
        (
            json.dumps({"version": 1, "volumes": {"v": volume_state(x="1")}}),
            'volume "v": unknown option "x" (supported: gid, mode, uid)',
        ),
        (
            json.dumps({"version": 1, "volumes": {"v": {**volume_state(), "mounts": [1]}}}),
            'volume "v": "mounts" must be an array of strings',
        ),
    ],
)
def test_corrupt_state_is_refused_and_left_alone(
    data: Path, tmp_path: Path, content: str, problem: str
) -> None:
    make_state(data, {})
    (data / "state.json").write_text(content)
    with pytest.raises(StateError) as info:
        open_vols(data, tmp_path)
    assert str(info.value) == f"{data / 'state.json'}: {problem}; {_hint(data)}"
    assert (data / "state.json").read_text() == content


def test_unknown_state_version_is_refused(data: Path, tmp_path: Path) -> None:
    make_state(data, {})
    (data / "state.json").write_text('{"version": 2, "volumes": {}}')
    with pytest.raises(StateError) as info:
        open_vols(data, tmp_path)
    assert str(info.value) == (
        f"{data / 'state.json'}: unsupported state version 2 (this localvol reads version 1); "
        "it was left untouched"
    )


def test_python_m_plugin_fails_fast_on_corrupt_state(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Production instantiates with no arguments: the defaults are the declarations.
    monkeypatch.setattr(localvol, "DATA", dataclasses.replace(DATA, destination=str(data)))
    monkeypatch.setattr(LocalVolumes, "propagated_mount", str(tmp_path / "mnt"))
    make_state(data, {})
    (data / "state.json").write_text("{")
    code = plugin_main(["--path", str(tmp_path / "s.sock"), "localvol.driver:LocalVolumes"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"plugin: cannot start: {data / 'state.json'}: not valid JSON (Expecting property name "
        f"enclosed in double quotes: line 1 column 2 (char 1)); {_hint(data)}"
    )
    assert not (tmp_path / "s.sock").exists()


def test_declarations() -> None:
    req = requirements([LocalVolumes])
    assert req.mounts == (DATA,)
    expected = Mount(
        "data",
        destination="/data",
        source="/var/lib/docker-localvol",
        description="host directory holding the volumes "
        "(docker plugin set PLUGIN data.source=/path)",
    )
    assert expected == DATA
    assert req.propagated_mount == "/mnt/volumes"
    assert req.linux_capabilities == ("CAP_SYS_ADMIN",)
    assert req.interface_types == ("docker.volumedriver/1.0",)
    assert LocalVolumes.scope == "local"


def test_defaults_come_from_the_declarations(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localvol, "DATA", dataclasses.replace(DATA, destination=str(data)))
    monkeypatch.setattr(LocalVolumes, "propagated_mount", str(tmp_path / "mnt"))
    vols = LocalVolumes()
    assert (vols.data_dir, vols.mount_dir, vols.bind) == (str(data), str(tmp_path / "mnt"), True)


# --- real bind mounts --------------------------------------------------------------------


def mount_points() -> set[str]:
    # os.path.ismount cannot see a bind mount within one filesystem.
    with open("/proc/self/mountinfo") as f:
        return {
            re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            for line in f
        }


@pytest.fixture
def bound(tmp_path: Path) -> Iterator[tuple[LocalVolumes, Path, Path]]:
    if os.geteuid() != 0:
        pytest.skip("mount(2) needs root")
    data, mnt = tmp_path.resolve() / "data", tmp_path.resolve() / "mnt"
    yield LocalVolumes(str(data), str(mnt), bind=True), data, mnt
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(mount_points()):
        if point.startswith(str(mnt) + "/"):
            libc.umount2(point.encode(), localvol.MNT_DETACH)


def test_bind_mounts_under_the_propagated_mount(
    bound: tuple[LocalVolumes, Path, Path], tmp_path: Path
) -> None:
    driver, data, mnt = bound
    target = mnt / "v"
    with PluginClient(driver) as client:
        assert post(client, "Create", {"Name": "v"}) == (200, {})
        assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (
            200,
            {"Mountpoint": str(target)},
        )
        assert str(target) in mount_points()
        (target / "written").write_text("through the mount")
        assert (data / "volumes" / "v" / "written").read_text() == "through the mount"
        assert post(client, "Mount", {"Name": "v", "ID": ID_B}) == (
            200,
            {"Mountpoint": str(target)},
        )
        assert get(client, "v")["Volume"]["Mountpoint"] == str(target)
        assert post(client, "Unmount", {"Name": "v", "ID": ID_A}) == (200, {})
        assert str(target) in mount_points()
        assert post(client, "Unmount", {"Name": "v", "ID": ID_B}) == (200, {})
        assert str(target) not in mount_points()
        assert not target.exists()
        assert (data / "volumes" / "v" / "written").exists()

        # A plugin restart (a new mount namespace) re-binds what is still in use.
        assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (
            200,
            {"Mountpoint": str(target)},
        )
        localvol._detach(str(target))
        assert str(target) not in mount_points()
    with PluginClient(LocalVolumes(str(data), str(mnt), bind=True)) as client:
        assert str(target) in mount_points()
        assert (target / "written").exists()
        # Remove drops the stale mount along with the volume.
        assert post(client, "Remove", {"Name": "v"}) == (200, {})
        assert str(target) not in mount_points()
        assert not target.exists()


def test_stale_mount_on_the_target_is_replaced(bound: tuple[LocalVolumes, Path, Path]) -> None:
    driver, data, mnt = bound
    with PluginClient(driver) as client:
        assert post(client, "Create", {"Name": "v"}) == (200, {})
        # Something else (e.g. a removed volume of the same name) mounted there.
        other = data.parent / "other"
        other.mkdir()
        (mnt / "v").mkdir(parents=True)
        localvol._bind_mount(str(other), str(mnt / "v"))
        assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (
            200,
            {"Mountpoint": str(mnt / "v")},
        )
        (mnt / "v" / "f").write_text("x")
        assert (data / "volumes" / "v" / "f").exists()
        assert not (other / "f").exists()
        assert post(client, "Unmount", {"Name": "v", "ID": ID_A}) == (200, {})
        assert str(mnt / "v") not in mount_points()


# --- names and options that reach the filesystem: no escape from the roots -----------------


@pytest.mark.parametrize(
    "name",
    [
        "a/../b",
        "./a",
        "a/.",
        "..\\x",
        "%2e%2e",
        "a\x00",
        "\x00",
        "a b",
        "a\tb",
        "\uff41",  # fullwidth a
        "\u0430",  # Cyrillic a
        "a\u200b",  # zero-width space
        "a\u0301",  # combining accent
        "v\ud800",  # lone surrogate
        "$(id)",
        "`id`",
        "a;rm -rf /",
        "x" * 100_000,
    ],
)
def test_hostile_names_never_reach_the_filesystem(
    client: PluginClient, data: Path, name: str
) -> None:
    status, body = post(client, "Create", {"Name": name, "Opts": None})
    assert status == 500
    assert body["Err"].startswith("invalid volume name ") and body["Err"].endswith(BAD_NAME)
    for verb in ("Remove", "Mount", "Unmount", "Path", "Get"):
        status, body = post(client, verb, {"Name": name, "ID": ID_A})
        assert status == 500 and body["Err"].startswith("no such volume: ")
    assert os.listdir(data / "volumes") == []
    assert sorted(os.listdir(data)) == ["state.json", "trash", "volumes"]


@pytest.mark.parametrize(
    "opts",
    [
        {"uid\x00": "1"},
        {"../mode": "0777"},
        {"uid": "1\x00"},
        {"uid": "1 ; id"},
        {"mode": "0777\n"},
        {"gid": "١٢"},  # Arabic-Indic digits
        {"uid": "9" * 5000},
        {"mode": "0o777"},
    ],
)
def test_hostile_options_are_refused(
    client: PluginClient, data: Path, opts: dict[str, str]
) -> None:
    status, body = post(client, "Create", {"Name": "v", "Opts": opts})
    assert status == 500
    assert body["Err"].startswith(("unknown option ", "invalid value for option "))
    assert os.listdir(data / "volumes") == []


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the driver's roots standing for the host's /:
    what a swapped-in link points at. Its mode, owner and content must never
    change."""
    path = tmp_path / "outside"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    (path / "precious").write_text("host file")
    return path


def untouched(outside: Path) -> bool:
    st = os.stat(outside)
    return (
        (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, os.getuid(), os.getgid())
        and sorted(os.listdir(outside)) == ["precious"]
        and (outside / "precious").read_text() == "host file"
    )


LINK = "a symbolic link is in the way (localvol never follows one)"


def swap_for_link(path: Path, outside: Path) -> None:
    shutil.rmtree(path)
    path.symlink_to(outside)


def test_a_link_in_place_of_a_volume_is_never_followed(
    client: PluginClient, data: Path, outside: Path
) -> None:
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "0777", "uid": "1"}}) == (200, {})
    swap_for_link(data / "volumes" / "v", outside)
    status, body = post(client, "Get", {"Name": "v"})
    assert status == 200
    assert body["Volume"]["Status"] == {
        "options": {"mode": "0777", "uid": "1"},
        "mounts": 0,
        "error": LINK,
    }
    # Create again (the daemon retries) reuses nothing through the link.
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "0777", "uid": "1"}}) == (200, {})
    # Remove takes the link away, never what it points to.
    assert post(client, "Remove", {"Name": "v"}) == (200, {})
    assert os.listdir(data / "volumes") == []
    assert os.listdir(data / "trash") == []
    assert untouched(outside)


def test_an_orphan_link_is_not_adopted_by_create(
    client: PluginClient, data: Path, outside: Path
) -> None:
    (data / "volumes" / "v").symlink_to(outside)
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "0777"}}) == (
        500,
        {
            "Err": f'cannot create volume "v": {data / "volumes" / "v"} exists and is not '
            "a directory"
        },
    )
    assert untouched(outside)
    assert state(data)["volumes"] == {}


def test_a_link_swapped_in_between_mkdir_and_chmod_gets_no_chmod(
    client: PluginClient, data: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkdir = os.mkdir

    def mkdir_then_swap(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode, dir_fd=dir_fd)
        if path == "v":
            os.rmdir(path, dir_fd=dir_fd)
            os.symlink(outside, path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir_then_swap)
    assert post(client, "Create", {"Name": "v", "Opts": {"mode": "0777", "uid": "1"}}) == (
        500,
        {"Err": f'cannot create volume "v": {LINK}'},
    )
    assert untouched(outside)
    assert state(data)["volumes"] == {}


def test_links_in_place_of_volumes_or_trash_fail_calls_clearly(
    client: PluginClient, data: Path, outside: Path
) -> None:
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    (data / "volumes" / "v" / "file").write_text("data")
    os.rename(data / "trash", data / "trash.real")
    (data / "trash").symlink_to(outside)
    assert post(client, "Remove", {"Name": "v"}) == (
        500,
        {"Err": f'cannot remove volume "v": {LINK}'},
    )
    assert (data / "volumes" / "v" / "file").read_text() == "data"
    os.rename(data / "volumes", data / "volumes.real")
    (data / "volumes").symlink_to(outside)
    assert post(client, "Create", {"Name": "w", "Opts": {"mode": "0777"}}) == (
        500,
        {"Err": f'cannot create volume "w": {LINK}'},
    )
    assert post(client, "Get", {"Name": "v"})[1]["Volume"]["Status"]["error"] == LINK
    assert untouched(outside)
    assert sorted(state(data)["volumes"]) == ["v"]


@pytest.mark.parametrize("sub", ["volumes", "trash"])
def test_start_up_refuses_a_link_in_place_of_its_directories(
    data: Path, tmp_path: Path, outside: Path, sub: str
) -> None:
    # Recovery deletes unfinished removals in trash/: through a link to the
    # host's / that would be the host's directories.
    (outside / "dir").mkdir()
    (outside / "dir" / "one-entry").mkdir()
    make_state(data, {})
    shutil.rmtree(data / sub)
    (data / sub).symlink_to(outside)
    with pytest.raises(StateError) as info:
        open_vols(data, tmp_path)
    assert str(info.value) == (
        f"{data / sub} is not a directory (localvol never follows a symbolic link below "
        f"{data}): replace it with a directory"
    )
    assert sorted(os.listdir(outside)) == ["dir", "precious"]
    assert os.listdir(outside / "dir") == ["one-entry"]


def test_start_up_refuses_a_link_in_place_of_a_known_volume(
    data: Path, tmp_path: Path, outside: Path
) -> None:
    make_state(data, {"v": volume_state(mode="0777")})
    (data / "volumes" / "v").symlink_to(outside)
    with pytest.raises(StateError) as info:
        open_vols(data, tmp_path)
    assert str(info.value) == (
        f'volume "v": {data / "volumes" / "v"} is not a directory (localvol never follows a '
        "symbolic link): replace it with the volume's directory, or move it aside to start "
        "the volume empty"
    )
    assert untouched(outside)


def test_start_up_ignores_links_and_purges_links_in_the_trash(
    data: Path, tmp_path: Path, outside: Path
) -> None:
    make_state(data, {})
    (data / "volumes" / "stray").symlink_to(outside)
    (data / "trash" / "0123").symlink_to(outside)
    (data / "trash" / "4567").mkdir()
    (data / "trash" / "4567" / "v").symlink_to(outside)
    vols = open_vols(data, tmp_path)
    assert vols.list().volumes == []
    assert os.listdir(data / "trash") == []
    assert untouched(outside)


def test_state_file_as_a_link_is_refused(data: Path, tmp_path: Path) -> None:
    make_state(data, {})
    real = tmp_path / "elsewhere.json"
    real.write_text('{"version": 1, "volumes": {}}')
    (data / "state.json").unlink()
    (data / "state.json").symlink_to(real)
    with pytest.raises(StateError) as info:
        open_vols(data, tmp_path)
    assert str(info.value) == (
        f"cannot read {data / 'state.json'}: Too many levels of symbolic links"
    )


def test_bind_mounts_never_go_through_links(
    bound: tuple[LocalVolumes, Path, Path], outside: Path
) -> None:
    driver, data, mnt = bound
    with PluginClient(driver) as client:
        assert post(client, "Create", {"Name": "v"}) == (200, {})
        assert post(client, "Create", {"Name": "w"}) == (200, {})
        # The source swapped for a link: the call fails, nothing is mounted.
        swap_for_link(data / "volumes" / "v", outside)
        assert post(client, "Mount", {"Name": "v", "ID": ID_A}) == (
            500,
            {"Err": f'cannot mount volume "v": {LINK}'},
        )
        # A link where the target should be is replaced, not mounted through.
        mnt.mkdir(exist_ok=True)
        (mnt / "w").symlink_to(outside)
        assert post(client, "Mount", {"Name": "w", "ID": ID_A}) == (
            200,
            {"Mountpoint": str(mnt / "w")},
        )
        assert str(mnt / "w") in mount_points()
        assert not (mnt / "w").is_symlink()
        assert str(outside) not in mount_points()
        assert post(client, "Unmount", {"Name": "w", "ID": ID_A}) == (200, {})
        # Unmount of the last reference takes a link there away, never unmounts its target.
        assert post(client, "Mount", {"Name": "w", "ID": ID_B}) == (
            200,
            {"Mountpoint": str(mnt / "w")},
        )
        localvol._detach(str(mnt / "w"))
        os.rmdir(mnt / "w")
        (mnt / "w").symlink_to(outside)
        assert post(client, "Unmount", {"Name": "w", "ID": ID_B}) == (200, {})
        assert not os.path.lexists(mnt / "w")
    assert untouched(outside)


# --- long work -------------------------------------------------------------------------------


def test_remove_answers_while_a_huge_volume_is_still_being_deleted(
    client: PluginClient,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert post(client, "Create", {"Name": "v"}) == (200, {})
    (data / "volumes" / "v" / "file").write_text("data")
    release = threading.Event()
    real_rmtree = shutil.rmtree

    def slow_rmtree(*args: Any, **kwargs: Any) -> None:
        release.wait(10)
        real_rmtree(*args, **kwargs)

    monkeypatch.setattr(localvol, "PURGE_WAIT", 0.1)
    monkeypatch.setattr(shutil, "rmtree", slow_rmtree)
    assert post(client, "Remove", {"Name": "v"}) == (200, {})
    assert post(client, "Get", {"Name": "v"}) == (500, {"Err": 'no such volume: "v"'})
    assert "volume 'v' removed; its data is still being deleted in the background" in (
        caplog.messages
    )
    assert len(os.listdir(data / "trash")) == 1
    release.set()
    for _ in range(200):
        if not os.listdir(data / "trash"):
            break
        threading.Event().wait(0.02)
    assert os.listdir(data / "trash") == []


@contextlib.contextmanager
def _released(marker: Path) -> Iterator[None]:
    """Whatever happens, a call paused by the test hook goes on (or the
    process would wait for it at exit)."""
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


class Impatient(LocalVolumes):
    """Answers Create after 0.3 s, as the SDK does 5 s before the daemon's deadline."""

    def call_timeout(self, endpoint: Any) -> float | None:
        return 0.3 if endpoint.name == "Create" else None


def test_a_create_past_its_deadline_is_answered_with_a_timeout_and_still_lands(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(localvol.PAUSE_ENV, "1")
    marker = data / "paused-create"
    with (
        PluginClient(Impatient(str(data), str(tmp_path / "mnt"), bind=False)) as client,
        _released(marker),
    ):
        (data / "pause-create").write_text("v\n")  # the test hook: one pause of Create v
        status, body = post(client, "Create", {"Name": "v"})
        assert status == 500
        assert body["Err"] == (
            "timed out after 0.3 s in the plugin (the daemon stops waiting at 120 s); the "
            "operation may still finish: check its result before retrying"
        )
        assert marker.read_text() == "v\n"
        assert not (data / "pause-create").exists()
        assert post(client, "Get", {"Name": "v"})[0] == 500  # not committed yet
        marker.unlink()
        for _ in range(200):
            if post(client, "Get", {"Name": "v"})[0] == 200:
                break
            threading.Event().wait(0.02)
        assert sorted(state(data)["volumes"]) == ["v"]
        # Disarmed: the next one goes straight through.
        assert post(client, "Create", {"Name": "w"}) == (200, {})


def test_the_pause_hook_needs_its_variable_and_the_volumes_name(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PluginClient(LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False)) as client:
        (data / "pause-create").write_text("v")
        (data / "pause-mount").write_text("v")
        assert post(client, "Create", {"Name": "v"}) == (200, {})  # no variable: no pause
        assert post(client, "Mount", {"Name": "v", "ID": ID_A})[0] == 200
        assert (data / "pause-create").exists() and (data / "pause-mount").exists()
    monkeypatch.setenv(localvol.PAUSE_ENV, "1")
    with PluginClient(LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False)) as client:
        assert post(client, "Create", {"Name": "w"}) == (200, {})  # armed for v only
        assert post(client, "Mount", {"Name": "w", "ID": ID_A})[0] == 200
        assert not (data / "paused-create").exists() and not (data / "paused-mount").exists()


def test_a_stuck_change_makes_the_others_fail_clearly(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(localvol.PAUSE_ENV, "1")
    monkeypatch.setattr(localvol, "LOCK_WAIT", 0.2)
    driver = LocalVolumes(str(data), str(tmp_path / "mnt"), bind=False)
    (data / "pause-create").write_text("stuck")
    stuck = threading.Thread(target=driver.create, args=(CreateRequest("stuck", {}),), daemon=True)
    stuck.start()
    marker = data / "paused-create"
    try:
        for _ in range(200):
            if marker.exists():
                break
            threading.Event().wait(0.02)
        busy = (
            "the plugin is busy: another change has been running for over 0.2 s (see the "
            "plugin's log); try again"
        )
        with PluginClient(driver) as client:
            assert post(client, "Create", {"Name": "v"}) == (500, {"Err": busy})
            assert post(client, "Remove", {"Name": "v"}) == (500, {"Err": busy})
            # Readers take no lock.
            assert post(client, "List", {}) == (200, {"Volumes": []})
            marker.unlink()
            stuck.join(10)
            assert post(client, "Create", {"Name": "v"}) == (200, {})
            assert [v["Name"] for v in post(client, "List", {})[1]["Volumes"]] == ["stuck", "v"]
    finally:
        marker.unlink(missing_ok=True)
