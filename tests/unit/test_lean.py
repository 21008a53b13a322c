"""What a plugin serving the daemon does not load: Starlette (only 404, 405
and unexpected errors need it), uvicorn's command line (click,
multiprocessing), argparse (python -m plugin reads its own arguments),
OpenSSL, logging config files, the email package and subprocess (loaded on
first use, plugin/_defer.py). Checked in a real plugin process over its
socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "starlette",
    "anyio",
    "click",
    "multiprocessing",
    "uvicorn.main",
    "argparse",
    "_ssl",
    "logging.handlers",
    "email._parseaddr",
    "_posixsubprocess",
)

# A driver whose Get answers which of HEAVY its own process has loaded.
DRIVER = """
import sys
from plugin.volume import GetResponse, Volume, VolumeDriver

HEAVY = (
    "starlette", "anyio", "click", "multiprocessing", "uvicorn.main", "argparse", "_ssl",
    "logging.handlers", "email._parseaddr", "_posixsubprocess",
)


class Introspective(VolumeDriver):
    async def get(self, req):
        loaded = {name: name in sys.modules for name in HEAVY}
        return GetResponse(Volume(req.name, status=loaded))

    def create(self, req): ...
    def remove(self, req): ...
    def mount(self, req): ...
    def unmount(self, req): ...
    def path(self, req): ...
    def list(self): ...
"""


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("plugin.moby.localhost", timeout=10)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


def _post(conn: _Unix, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    conn.request("POST", path, body, {"Content-Length": str(len(body))})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_serving_the_daemon_loads_neither_starlette_nor_uvicorns_cli() -> None:
    with tempfile.TemporaryDirectory(prefix="dpk-", dir="/tmp") as tmp:
        (Path(tmp) / "introspective.py").write_text(DRIVER)
        sock = os.path.join(tmp, "p.sock")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), tmp]),
            "LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin", "--path", sock, "introspective:Introspective"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.02)
            conn = _Unix(sock)
            assert _post(conn, "/VolumeDriver.Capabilities", b"{}\n")[0] == 200
            status, body = _post(conn, "/VolumeDriver.Get", b'{"Name": "v"}\n')
            assert status == 200
            volume = body["Volume"]
            assert isinstance(volume, dict)
            assert volume["Status"] == dict.fromkeys(HEAVY, False)
            # Anything else is answered by Starlette, loaded then.
            status, body = _post(conn, "/VolumeDriver.Frobnicate", b"{}")
            assert (status, body) == (404, {"Err": "not implemented: /VolumeDriver.Frobnicate"})
            status, body = _post(conn, "/VolumeDriver.Get", b'{"Name": "v"}\n')
            assert body["Volume"]["Status"]["starlette"] is True  # type: ignore[index]
            conn.close()
        finally:
            proc.terminate()
            proc.wait(10)


def test_uvicorns_package_runs_its_init_when_asked_for_more() -> None:
    code = (
        "import sys\n"
        "from plugin._serve import _uvicorn\n"
        "u = _uvicorn()\n"
        "assert u.Config.__module__ == 'uvicorn.config' and 'click' not in sys.modules\n"
        "import uvicorn\n"
        "assert uvicorn is u and callable(uvicorn.run) and 'click' in sys.modules\n"
        "print(uvicorn.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip()
