"""The end-to-end harness's own helpers that need no daemon."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from tests.e2e.conftest import remove_stale_sockets


def test_stale_test_sockets_are_removed_and_live_ones_kept() -> None:
    # A short directory: a unix socket's path is limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="dpk-", dir="/tmp") as tmp:
        check_stale_sockets(Path(tmp))


def check_stale_sockets(tmp_path: Path) -> None:
    stale = tmp_path / "dpk-e2e-legacy-dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # bound, never listening, then closed: nothing answers
    live = tmp_path / "dpk-e2e-legacy-live.sock"
    other = tmp_path / "someone-elses.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(live))
        server.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(other))
        assert remove_stale_sockets(tmp_path) == [stale]
        assert not stale.exists()
        assert live.exists()
        assert other.exists()  # not a test's: never touched
