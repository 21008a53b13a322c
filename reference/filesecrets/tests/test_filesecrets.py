"""filesecrets through the SDK, as a Swarm manager calls it."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from filesecrets.driver import MAX_SIZE, FileSecrets

from plugin.testing import PluginClient


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "password").write_bytes(b"hunter2\n")
    (tmp_path / "token").write_bytes(b"\x00\xffbinary")
    return tmp_path


def get(root: Path, name: str, **labels: str) -> tuple[int, dict[str, Any]]:
    request = {
        "SecretName": name,
        "SecretLabels": labels or None,
        "ServiceName": "web",
        "TaskName": "web.1.abc",
        "TaskID": "abc",
    }
    with PluginClient(FileSecrets(str(root))) as client:
        reply = client.post("/SecretProvider.GetSecret", request)
    return reply.status, reply.json


def value(data: bytes, reuse: bool = True) -> tuple[int, dict[str, Any]]:
    return 200, {"Value": base64.b64encode(data).decode(), "DoNotReuse": not reuse}


def test_the_secret_is_the_file_named_by_its_label(root: Path) -> None:
    assert get(root, "db", **{"filesecrets.path": "db/password"}) == value(b"hunter2\n")


def test_without_the_label_the_file_is_named_as_the_secret(root: Path) -> None:
    assert get(root, "token") == value(b"\x00\xffbinary")


def test_do_not_reuse_is_asked_by_a_label(root: Path) -> None:
    assert get(root, "token", **{"filesecrets.reuse": "false"}) == value(b"\x00\xffbinary", False)
    assert get(root, "token", **{"filesecrets.reuse": "true"}) == value(b"\x00\xffbinary", True)
    assert get(root, "token", **{"filesecrets.reuse": "no"}) == (
        500,
        {"Err": "secret 'token': label filesecrets.reuse must be true or false, not 'no'"},
    )


def test_a_changed_file_is_read_again(root: Path) -> None:
    assert get(root, "token") == value(b"\x00\xffbinary")
    (root / "token").write_bytes(b"rotated")
    assert get(root, "token") == value(b"rotated")


MISSING = (
    "secret 'nope': no file {} in the secrets directory (create it on the host's "
    "secrets.source, or label the secret filesecrets.path=PATH)"
)


def test_a_missing_secret_says_what_to_do(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="filesecrets"):
        assert get(root, "nope") == (500, {"Err": MISSING.format("nope")})
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "filesecrets"] == [
        ("WARNING", "task web.1.abc of service web: " + MISSING.format("nope"))
    ]
    assert get(root, "nope", **{"filesecrets.path": "db/nope"}) == (
        500,
        {"Err": MISSING.format("db/nope")},
    )


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "/etc/passwd", "db/../token", "db//password", "./token", "db/"]
)
def test_paths_out_of_the_directory_are_refused(root: Path, path: str) -> None:
    assert get(root, "x", **{"filesecrets.path": path}) == (
        500,
        {
            "Err": f"secret 'x': {path!r} is not a path inside the secrets directory (a relative "
            "path without '.', '..' or empty parts)"
        },
    )


def test_symbolic_links_are_not_followed(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "shadow").write_text("root:x")
    os.symlink(outside / "shadow", root / "link")
    os.symlink(outside, root / "dirlink")
    in_the_way = "a symbolic link or a file is in the way (links are not followed)"
    assert get(root, "link") == (500, {"Err": f"secret 'link': link: {in_the_way}"})
    assert get(root, "x", **{"filesecrets.path": "dirlink/shadow"}) == (
        500,
        {"Err": f"secret 'x': dirlink/shadow: {in_the_way}"},
    )


def test_files_swarm_would_refuse(root: Path) -> None:
    (root / "empty").write_bytes(b"")
    (root / "big").write_bytes(b"x" * (MAX_SIZE + 1))
    (root / "just").write_bytes(b"x" * MAX_SIZE)
    os.mkfifo(root / "fifo")
    assert get(root, "empty") == (
        500,
        {"Err": "secret 'empty': empty is empty (Swarm refuses an empty secret)"},
    )
    assert get(root, "big") == (
        500,
        {"Err": "secret 'big': big is 512000 bytes; Swarm takes secrets under 512000 bytes"},
    )
    assert get(root, "just")[0] == 200
    assert get(root, "fifo") == (500, {"Err": "secret 'fifo': fifo is not a regular file"})
    assert get(root, "db") == (500, {"Err": "secret 'db': db is not a regular file"})


def test_no_secrets_directory(tmp_path: Path) -> None:
    assert get(tmp_path / "gone", "x") == (
        500,
        {
            "Err": f"secret 'x': the secrets directory {tmp_path}/gone cannot be opened: No such "
            "file or directory"
        },
    )


def test_values_are_never_logged(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        get(root, "db", **{"filesecrets.path": "db/password", "filesecrets.reuse": "false"})
    assert "hunter2" not in caplog.text
    assert base64.b64encode(b"hunter2\n").decode()[:8] not in caplog.text
    assert "SecretProvider.GetSecret -> 200 (42 bytes)" in caplog.text
    messages = [r.getMessage() for r in caplog.records if r.name == "filesecrets"]
    assert messages == [
        "secret 'db' from db/password for task web.1.abc of service web: 8 bytes, not reused"
    ]


def task_request(name: str, slot: str, **labels: str) -> dict[str, Any]:
    return {
        "SecretName": name,
        "SecretLabels": labels,
        "ServiceName": "web",
        "TaskName": f"web.{slot}.t{slot}",
        "NodeID": "node1",
    }


def test_each_task_can_have_its_own_file(root: Path) -> None:
    (root / "web").mkdir()
    (root / "web" / "1.pem").write_bytes(b"cert one")
    (root / "web" / "2.pem").write_bytes(b"cert two")
    (root / "node1").write_bytes(b"node secret")
    with PluginClient(FileSecrets(str(root))) as client:
        answers = [
            client.call("SecretProvider.GetSecret", task_request("cert", slot, **labels))
            for slot, labels in [
                ("1", {"filesecrets.path": "{service}/{slot}.pem"}),
                ("2", {"filesecrets.path": "{service}/{slot}.pem"}),
                ("2", {"filesecrets.path": "{service}/{slot}.pem", "filesecrets.reuse": "true"}),
                ("1", {"filesecrets.path": "{node}"}),
            ]
        ]
    assert answers == [
        # A per-task file is not reused by default: each task keeps its own value.
        {"Value": base64.b64encode(b"cert one").decode(), "DoNotReuse": True},
        {"Value": base64.b64encode(b"cert two").decode(), "DoNotReuse": True},
        {"Value": base64.b64encode(b"cert two").decode(), "DoNotReuse": False},
        {"Value": base64.b64encode(b"node secret").decode(), "DoNotReuse": True},
    ]


@pytest.mark.parametrize(
    ("path", "task", "err"),
    [
        ("{x}", "web.1.t", "'{x}': unknown field {x} (known: {slot}, {service}, {node})"),
        ("a{slot", "web.1.t", "'a{slot': unbalanced braces"),
        ("a}{slot}", "web.1.t", "'a}{slot}': unbalanced braces"),
        ("{slot}", "", "'{slot}': the request has no slot"),
    ],
)  # fmt: skip
def test_a_bad_per_task_path_says_what_is_wrong(root: Path, path: str, task: str, err: str) -> None:
    request = {"SecretName": "s", "SecretLabels": {"filesecrets.path": path}, "TaskName": task}
    with PluginClient(FileSecrets(str(root))) as client:
        reply = client.post("/SecretProvider.GetSecret", request)
    assert (reply.status, reply.json) == (500, {"Err": f"secret 's': {err}"})
