"""Load on the real daemon: 50 containers at once, each creating, mounting,
writing, reading back and removing its own volume through the plugin.

All must succeed, the reference counts end at zero and no volume is leaked or
lost; the wall time and the error count are printed in the run's summary.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..conftest import Tally
from .conftest import TEST_IMAGE, BuiltBundle, Plugin, docker, extra_plugin

pytestmark = pytest.mark.e2e

CONTAINERS = 50


def life_of_a_volume(plugin: Plugin, index: int, name: str) -> list[str]:
    """Create, use from a container, check, remove: what went wrong, if anything."""
    errors: list[str] = []

    def step(*args: str) -> str | None:
        proc = docker(*args, check=False, timeout=300)
        if proc.returncode != 0:
            errors.append(f"{name}: docker {args[0]} {args[1]}: {proc.stderr.strip()}")
            return None
        return proc.stdout

    if step("volume", "create", "-d", plugin.name, name) is None:
        return errors
    script = f"echo {index} > /data/f && cat /data/f"
    out = step("run", "--rm", "-v", f"{name}:/data", TEST_IMAGE, "sh", "-c", script)
    if out is not None and out != f"{index}\n":
        errors.append(f"{name}: read back {out!r}")
    on_host = plugin.data_dir / "volumes" / name / "f"
    if on_host.read_text() != f"{index}\n":
        errors.append(f"{name}: {on_host} holds {on_host.read_text()!r}")
    info = step("volume", "inspect", name)
    if info is not None and json.loads(info)[0]["Status"]["mounts"] != 0:
        errors.append(f"{name}: still mounted after its container: {info}")
    step("volume", "rm", name)
    return errors


def test_fifty_containers_each_with_its_own_volume(bundle: BuiltBundle, tally: Tally) -> None:
    with extra_plugin(bundle, "load") as plugin:
        names = [plugin.volume("load") for _ in range(CONTAINERS)]
        start = time.monotonic()
        with ThreadPoolExecutor(CONTAINERS) as pool:
            results = list(pool.map(lambda args: life_of_a_volume(plugin, *args), enumerate(names)))
        wall = time.monotonic() - start
        errors = [error for result in results for error in result]
        # create, mount, unmount and remove of each volume, all at once
        tally.add("concurrent operations run", 4 * CONTAINERS)
        tally.note(
            f"load: {CONTAINERS} containers, each its own volume (create, run, write, read "
            f"back, remove): wall time {wall:.1f} s, errors {len(errors)}"
        )
        assert errors == []
        # Nothing leaked, nothing left mounted, nothing left half-done.
        assert not plugin.listed() & set(names)
        assert plugin.state()["volumes"] == {}
        assert os.listdir(plugin.data_dir / "volumes") == []
        assert os.listdir(plugin.data_dir / "trash") == []
        plugin_id = plugin.id
        with open("/proc/self/mountinfo") as f:
            assert not [line for line in f if f"/{plugin_id}/propagated-mount/" in line]
