"""Publishing through a registry: push, install and upgrade on the real daemon,
against the local registry scripts/setup starts on localhost:5000. The
pushes go through a private daemon of the session's (DOCKER_HOST), never the
shared one (see private_daemon.py); install and upgrade pull on the shared
daemon."""

from __future__ import annotations

import json
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.bundle import EngineError
from plugin.bundle._engine import Engine
from plugin.bundle._registry import install, push, upgrade

from .conftest import TEST_IMAGE, BuiltBundle, docker
from .private_daemon import PrivateDaemon

pytestmark = pytest.mark.e2e
REGISTRY = "localhost:5000"


@pytest.fixture
def repo(bundle: BuiltBundle, push_daemon: PrivateDaemon) -> Iterator[str]:
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5)
    except OSError as exc:
        pytest.fail(f"no registry on {REGISTRY} ({exc}): run scripts/setup")
    name = f"{REGISTRY}/dpk-e2e-{uuid.uuid4().hex[:8]}/localvol"
    yield name
    for tag in ("1", "2"):
        docker("plugin", "rm", "-f", f"{name}:{tag}", check=False)
        push_daemon.docker("plugin", "rm", "-f", f"{name}:{tag}", check=False)


def test_push_install_upgrade_keep_volumes_and_host_settings(
    bundle: BuiltBundle, repo: str, push_daemon: PrivateDaemon
) -> None:
    lines: list[str] = []
    engine = Engine(report=lines.append)
    v1, v2 = f"{repo}:1", f"{repo}:2"
    data = Path(f"/var/tmp/{repo.split('/')[1]}")
    volume = f"up-{uuid.uuid4().hex[:8]}"
    try:
        # Publish two versions from one bundle (the ref file keeps them apart),
        # through the push daemon.
        with push_daemon.as_docker_host("pushing"):
            pusher = Engine(report=lines.append)
            for tag in (v1, v2):
                pusher.create(tag, bundle.path)
                push(pusher, tag)
                pusher.remove(tag, force=True)
        tags = json.load(
            urllib.request.urlopen(f"http://{REGISTRY}/v2/{repo.split('/', 1)[1]}/tags/list")
        )
        assert sorted(tags["tags"]) == ["1", "2"]

        # Install asks for the privileges to be granted, as the docker CLI does.
        with pytest.raises(EngineError) as refused:
            install(engine, v1)
        assert str(refused.value) == (
            f"{v1} asks for privileges (mount: [/var/lib/docker-localvol]; capabilities: "
            "[CAP_SYS_ADMIN]); review them and pass --grant-all-permissions to accept"
        )
        assert docker("plugin", "inspect", v1, check=False).returncode != 0
        # The daemon would refuse to start the plugin on a missing mount
        # source; install creates it first.
        assert not data.exists()
        assert install(engine, v1, grant=True, settings=[f"data.source={data}"]) == v1
        assert data.is_dir()
        assert f"created the mount source {data} (data)" in lines

        docker("volume", "create", "-d", v1, volume)
        docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "sh", "-c", "echo v1 > /data/f")

        # The daemon would revert data.source to the new config's default on
        # upgrade; the builder sets it back before enabling.
        assert upgrade(engine, v1, v2, grant=True) == [f"data.source={data}"]
        info = json.loads(docker("plugin", "inspect", v1).stdout)[0]
        assert (info["Enabled"], info["PluginReference"]) == (True, v2)
        assert [m["Source"] for m in info["Config"]["Mounts"]] == [str(data)]
        out = docker("run", "--rm", "-v", f"{volume}:/data", TEST_IMAGE, "cat", "/data/f").stdout
        assert out == "v1\n"
        assert "keeping this host's settings: " + f"data.source={data}" in lines
    finally:
        docker("volume", "rm", "-f", volume, check=False)
        shutil.rmtree(data, ignore_errors=True)
