"""This host's settings across a rebuild, on the real daemon: `create
--replace` (what `plugin` does after building) keeps them."""

from __future__ import annotations

import io
import json

import pytest

from plugin.bundle.__main__ import main

from .conftest import TEST_IMAGE, BuiltBundle, docker, extra_plugin

pytestmark = pytest.mark.e2e


def test_a_replaced_plugin_keeps_this_hosts_settings_and_volumes(bundle: BuiltBundle) -> None:
    with extra_plugin(bundle, "keep") as plugin:
        volume = plugin.create_volume()
        docker("run", "--rm", "-v", f"{volume}:/d", TEST_IMAGE, "sh", "-c", "echo 1 > /d/f")
        docker("plugin", "disable", "-f", plugin.name)
        docker("plugin", "set", plugin.name, "LOG_LEVEL=debug")
        old_id = plugin.id

        out = io.StringIO()
        argv = ["--name", plugin.name, "--bundle", str(bundle.path), "create", "--replace"]
        assert main(argv, out=out) == 0, out.getvalue()
        assert (
            f"    keeping this host's settings: LOG_LEVEL=debug data.source={plugin.data_dir}"
            in out.getvalue().splitlines()
        )
        info = json.loads(docker("plugin", "inspect", plugin.name).stdout)[0]
        assert info["Id"] != old_id
        assert "LOG_LEVEL=debug" in info["Settings"]["Env"]
        assert [m["Source"] for m in info["Config"]["Mounts"]] == [str(plugin.data_dir)]

        docker("plugin", "enable", plugin.name)
        cat = ["run", "--rm", "-v", f"{volume}:/d", TEST_IMAGE, "cat", "/d/f"]
        assert docker(*cat).stdout == "1\n"
