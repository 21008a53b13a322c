"""docker-plugin-kit service: the systemd units and spec file that run a
plugin as a host service, and how its driver finds its directories there."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from plugin import Mount
from plugin.bundle.__main__ import main
from plugin.manifest import propagated_mount_path

TOML = """\
[plugin]
name = "registry.example.invalid/acme/hostvol:1.0"
drivers = ["hostvol_driver:HostVolumes"]
socket = "hostvol.sock"
description = "Host volumes"
"""
DRIVER = """\
from plugin import Env, Mount
from plugin.volume import VolumeDriver

class HostVolumes(VolumeDriver):
    mounts = (Mount("data", destination="/data", source="/srv/host vols"),
              Mount("cache-dir", destination="/cache", source="/var/cache/hostvol"))
    propagated_mount = "/mnt/volumes"
    env = (Env("MODE", "fast", "how"),)
    def create(self, req): ...
    def remove(self, req): ...
    def mount(self, req): ...
    def unmount(self, req): ...
    def path(self, req): ...
    def get(self, req): ...
    def list(self): ...
"""

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "plugin.toml").write_text(TOML)
    (tmp_path / "hostvol_driver.py").write_text(DRIVER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("hostvol_driver", None)


def run(*argv: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, re.sub(r"done in \d+\.\d s", "done in N.N s", out.getvalue()).splitlines()


def test_a_socket_activated_service(project: Path) -> None:
    code, lines = run("service", "--python", "/opt/venv/bin/python3")
    assert code == 0, lines
    out = project / "service"
    assert sorted(p.name for p in out.iterdir()) == ["hostvol.service", "hostvol.socket"]
    assert lines[-5:] == [
        "",
        f"To install (as root, in {out}):",
        "  cp hostvol.socket hostvol.service /etc/systemd/system/",
        "  systemctl daemon-reload",
        "  systemctl enable --now hostvol.socket",
    ]
    socket_unit = (out / "hostvol.socket").read_text()
    assert "[Socket]\nListenStream=/run/docker/plugins/hostvol.sock\nSocketMode=0660\n" in (
        socket_unit
    )
    service = (out / "hostvol.service").read_text().splitlines()
    section = service[service.index("[Service]") + 1 : service.index("[Install]")]
    assert section == [
        # The project, then the kit these tests run (a checkout, not installed).
        f"Environment=PYTHONPATH={project}:{ROOT}",
        "Environment=PYTHONUNBUFFERED=1",
        'Environment="PLUGIN_MOUNT_DATA=/srv/host vols"',
        "Environment=PLUGIN_MOUNT_CACHE_DIR=/var/cache/hostvol",
        "Environment=PLUGIN_PROPAGATED_MOUNT=/var/lib/docker-plugin-hostvol/propagated-mount",
        "Environment=MODE=fast",
        "Environment=LOG_LEVEL=info",
        "ExecStartPre=/bin/mkdir -p '/srv/host vols' /var/cache/hostvol "
        "/var/lib/docker-plugin-hostvol/propagated-mount",
        "ExecStart=/opt/venv/bin/python3 -m plugin hostvol_driver:HostVolumes",
        "TimeoutStopSec=10",
        "Restart=on-failure",
        "",
    ]
    assert "Requires=hostvol.socket" in service
    assert "Before=docker.service" in service


def test_a_tls_service_and_its_spec_file(project: Path, tmp_path: Path) -> None:
    pem = {n: tmp_path / f"{n}.pem" for n in ("cert", "key", "ca", "dcert", "dkey")}
    code, lines = run(
        "--name", "acme/hostvol", "service", "--out", str(tmp_path / "o"),
        "--listen", "https://0.0.0.0:9443", "--tls-cert", str(pem["cert"]),
        "--tls-key", str(pem["key"]), "--tls-ca", str(pem["ca"]),
        "--daemon-cert", str(pem["dcert"]), "--daemon-key", str(pem["dkey"]),
        "--python", "python3",
    )  # fmt: skip
    assert code == 0, lines
    out = tmp_path / "o"
    assert json.loads((out / "hostvol.json").read_text()) == {
        "Addr": "https://0.0.0.0:9443",
        "TLSConfig": {"CAFile": str(pem["ca"]), "CertFile": str(pem["dcert"]),
                      "KeyFile": str(pem["dkey"])},
    }  # fmt: skip
    assert "ListenStream=0.0.0.0:9443\n" in (out / "hostvol.socket").read_text()
    start = [ln for ln in (out / "hostvol.service").read_text().splitlines() if "ExecStart=" in ln]
    assert start[-1] == (
        "ExecStart=python3 -m plugin --spec /etc/docker/plugins/hostvol.json --tls-cert "
        f"{pem['cert']} --tls-key {pem['key']} --tls-client-ca {pem['ca']} "
        "hostvol_driver:HostVolumes"
    )
    assert "  cp hostvol.json /etc/docker/plugins/" in lines


def test_plain_tcp_writes_a_spec(project: Path, tmp_path: Path) -> None:
    assert run("service", "--out", str(tmp_path / "o"), "--listen", "tcp://127.0.0.1:7000")[0] == 0
    assert (tmp_path / "o/hostvol.spec").read_text() == "tcp://127.0.0.1:7000\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "https://127.0.0.1:1"],
         "error: --listen https://127.0.0.1:1 asks for TLS: give --tls-cert, --tls-key and "
         "--tls-ca"),
        (["--listen", "unix:///run/x.sock"],
         "error: --listen unix:///run/x.sock: a unix socket is /run/docker/plugins/hostvol.sock, "
         "found by the daemon without a spec file; --listen is for tcp:// or https://"),
        (["--tls-cert", "c", "--tls-key", "k"],
         "error: --tls-cert, --tls-key and --tls-ca go together"),
        (["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"],
         "error: --tls-cert and the like need --listen https://HOST:PORT"),
        (["--listen", "https://h:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a",
          "--daemon-cert", "d"],
         "error: --daemon-cert and --daemon-key go together"),
        (["--listen", "h:1"],
         "error: --listen: 'h:1' has the scheme 'h'; the daemon dials unix://PATH, "
         "tcp://HOST:PORT or https://HOST:PORT"),
    ],
)  # fmt: skip
def test_bad_service_options(project: Path, argv: list[str], message: str) -> None:
    code, lines = run("service", *argv)
    assert (code, lines[-1]) == (1, message)


def test_a_mount_is_found_at_its_host_directory_outside_the_plugin_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mount = Mount("cache-dir", destination="/cache")
    assert mount.host_env == "PLUGIN_MOUNT_CACHE_DIR"
    monkeypatch.delenv("PLUGIN_MOUNT_CACHE_DIR", raising=False)
    monkeypatch.delenv("PLUGIN_PROPAGATED_MOUNT", raising=False)
    assert mount.path() == "/cache"
    assert propagated_mount_path("/mnt/volumes") == "/mnt/volumes"
    monkeypatch.setenv("PLUGIN_MOUNT_CACHE_DIR", "/srv/cache")
    monkeypatch.setenv("PLUGIN_PROPAGATED_MOUNT", "/srv/mounts")
    assert mount.path() == "/srv/cache"
    assert propagated_mount_path("/mnt/volumes") == "/srv/mounts"


def test_localvol_as_a_host_service_uses_the_host_directories(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from localvol.driver import LocalVolumes

    monkeypatch.setenv("PLUGIN_MOUNT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PLUGIN_PROPAGATED_MOUNT", str(tmp_path / "mounts"))
    (tmp_path / "data").mkdir()
    driver = LocalVolumes()
    assert (driver.data_dir, driver.mount_dir) == (str(tmp_path / "data"), str(tmp_path / "mounts"))
