"""``docker-plugin-kit dev`` on the build host (plugin/bundle/_dev.py): the dev
config, the dev mark and push, following events, rebuilding, leaving; with a
fake daemon. The real thing is in tests/e2e/test_dev.py."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import plugin.bundle._dev as dev_module
import plugin.bundle._engine as engine_module
from plugin.bundle import ConfigError, check_config
from plugin.bundle.__main__ import main
from plugin.bundle._dev import DevBuild, DevMode, dev_config, dev_source, forget_modules
from plugin.bundle._engine import Engine
from plugin.bundle._project import load_project
from tests.unit.test_bundle_config import good, make_rootfs
from tests.unit.test_bundle_engine import PLUGIN_ID, FakeClient

TOML = """\
[plugin]
name = "acme/vol"
drivers = ["acme_dev_vol.driver:Volumes"]
socket = "t.sock"
"""

DECLARED = {"interface_types": ["docker.volumedriver/1.0"], "linux_capabilities": []}


def dev(root: Path = Path("/home/me/proj")) -> dict[str, Any]:
    config = good()
    config["entrypoint"] += ["--socket", "t.sock", "acme.vol:Volumes"]
    config["env"].append({"name": "PYTHONPATH", "description": "image", "value": "/opt/site"})
    return dev_config(config, root, root / ".build/dev/status", ["rootfs-build"])


def test_the_dev_config_runs_the_supervisor_on_the_mounted_source() -> None:
    config = dev()
    assert config["entrypoint"] == [
        "/usr/bin/python3",
        "-u",
        "-m",
        "plugin._dev",
        "--status",
        "/plugin-dev/status/events.jsonl",
        "--exclude",
        "rootfs-build",
        "--socket",
        "t.sock",
        "acme.vol:Volumes",
    ]
    assert config["workdir"] == "/plugin-dev/src"
    env = {e["name"]: e["value"] for e in config["env"]}
    assert env == {
        "LOG_LEVEL": "info",
        # The image's working directory (its copy of the code) after the source.
        "PYTHONPATH": "/opt/plugin:/opt/site",
        "PYTHONPYCACHEPREFIX": "/tmp/plugin-dev-pycache",
        "DPK_DEV_SOURCE": "/home/me/proj",
    }
    assert config["mounts"][0] == good()["mounts"][0]
    assert [
        (m["name"], m["source"], m["destination"], m["options"], m["settable"])
        for m in config["mounts"][1:]
    ] == [
        ("dev-source", "/home/me/proj", "/plugin-dev/src", ["rbind", "ro"], []),
        ("dev-status", "/home/me/proj/.build/dev/status", "/plugin-dev/status", ["rbind"], []),
    ]
    assert config["description"] == (
        "[dev mode: runs the source in /home/me/proj on the host that made it; never push] "
        "test plugin"
    )
    assert dev_source(config) == "/home/me/proj"
    assert dev_source(good()) is None


def test_the_dev_config_is_valid(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    (rootfs / "plugin-dev/src").mkdir(parents=True)
    (rootfs / "plugin-dev/status").mkdir()
    assert check_config(dev(), rootfs) == []


def test_dev_mode_needs_the_kits_entrypoint() -> None:
    config = good()
    config["entrypoint"] = ["/usr/bin/myplugin", "--socket", "t.sock"]
    with pytest.raises(ConfigError) as exc:
        dev_config(config, Path("/p"), Path("/p/s"), [])
    assert str(exc.value) == (
        "dev mode runs the kit's entrypoint (python -m plugin ...); this project's is "
        "['/usr/bin/myplugin', '--socket', 't.sock']: remove plugin.entrypoint from "
        "plugin.toml to use dev mode"
    )


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(engine_module, "docker_client", lambda timeout=600: client)
    return client


def add_dev_plugin(client: FakeClient, name: str, source: str = "/home/me/proj") -> None:
    client.api.add(name, enabled=True)
    client.api.plugins[name]["Config"]["Env"] = [
        {"Name": "LOG_LEVEL", "Value": "info"},
        {"Name": "DPK_DEV_SOURCE", "Value": source},
    ]


def test_push_refuses_a_dev_plugin(client: FakeClient) -> None:
    add_dev_plugin(client, "localhost:5000/acme/vol:1.0")
    out = io.StringIO()
    assert main(["--name", "localhost:5000/acme/vol:1.0", "push"], out=out) == 1
    assert out.getvalue().splitlines() == [
        "==> push localhost:5000/acme/vol:1.0",
        "error: push localhost:5000/acme/vol:1.0: this is a dev plugin (docker-plugin-kit dev): "
        "it runs the source in /home/me/proj on the host that made it, and would not work "
        "anywhere else; build a normal one first (make plugin, or docker-plugin-kit plugin), "
        "then push",
    ]
    assert not [c for c in client.api.calls if c[0] == "post"]


def test_the_build_host_reads_the_drivers_as_they_are_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_dev_vol").mkdir()
    (tmp_path / "acme_dev_vol" / "__init__.py").write_text("")
    driver = tmp_path / "acme_dev_vol" / "driver.py"
    driver.write_text("CAPS = 1\n")
    (tmp_path / "plugin.toml").write_text(TOML)
    monkeypatch.syspath_prepend(str(tmp_path))
    import acme_dev_vol.driver as before  # type: ignore[import-not-found]

    assert before.CAPS == 1
    driver.write_text("CAPS = 22\n")
    forget_modules(load_project(tmp_path / "plugin.toml"))
    assert "acme_dev_vol" not in sys.modules and "acme_dev_vol.driver" not in sys.modules
    import acme_dev_vol.driver as after

    assert after.CAPS == 22
    assert "plugin" in sys.modules  # the kit is never forgotten
    del sys.modules["acme_dev_vol"], sys.modules["acme_dev_vol.driver"]


# --- the session, with the build and the daemon faked ------------------------------------


class Session:
    """A DevMode on a project in tmp_path whose _create() only records and
    puts a plugin in the fake daemon; its output as lines."""

    def __init__(self, tmp_path: Path, client: FakeClient) -> None:
        (tmp_path / "plugin.toml").write_text(TOML)
        self.root = tmp_path
        self.client = client
        self.out = io.StringIO()
        self.engine = Engine(client, report=lambda line: print(f"    {line}", file=self.out))
        self.mode = DevMode(
            tmp_path / "plugin.toml",
            "acme/vol:latest",
            self.engine,
            self.out,
            self.step,
            lambda line: print(f"    {line}", file=self.out),
            poll=0.01,
        )
        self.created = 0
        self.mode._create = self.create  # type: ignore[method-assign]

    def step(self, name: str) -> Any:
        import contextlib

        print(f"==> {name}", file=self.out)
        return contextlib.nullcontext()

    def create(self) -> None:
        self.created += 1
        self.mode.project = load_project(self.root / "plugin.toml")
        self.mode._inputs = dev_module._stamps(dev_module._config_inputs(self.mode.project))
        self.mode.status.mkdir(parents=True, exist_ok=True)
        (self.mode.status / "events.jsonl").unlink(missing_ok=True)
        self.mode._offset = 0
        self.mode.build = DevBuild(self.root / ".build/dev/bundle", {}, DECLARED)
        self.client.api.plugins.pop("acme/vol:latest", None)
        add_dev_plugin(self.client, "acme/vol:latest", str(self.root))
        self.client.api.plugins["acme/vol:latest"]["Id"] = f"{self.created:064x}"
        self.mode.plugin_id = f"{self.created:064x}"

    def event(self, **fields: Any) -> None:
        with open(self.mode.status / "events.jsonl", "a") as f:
            f.write(json.dumps(fields) + "\n")

    def lines(self) -> list[str]:
        return [
            re.sub(r"^\d\d:\d\d:\d\d ", "HH:MM:SS ", ln) for ln in self.out.getvalue().splitlines()
        ]

    def follow(self, rounds: int = 3) -> None:
        calls = iter(range(rounds))
        self.mode.follow(until=lambda: next(calls, None) is None)


def test_events_are_printed_with_the_hosts_paths_and_what_to_do(
    tmp_path: Path, client: FakeClient
) -> None:
    s = Session(tmp_path, client)
    s.mode.start()
    s.event(event="listening", watching=7)
    s.event(event="serving", generation=1, seconds=0.2, declarations=DECLARED)
    s.event(event="reloading", changed=["pkg/driver.py"])
    s.event(
        event="reloaded",
        generation=2,
        seconds=0.41,
        changed=["pkg/driver.py"],
        declarations=DECLARED,
    )
    s.event(event="failed", generation=3, stage="import", changed=["pkg/driver.py"],
            error="SyntaxError: invalid syntax (/home/me/proj/pkg/driver.py, line 3)",
            detail='  File "/home/me/proj/pkg/driver.py", line 3\n    def f(:\nSyntaxError: x',
            serving="previous")  # fmt: skip
    s.follow(1)
    assert (
        s.lines()[-11:]
        == [
            "",
            f"dev mode: acme/vol:latest runs the source in {tmp_path} from this host; save a file "
            "and the plugin reloads. Ctrl-C leaves dev mode.",
            "HH:MM:SS the plugin listens; watching 7 files",
            "HH:MM:SS serving (server 1, ready in 0.2 s)",
            "HH:MM:SS pkg/driver.py changed: reloaded in 0.41 s",
            "HH:MM:SS pkg/driver.py changed: error: SyntaxError: invalid syntax "
            "(/home/me/proj/pkg/driver.py, line 3)",
            '           File "/home/me/proj/pkg/driver.py", line 3',
            "             def f(:",
            "         SyntaxError: x",
            "         still serving the previous code until the next save",
        ][-10:]
    )
    assert s.created == 1


def test_changed_declarations_rebuild_the_dev_plugin_once(
    tmp_path: Path, client: FakeClient
) -> None:
    s = Session(tmp_path, client)
    s.mode.start()
    caps = {**DECLARED, "linux_capabilities": ["CAP_NET_ADMIN"]}
    s.event(event="reloaded", generation=2, seconds=0.4, changed=["d.py"], declarations=caps)
    s.follow(2)
    assert s.created == 2
    assert (
        "HH:MM:SS the drivers' declarations changed (linux_capabilities): config.json changes: "
        "building the dev plugin again"
    ) in s.lines()
    # The new plugin reports the same, and this host still reads the old ones
    # (s.create() keeps DECLARED): a warning, not a rebuild loop.
    s.event(event="serving", generation=1, seconds=0.2, declarations=caps)
    s.follow(2)
    assert s.created == 2
    assert s.lines()[-1] == (
        "HH:MM:SS warning: the drivers in the plugin declare other linux_capabilities than "
        "this host imports them with; config.json follows this host's"
    )


def test_a_change_of_plugin_toml_rebuilds_the_dev_plugin(
    tmp_path: Path, client: FakeClient
) -> None:
    s = Session(tmp_path, client)
    s.mode.start()
    (tmp_path / "plugin.toml").write_text(TOML + 'description = "new"\n')
    s.follow(2)
    assert s.created == 2
    assert "HH:MM:SS plugin.toml changed: building the dev plugin again" in s.lines()


def test_a_failed_rebuild_says_so_and_tries_again_on_the_next_save(
    tmp_path: Path, client: FakeClient
) -> None:
    s = Session(tmp_path, client)
    s.mode.start()
    (tmp_path / "plugin.toml").write_text("[plugin\n")
    s.follow(2)
    assert s.lines()[-2:] == [
        f"HH:MM:SS error: {tmp_path}/plugin.toml: invalid TOML: Expected ']' at the end of a "
        "table declaration (at line 1, column 8)",
        "         fix it and save: dev mode tries again",
    ]
    assert s.created == 2  # once, not at every look
    (tmp_path / "plugin.toml").write_text(TOML)
    s.follow(2)
    assert s.created == 3
    assert s.lines()[-1] == "HH:MM:SS plugin.toml changed: building the dev plugin again"


def test_leaving_removes_the_dev_plugin_and_its_files(tmp_path: Path, client: FakeClient) -> None:
    s = Session(tmp_path, client)
    s.mode.start()
    assert (tmp_path / ".build/dev/status").is_dir()
    s.mode.leave()
    assert "acme/vol:latest" not in client.api.plugins
    assert not (tmp_path / ".build/dev").exists()
    assert s.lines()[-1] == "==> remove the dev plugin acme/vol:latest"


def test_a_dev_plugin_replaced_meanwhile_is_left_alone(tmp_path: Path, client: FakeClient) -> None:
    s = Session(tmp_path, client)
    s.mode.start()
    client.api.plugins["acme/vol:latest"]["Id"] = PLUGIN_ID  # make plugin, elsewhere
    s.mode.follow()  # returns: not ours any more
    assert s.lines()[-1] == (
        "HH:MM:SS acme/vol:latest was removed or replaced (by make plugin?): leaving dev mode"
    )
    s.mode.leave()
    assert client.api.plugins["acme/vol:latest"]["Id"] == PLUGIN_ID
    assert not (tmp_path / ".build/dev").exists()


def test_leaving_builds_a_normal_plugin_again_when_dev_mode_replaced_one(
    tmp_path: Path, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.api.add("acme/vol:latest", enabled=True)  # a normal build
    s = Session(tmp_path, client)
    s.mode.start()
    assert s.mode.restore
    bundle = tmp_path / "rootfs-build"
    make_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(good()))

    def build_bundle(project: Any, client: Any, step: Any, report: Any) -> Any:
        from plugin.bundle._builder import BuildResult

        return BuildResult(bundle, good(), [], 1)

    monkeypatch.setattr("plugin.bundle._builder.build_bundle", build_bundle)
    s.mode.leave()
    info = client.api.plugins["acme/vol:latest"]
    assert info["Enabled"] is True
    assert dev_source(info) is None
    assert s.lines() == [
        "    acme/vol:latest is a normal build: dev mode replaces it, and builds it again when "
        "you leave",
        "",
        "leaving dev mode: a normal build of acme/vol:latest takes the dev plugin's place",
        "==> create acme/vol:latest",
        f"    removing the existing acme/vol:latest ({s.mode.plugin_id[:12]})",
        f"    packing {bundle}",
        "    sending 0.0 MB to the daemon",
        "==> enable acme/vol:latest",
    ]
    assert not (tmp_path / ".build/dev").exists()


def test_dev_mode_needs_a_daemon_on_this_host(
    tmp_path: Path, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plugin.toml").write_text(TOML)
    client.api.base_url = "http://10.0.0.5:2375"
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")
    out = io.StringIO()
    assert main(["--project", str(tmp_path / "plugin.toml"), "dev"], out=out) == 1
    assert out.getvalue().splitlines()[-1] == (
        "error: dev mode runs the project's source from this host: the Docker daemon must run "
        "here too (DOCKER_HOST is tcp://10.0.0.5:2375)"
    )
