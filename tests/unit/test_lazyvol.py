"""The lazy-import test plugin (tests/fixtures/lazyvol) on this host, in
process: each lazy path works here, so a failure of the same path in the slim
rootfs (tests/e2e/test_slim.py) is the slim rootfs's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lazyvol"
sys.path.insert(0, str(FIXTURE))

from lazyvol.driver import LazySettings, LazyVolumes  # noqa: E402

from plugin.testing import PluginClient  # noqa: E402


@pytest.fixture
def client(tmp_path: Path) -> PluginClient:
    config = LazySettings.parse({"ROOT": str(tmp_path), "DEFAULT_SIZE": "16m", "LABEL": "t"})
    return PluginClient(LazyVolumes(config))


def test_every_lazy_path(client: PluginClient, tmp_path: Path) -> None:
    opts = {
        "kind": "sqlite",
        "quota": "1.5G",
        "compress": "zstd",
        "host": "bücher.example",
        "distro": "1",
    }
    assert client.call("VolumeDriver.Create", {"Name": "v", "Opts": opts}) == {}
    status = client.call("VolumeDriver.Get", {"Name": "v"})["Volume"]["Status"]
    assert status["size"] == 16 << 20 and status["label"] == "t" and status["kind"] == "sqlite"
    assert status["quota_bytes"] == 1610612736
    assert status["host"] == "xn--bcher-kva.example"
    assert isinstance(status["zstd"], int) and status["zstd"] > 10000
    assert status["sqlite"].count(".") == 2 and status["distro"]
    assert (tmp_path / "v" / "volume.db").exists()


def test_an_unknown_option(client: PluginClient) -> None:
    answer = client.post("VolumeDriver.Create", {"Name": "v", "Opts": {"colour": "red"}})
    assert (answer.status, answer.json) == (500, {"Err": "unknown options: colour"})
