"""The engine steps, against a fake docker client that answers like the daemon."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.errors import (  # type: ignore[import-untyped,unused-ignore]
    APIError,
    ImageNotFound,
    NotFound,
)

from plugin.bundle import EngineError, ProjectError
from plugin.bundle._engine import Engine

PLUGIN_ID = "5f2a" + "0" * 60


@dataclass
class FakeResponse:
    status_code: int
    message: str = ""


class FakeAPI:
    """The plugin endpoints of docker-py's APIClient, over an in-memory daemon.

    Errors are the exceptions docker-py raises: NotFound for a 404, APIError
    with the daemon's message as ``explanation`` otherwise.
    """

    def __init__(self) -> None:
        self.base_url = "http+docker://localhost"
        self.arch = "amd64"
        self.root_dir = "/nonexistent-docker-root"
        self.plugins: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.bodies: list[bytes] = []
        self.enable_error: str | None = None
        #: Errors of the next enable calls, in order (then enable_error).
        self.enable_errors: list[str] = []
        #: The daemon's log, and what an enable call writes into it.
        self.log: tuple[Path, str] | None = None
        #: Plugins with volumes (networks, loggers): the daemon's reference count.
        self.in_use: set[str] = set()
        #: The ID the next created plugin gets.
        self.next_id = PLUGIN_ID
        #: What pull_plugin finds in the registry: reference -> inspect document.
        self.remote: dict[str, dict[str, Any]] = {}

    # -- helpers for tests
    def add(
        self,
        name: str,
        *,
        enabled: bool = False,
        mounts: list[Any] | None = None,
        config: dict[str, Any] | None = None,
        plugin_id: str = PLUGIN_ID,
    ) -> None:
        """A plugin as the daemon creates it: ``Config`` from config.json
        (``config``, lower-case keys as rendered; or only ``mounts``, already
        in the daemon's casing), ``Settings`` from the config's values."""
        if config is not None:
            mounts = [_daemon_case(m) for m in config.get("mounts") or []]
        config = config or {}
        env = [_daemon_case(e) for e in config.get("env") or []]
        devices = [_daemon_case(d) for d in (config.get("linux") or {}).get("devices") or []]
        args = _daemon_case(config.get("args") or {"name": "", "value": None})
        self.plugins[name] = {
            "Id": plugin_id,
            "Name": name,
            "Enabled": enabled,
            "Settings": {
                "Mounts": json.loads(json.dumps(mounts or [])),
                "Env": [f"{e['Name']}={e['Value']}" for e in env if e.get("Value") is not None],
                "Args": list(args.get("Value") or []),
                "Devices": json.loads(json.dumps(devices)),
            },
            "PluginReference": name,
            "Config": {
                "Mounts": mounts or [],
                "Env": env,
                "Args": args,
                "Linux": {"Devices": devices},
                "Interface": {"Socket": "t.sock", "Types": ["docker.volumedriver/1.0"]},
            },
        }

    @staticmethod
    def error(status: int, message: str) -> APIError:
        cls = NotFound if status == 404 else APIError
        reason = "Not Found" if status == 404 else "Internal Server Error"
        return cls(f"{status} Server Error: {reason}", response=None, explanation=message)

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self.plugins:
            raise self.error(404, f'plugin "{name}" not found')
        return self.plugins[name]

    # -- what Engine calls
    def version(self) -> dict[str, Any]:
        return {"Os": "linux", "Arch": self.arch, "ApiVersion": "1.41"}

    def info(self) -> dict[str, Any]:
        return {"DockerRootDir": self.root_dir}

    def _url(self, path: str, *args: str) -> str:
        return "http+docker://localhost/v1.45" + path.format(*args)

    def _post(
        self, url: str, params: dict[str, str], data: Any, headers: dict[str, str]
    ) -> FakeResponse:
        self.calls.append(("post", url, params, headers))
        body = data.read()
        self.bodies.append(body)
        name = params["name"]
        if name in self.plugins:
            return FakeResponse(500, f"plugin {name} already exists")
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            member = tar.extractfile("config.json")
            assert member is not None
            config = json.load(member)
        self.add(name, config=config, plugin_id=self.next_id)
        return FakeResponse(204)

    def _raise_for_status(self, response: FakeResponse) -> None:
        if response.status_code >= 400:
            raise self.error(response.status_code, response.message)

    def inspect_plugin(self, name: str) -> dict[str, Any]:
        self.calls.append(("inspect", name))
        copy: dict[str, Any] = json.loads(json.dumps(self._get(name)))
        return copy

    def configure_plugin(self, name: str, options: list[str]) -> bool:
        self.calls.append(("set", name, options))
        plugin = self._get(name)
        if plugin["Enabled"]:
            raise self.error(500, "cannot set on an active plugin, disable plugin before setting")
        for option in options:
            _apply_setting(plugin, option)
        return True

    def plugin_privileges(self, remote: str) -> list[dict[str, Any]]:
        self.calls.append(("privileges", remote))
        return []

    def pull_plugin(self, remote: str, privileges: Any, name: str) -> Iterator[dict[str, str]]:
        """Installs a copy of the plugin ``remote`` names in ``self.remote``."""
        self.calls.append(("pull", remote, name))
        self.plugins[name] = {**json.loads(json.dumps(self.remote[remote])), "Name": name}
        return iter([{"status": "Download complete"}])

    def enable_plugin(self, name: str, timeout: int = 0) -> bool:
        self.calls.append(("enable", name, timeout))
        plugin = self._get(name)
        if plugin["Enabled"]:
            raise self.error(500, f"plugin {name} is already enabled")
        if self.log is not None:
            path, text = self.log
            with path.open("a") as f:
                f.write(text)
        if self.enable_errors:
            raise self.error(500, self.enable_errors.pop(0))
        if self.enable_error:
            raise self.error(500, self.enable_error)
        plugin["Enabled"] = True
        return True

    def disable_plugin(self, name: str, force: bool = False) -> bool:
        self.calls.append(("disable", name, force))
        plugin = self._get(name)
        if name in self.in_use and not force:
            raise self.error(500, f"plugin {name} is in use")
        plugin["Enabled"] = False
        return True

    def remove_plugin(self, name: str, force: bool = False) -> bool:
        self.calls.append(("remove", name, force))
        plugin = self._get(name)
        if name in self.in_use and not force:
            raise self.error(500, f"plugin {name} is in use")
        if plugin["Enabled"] and not force:
            raise self.error(500, f"plugin {name} is enabled")
        del self.plugins[name]
        return True


def _daemon_case(item: dict[str, Any]) -> dict[str, Any]:
    """A config.json element as the daemon shows it (``source`` -> ``Source``)."""
    return {key[:1].upper() + key[1:]: value for key, value in item.items()}


def _apply_setting(plugin: dict[str, Any], option: str) -> None:
    """``docker plugin set`` as the daemon does it: the name is looked up in
    env, then mounts, devices and args; the field must be settable."""
    key, _, value = option.partition("=")
    name, field = key, ""
    if "." in key[1:]:
        name, _, field = key.rpartition(".")
    config, settings = plugin["Config"], plugin["Settings"]
    tables = [
        ("Env", config["Env"], "value"),
        ("Mounts", config["Mounts"], "source"),
        ("Devices", config["Linux"]["Devices"], "path"),
        ("Args", [config["Args"]] if config["Args"].get("Name") else [], "value"),
    ]
    for kind, items, allowed in tables:
        item = next((i for i in items if i.get("Name") == name), None)
        if item is None:
            continue
        settable = item.get("Settable") or []
        if (field or allowed) not in settable:
            raise FakeAPI.error(500, f"{name!r} is not settable")
        if kind == "Env":
            env = [e for e in settings["Env"] if e.partition("=")[0] != name]
            settings["Env"] = [*env, f"{name}={value}"]
        elif kind == "Mounts":
            item["Source"] = value
        elif kind == "Devices":
            item["Path"] = value
        else:
            settings["Args"] = value.split(" ")
        return
    raise FakeAPI.error(500, f'setting "{name}" not found in the plugin configuration')


@dataclass
class FakeImage:
    id: str
    attrs: dict[str, Any]


class FakeImages:
    def __init__(self) -> None:
        self.images: dict[str, FakeImage] = {}

    def get(self, name: str) -> FakeImage:
        if name not in self.images:
            raise ImageNotFound(
                "404 Client Error: Not Found", response=None, explanation=f"No such image: {name}"
            )
        return self.images[name]


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()
        self.images = FakeImages()

    def version(self) -> dict[str, Any]:
        return self.api.version()


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def engine(client: FakeClient, lines: list[str]) -> Engine:
    return Engine(client, report=lines.append)


def config() -> dict[str, Any]:
    """The config.json of the test bundle: settable env, mount, device and args."""
    return {
        "entrypoint": ["/usr/bin/python3"],
        "interface": {"types": ["docker.volumedriver/1.0"], "socket": "t.sock"},
        "mounts": [
            {
                "name": "data",
                "settable": ["source"],
                "source": "/srv/t",
                "destination": "/data",
                "type": "bind",
                "options": ["rbind"],
            }
        ],
        "env": [
            {"name": "LOG_LEVEL", "settable": ["value"], "value": "info"},
            {"name": "SIZE", "settable": ["value"], "value": "64m"},
            {"name": "TOKEN", "settable": ["value"], "value": None},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "linux": {"devices": [{"name": "fuse", "settable": ["path"], "path": "/dev/fuse"}]},
        "args": {"name": "flags", "settable": ["value"], "value": ["-v"]},
    }


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs/usr/bin").mkdir(parents=True)
    (bundle / "rootfs/run/docker/plugins").mkdir(parents=True)
    (bundle / "rootfs/usr/bin/python3").write_text("#!\n")
    (bundle / "config.json").write_text(json.dumps(config()))
    return bundle


def posted(client: FakeClient) -> dict[str, bytes | None]:
    """The last create body: member name -> content (None for directories)."""
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(client.api.bodies[-1])) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member) if member.isfile() else None
            out[member.name] = f.read() if f is not None else None
    return out


# --- create -----------------------------------------------------------------------------


@pytest.fixture(params=["tar", "tarfile"])
def packer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both ways of packing the bundle: GNU tar, and Python's tarfile."""
    if request.param == "tarfile":
        monkeypatch.setattr(shutil, "which", lambda name: None)
    elif shutil.which("tar") is None:
        pytest.skip("no tar here")
    yield request.param


def test_create_sends_the_bundle_and_the_ref(
    engine: Engine, client: FakeClient, bundle: Path, lines: list[str], packer: str
) -> None:
    assert engine.create("acme/vol", bundle) == PLUGIN_ID
    (call,) = [c for c in client.api.calls if c[0] == "post"]
    assert call == (
        "post",
        "http+docker://localhost/v1.45/plugins/create",
        {"name": "acme/vol:latest"},
        {"Content-Type": "application/x-tar"},
    )
    members = posted(client)
    assert sorted(members) == [
        "config.json",
        "rootfs",
        "rootfs/.plugin-ref",
        "rootfs/run",
        "rootfs/run/docker",
        "rootfs/run/docker/plugins",
        "rootfs/usr",
        "rootfs/usr/bin",
        "rootfs/usr/bin/python3",
    ]
    assert members["rootfs/.plugin-ref"] == b"acme/vol:latest\n"
    assert members["config.json"] == (bundle / "config.json").read_bytes()
    assert members["rootfs/usr/bin/python3"] == b"#!\n"
    assert lines[0] == f"packing {bundle}"
    assert lines[1].startswith("sending 0.0 MB to the daemon")


def test_create_refuses_an_existing_plugin(
    engine: Engine, client: FakeClient, bundle: Path
) -> None:
    client.api.add("acme/vol:latest")
    with pytest.raises(EngineError) as exc:
        engine.create("acme/vol", bundle)
    assert str(exc.value) == (
        "plugin acme/vol:latest already exists (remove it, or create with --replace)"
    )
    assert client.api.bodies == []


def test_create_with_replace_removes_the_old_one_first(
    engine: Engine, client: FakeClient, bundle: Path, lines: list[str]
) -> None:
    client.api.add("acme/vol:latest", enabled=True)
    assert engine.create("acme/vol:latest", bundle, replace=True) == PLUGIN_ID
    assert [c[0] for c in client.api.calls] == ["inspect", "remove", "post", "inspect"]
    assert client.api.calls[1] == ("remove", "acme/vol:latest", True)
    assert lines[0] == f"removing the existing acme/vol:latest ({PLUGIN_ID[:12]})"
    assert client.api.plugins["acme/vol:latest"]["Enabled"] is False


NEW_ID = "9" * 64


@pytest.fixture
def customized(client: FakeClient) -> dict[str, Any]:
    """acme/vol:latest as this host left it: settings changed with `docker
    plugin set` (LOG_LEVEL left at its default)."""
    client.api.add("acme/vol:latest", config=config())
    client.api.configure_plugin(
        "acme/vol:latest",
        ["SIZE=16m", "TOKEN=abc", "data.source=/srv/vols", "fuse.path=/dev/fuse2", "flags=-v -x"],
    )
    client.api.next_id = NEW_ID
    return client.api.plugins["acme/vol:latest"]


def test_a_rebuild_keeps_this_hosts_settings(
    engine: Engine, client: FakeClient, bundle: Path, lines: list[str], customized: Any
) -> None:
    assert engine.create("acme/vol", bundle, replace=True) == NEW_ID
    kept = ["SIZE=16m", "TOKEN=abc", "flags=-v -x", "data.source=/srv/vols", "fuse.path=/dev/fuse2"]
    assert client.api.calls[-1] == ("set", "acme/vol:latest", kept)
    assert lines[-1] == "keeping this host's settings: " + " ".join(kept)
    new = client.api.plugins["acme/vol:latest"]
    assert new["Settings"]["Env"] == [
        "LOG_LEVEL=info",
        "PYTHONUNBUFFERED=1",
        "SIZE=16m",
        "TOKEN=abc",
    ]
    assert new["Settings"]["Args"] == ["-v", "-x"]
    assert new["Config"]["Mounts"][0]["Source"] == "/srv/vols"
    assert new["Config"]["Linux"]["Devices"][0]["Path"] == "/dev/fuse2"


def test_a_setting_the_new_config_has_no_place_for_is_reported(
    engine: Engine, client: FakeClient, bundle: Path, lines: list[str], customized: Any
) -> None:
    changed = config()
    changed["env"] = [e for e in changed["env"] if e["name"] != "SIZE"]
    changed["env"][1]["settable"] = []  # TOKEN
    changed["mounts"][0]["name"] = "state"
    del changed["args"]
    changed["linux"]["devices"][0]["path"] = "/dev/fuse2"  # the new default: nothing to carry
    (bundle / "config.json").write_text(json.dumps(changed))
    engine.create("acme/vol", bundle, replace=True)
    assert lines[-4:] == [
        "not kept: SIZE=16m (the new config has no such setting)",
        "not kept: TOKEN=abc (not settable in the new config)",
        "not kept: flags=-v -x (the new config has no such setting)",
        "not kept: data.source=/srv/vols (the new config has no such setting)",
    ]
    assert [c[0] for c in client.api.calls[-2:]] == ["post", "inspect"]  # nothing to set


def test_a_rebuild_with_reset_settings_starts_from_the_defaults(
    engine: Engine, client: FakeClient, bundle: Path, lines: list[str], customized: Any
) -> None:
    engine.create("acme/vol", bundle, replace=True, keep_settings=False)
    assert lines[-1] == (
        "not keeping this host's settings (--reset-settings): SIZE=16m TOKEN=abc flags=-v -x "
        "data.source=/srv/vols fuse.path=/dev/fuse2"
    )
    assert [c[0] for c in client.api.calls[-2:]] == ["post", "inspect"]  # nothing set
    assert client.api.plugins["acme/vol:latest"]["Settings"]["Env"] == [
        "LOG_LEVEL=info",
        "SIZE=64m",
        "PYTHONUNBUFFERED=1",
    ]


def test_a_rebuild_of_a_plugin_left_at_its_defaults_sets_nothing(
    engine: Engine, client: FakeClient, bundle: Path, lines: list[str]
) -> None:
    client.api.add("acme/vol:latest", config=config())
    engine.create("acme/vol", bundle, replace=True)
    assert [c[0] for c in client.api.calls] == ["inspect", "remove", "post", "inspect"]
    assert not [line for line in lines if "settings" in line or "kept" in line]


def test_create_reports_the_daemon_refusal(
    engine: Engine, client: FakeClient, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(response: FakeResponse) -> None:
        raise client.api.error(500, "config not found")

    monkeypatch.setattr(client.api, "_raise_for_status", refuse)
    with pytest.raises(EngineError) as exc:
        engine.create("acme/vol", bundle)
    assert str(exc.value) == "create acme/vol:latest: config not found"


def test_create_needs_a_bundle(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(EngineError) as exc:
        engine.create("acme/vol", tmp_path)
    assert str(exc.value) == (
        f"{tmp_path} is not a plugin bundle (config.json and rootfs/ expected)"
    )


# --- set --------------------------------------------------------------------------------


def test_set(engine: Engine, client: FakeClient) -> None:
    client.api.add("acme/vol:latest", config=config())
    engine.set("acme/vol", ["data.source=/srv", "LOG_LEVEL=debug"])
    assert client.api.calls[-1] == (
        "set",
        "acme/vol:latest",
        ["data.source=/srv", "LOG_LEVEL=debug"],
    )


def test_set_needs_key_value(engine: Engine, client: FakeClient) -> None:
    client.api.add("acme/vol:latest")
    for bad in ("DEBUG", "=1"):
        with pytest.raises(EngineError) as exc:
            engine.set("acme/vol", ["LOG_LEVEL=debug", bad])
        assert str(exc.value) == f"set acme/vol:latest: {bad!r} must be written KEY=VALUE"
    assert client.api.calls == []


def test_set_on_an_enabled_plugin(engine: Engine, client: FakeClient) -> None:
    client.api.add("acme/vol:latest", enabled=True)
    with pytest.raises(EngineError) as exc:
        engine.set("acme/vol", ["DEBUG=1"])
    assert str(exc.value) == (
        "set acme/vol:latest: cannot set on an active plugin, disable plugin before setting"
    )


def test_set_on_a_missing_plugin(engine: Engine) -> None:
    with pytest.raises(EngineError) as exc:
        engine.set("acme/vol", ["DEBUG=1"])
    assert str(exc.value) == 'set acme/vol:latest: plugin "acme/vol:latest" not found'


# --- enable -----------------------------------------------------------------------------


def bind(name: str, source: str) -> dict[str, Any]:
    return {
        "Name": name,
        "Source": source,
        "Destination": f"/{name}",
        "Type": "bind",
        "Options": ["rbind"],
    }


def test_enable(engine: Engine, client: FakeClient) -> None:
    client.api.add("acme/vol:latest")
    engine.enable("acme/vol", timeout=12)
    assert client.api.calls[-1] == ("enable", "acme/vol:latest", 12)
    assert client.api.plugins["acme/vol:latest"]["Enabled"] is True


def test_enable_an_enabled_plugin_does_nothing(
    engine: Engine, client: FakeClient, lines: list[str]
) -> None:
    client.api.add("acme/vol:latest", enabled=True)
    engine.enable("acme/vol")
    assert client.api.calls == [("inspect", "acme/vol:latest")]
    assert lines == ["acme/vol:latest is already enabled"]


def test_enable_a_missing_plugin(engine: Engine) -> None:
    with pytest.raises(EngineError) as exc:
        engine.enable("acme/vol")
    assert str(exc.value) == "enable acme/vol:latest: no such plugin"


def test_enable_creates_missing_bind_sources_on_a_local_daemon(
    engine: Engine, client: FakeClient, lines: list[str], tmp_path: Path
) -> None:
    there = tmp_path / "there"
    there.mkdir()
    missing = tmp_path / "a/b"
    client.api.add(
        "acme/vol:latest",
        mounts=[
            bind("data", str(missing)),
            bind("there", str(there)),
            bind("unset", ""),
            {"Name": "tmp", "Source": str(tmp_path / "tmpfs"), "Type": "tmpfs", "Options": []},
        ],
    )
    engine.enable("acme/vol")
    assert missing.is_dir()
    assert (missing.stat().st_mode & 0o777) == 0o700
    assert not (tmp_path / "tmpfs").exists()
    assert lines == [f"created the mount source {missing} (data)"]


def test_enable_reads_the_mounts_of_the_config(
    engine: Engine, client: FakeClient, tmp_path: Path
) -> None:
    # After a daemon restart Settings.Mounts is stale; Config.Mounts is what
    # `docker plugin set` changed and what the daemon mounts.
    client.api.add("acme/vol:latest", mounts=[bind("data", str(tmp_path / "old"))])
    client.api.plugins["acme/vol:latest"]["Config"]["Mounts"] = [
        bind("data", str(tmp_path / "new"))
    ]
    engine.enable("acme/vol")
    assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "old").exists()


def test_enable_leaves_a_remote_daemon_alone(
    engine: Engine, client: FakeClient, tmp_path: Path
) -> None:
    client.api.base_url = "http://10.1.2.3:2375"
    client.api.add("acme/vol:latest", mounts=[bind("data", str(tmp_path / "data"))])
    engine.enable("acme/vol")
    assert not (tmp_path / "data").exists()
    assert client.api.plugins["acme/vol:latest"]["Enabled"] is True


def test_enable_reports_a_source_it_cannot_create(
    engine: Engine, client: FakeClient, lines: list[str], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    client.api.add("acme/vol:latest", mounts=[bind("data", str(tmp_path / "file/sub"))])
    engine.enable("acme/vol")
    assert lines == [f"cannot create the mount source {tmp_path}/file/sub: Not a directory"]


def test_an_enable_failure_shows_the_plugin_output(
    engine: Engine, client: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "dockerd.log"
    other = "9" * 64
    # Before this enable: another attempt's output, not shown.
    log.write_text(f'time="2024-05-01T11:00:00Z" level=error msg="stale" plugin={PLUGIN_ID}\n')
    client.api.log = (
        log,
        f'time="2024-05-01T12:00:00Z" level=info msg="Loading containers: start."\n'
        f'time="2024-05-01T12:00:01Z" level=error msg="Traceback (most recent call last):"'
        f" plugin={PLUGIN_ID}\n"
        f'time="2024-05-01T12:00:01Z" level=error msg="  File \\"/opt/plugin/x.py\\", '
        f'line 1, in <module>" plugin={PLUGIN_ID}\n'
        f'time="2024-05-01T12:00:01Z" level=error msg="other plugin" plugin={other}\n'
        f"time=2024-05-01T12:00:01Z level=error msg=ValueError:boom plugin={PLUGIN_ID}\n",
    )
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(log))
    client.api.add("acme/vol:latest")
    client.api.enable_error = "dial unix /run/docker/plugins/x/t.sock: connect: no such file"
    with pytest.raises(EngineError) as exc:
        engine.enable("acme/vol")
    assert str(exc.value) == (
        "enable acme/vol:latest: dial unix /run/docker/plugins/x/t.sock: connect: no such file\n"
        "  the plugin's last output:\n"
        "    Traceback (most recent call last):\n"
        '      File "/opt/plugin/x.py", line 1, in <module>\n'
        "    ValueError:boom"
    )


def test_a_plugin_that_stops_at_start_leads_the_enable_error_with_its_reason(
    engine: Engine, client: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the daemon logs when a plugin exits at start: it runs it twice
    # (enable, then once more when it exits), then fails enable.
    said = (
        'bad setting SIZE=\\"16x\\": not a size; change it with docker plugin set PLUGIN SIZE=VALUE'
    )
    line = f'time="2024-05-01T12:00:01Z" level=error msg="plugin: cannot start: {said}"'
    log = tmp_path / "dockerd.log"
    log.write_text("")
    client.api.log = (log, f"{line} plugin={PLUGIN_ID}\n" * 2)
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(log))
    client.api.add("acme/vol:latest")
    client.api.enable_error = "dial unix /run/docker/plugins/x/t.sock: connect: no such file"
    with pytest.raises(EngineError) as exc:
        engine.enable("acme/vol")
    assert str(exc.value) == (
        'enable acme/vol:latest: the plugin stopped at start: bad setting SIZE="16x": not a '
        "size; change it with docker plugin set acme/vol:latest SIZE=VALUE\n"
        "  (the daemon said: dial unix /run/docker/plugins/x/t.sock: connect: no such file)"
    )


def test_enable_waits_while_the_daemon_removes_the_last_failed_start(
    engine: Engine, client: FakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """dockerd 20.10, right after an enable failed because the plugin exited:
    "error creating containerd container: id already in use" for a moment."""
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(tmp_path / "none.log"))
    client.api.add("acme/vol:latest")
    in_use = "error creating containerd container: id already in use"
    client.api.enable_errors = [in_use, in_use]
    engine.enable("acme/vol")
    assert [c[0] for c in client.api.calls].count("enable") == 3
    assert client.api.plugins["acme/vol:latest"]["Enabled"] is True


def test_enable_ends_when_the_daemon_enabled_the_plugin_itself(
    engine: Engine, client: FakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The daemon re-runs enable when the last failed start's process exits.
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(tmp_path / "none.log"))
    client.api.add("acme/vol:latest")
    client.api.enable_errors = ["error creating containerd container: id already in use"]
    real = client.api.inspect_plugin

    def inspect(name: str) -> dict[str, Any]:
        if [c[0] for c in client.api.calls].count("enable") == 1:
            client.api.plugins[name]["Enabled"] = True
        return real(name)

    monkeypatch.setattr(client.api, "inspect_plugin", inspect)
    engine.enable("acme/vol")
    assert [c[0] for c in client.api.calls].count("enable") == 1


def test_enable_gives_up_waiting_after_a_while(
    engine: Engine, client: FakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import plugin.bundle._engine as engine_module

    monkeypatch.setattr(engine_module, "ENABLE_SETTLE", 0.3)
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(tmp_path / "none.log"))
    client.api.add("acme/vol:latest")
    client.api.enable_error = "error creating containerd container: id already in use"
    with pytest.raises(EngineError) as exc:
        engine.enable("acme/vol")
    assert str(exc.value) == (
        "enable acme/vol:latest: error creating containerd container: id already in use\n"
        f"  the plugin's output is in the daemon's log: lines with plugin={PLUGIN_ID}"
    )


def test_an_enable_failure_without_a_log_says_where_to_look(
    engine: Engine, client: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(tmp_path / "none.log"))
    client.api.add("acme/vol:latest")
    client.api.enable_error = "timeout"
    with pytest.raises(EngineError) as exc:
        engine.enable("acme/vol")
    assert str(exc.value) == (
        "enable acme/vol:latest: timeout\n"
        f"  the plugin's output is in the daemon's log: lines with plugin={PLUGIN_ID}"
    )


# --- disable, remove, inspect -----------------------------------------------------------


def test_disable(engine: Engine, client: FakeClient, lines: list[str]) -> None:
    client.api.add("acme/vol:latest", enabled=True)
    engine.disable("acme/vol", force=True)
    assert client.api.calls[-1] == ("disable", "acme/vol:latest", True)
    engine.disable("acme/vol")
    assert [c[0] for c in client.api.calls] == ["inspect", "disable", "inspect"]
    assert lines == ["acme/vol:latest is already disabled"]
    with pytest.raises(EngineError) as exc:
        engine.disable("other")
    assert str(exc.value) == "disable other:latest: no such plugin"


@pytest.mark.parametrize(
    ("kind", "users", "kept"),
    [
        ("docker.volumedriver/1.0", "volumes made with it", "the volumes and their data"),
        ("docker.networkdriver/1.0", "networks made with it", "the networks"),
        ("docker.logdriver/1.0", "containers logging through it", "the containers"),
    ],
)
def test_a_disable_refused_for_users_names_force_and_what_it_keeps(
    engine: Engine, client: FakeClient, kind: str, users: str, kept: str
) -> None:
    client.api.add("acme/vol:latest", enabled=True)
    client.api.plugins["acme/vol:latest"]["Config"]["Interface"]["Types"] = [kind]
    client.api.in_use.add("acme/vol:latest")
    with pytest.raises(EngineError) as exc:
        engine.disable("acme/vol")
    assert str(exc.value) == (
        f"disable acme/vol:latest: plugin acme/vol:latest is in use: {users} exist. "
        "`disable --force` (docker plugin disable -f) disables it anyway and keeps "
        f"{kept}; they work again once the plugin is enabled"
    )
    assert client.api.plugins["acme/vol:latest"]["Enabled"] is True
    engine.disable("acme/vol", force=True)
    assert client.api.plugins["acme/vol:latest"]["Enabled"] is False


def test_a_remove_refused_for_users_says_what_to_remove_first(
    engine: Engine, client: FakeClient
) -> None:
    client.api.add("acme/vol:latest")
    client.api.in_use.add("acme/vol:latest")
    with pytest.raises(EngineError) as exc:
        engine.remove("acme/vol")
    assert str(exc.value) == (
        "remove acme/vol:latest: plugin acme/vol:latest is in use: volumes made with it "
        "exist; remove them first. `rm --force` removes the plugin anyway and leaves them "
        "without their driver"
    )


def test_remove(engine: Engine, client: FakeClient) -> None:
    assert engine.remove("acme/vol") is False
    client.api.add("acme/vol:latest", enabled=True)
    with pytest.raises(EngineError) as exc:
        engine.remove("acme/vol")
    assert str(exc.value) == "remove acme/vol:latest: plugin acme/vol:latest is enabled"
    assert engine.remove("acme/vol", force=True) is True
    assert client.api.plugins == {}


def test_inspect(engine: Engine, client: FakeClient) -> None:
    assert engine.inspect("acme/vol") is None
    client.api.add("acme/vol:latest")
    assert engine.inspect("acme/vol") == client.api.plugins["acme/vol:latest"]


def test_an_invalid_name_is_refused_before_the_daemon(engine: Engine, client: FakeClient) -> None:
    with pytest.raises(ProjectError) as exc:
        engine.inspect("Acme Vol")
    assert str(exc.value).startswith("invalid plugin name 'Acme Vol': ")
    assert client.api.calls == []


def test_other_daemon_errors_are_engine_errors(
    engine: Engine, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str) -> None:
        raise client.api.error(500, "permission denied")

    monkeypatch.setattr(client.api, "inspect_plugin", broken)
    with pytest.raises(EngineError) as exc:
        engine.enable("acme/vol")
    assert str(exc.value) == "inspect acme/vol:latest: permission denied"


def test_an_unreachable_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    import docker  # type: ignore[import-untyped,unused-ignore]
    from docker.errors import DockerException  # type: ignore[import-untyped,unused-ignore]

    def from_env(**kwargs: Any) -> Any:
        raise DockerException(
            "Error while fetching server API version: ('Connection aborted.', "
            "FileNotFoundError(2, 'No such file or directory'))"
        )

    monkeypatch.setattr(docker, "from_env", from_env)
    with pytest.raises(EngineError) as exc:
        Engine()
    assert str(exc.value) == (
        "cannot reach the Docker daemon (Error while fetching server API version: ('Connection "
        "aborted.', FileNotFoundError(2, 'No such file or directory'))); start it "
        "(scripts/engine start) or set DOCKER_HOST"
    )


# --- images a rebuild replaces ------------------------------------------------------------


def test_a_build_removes_the_untagged_images_of_its_bundle_and_no_other(tmp_path: Path) -> None:
    from plugin.bundle._rootfs import BUNDLE_LABEL, remove_replaced_images

    class Images:
        """The daemon's answer to the filter: what earlier builds of the
        bundle left untagged (one still used by a container)."""

        def __init__(self) -> None:
            self.filters: list[dict[str, Any]] = []
            self.removed: list[str] = []

        def list(self, filters: dict[str, Any]) -> list[FakeImage]:
            self.filters.append(filters)
            return [FakeImage(i, {}) for i in ("sha256:old", "sha256:new", "sha256:busy")]

        def remove(self, image: str) -> None:
            if image == "sha256:busy":
                raise APIError(
                    "409 Client Error: Conflict",
                    response=None,
                    explanation="conflict: unable to delete busy (must be forced) - image is "
                    "being used by stopped container 1234",
                )
            self.removed.append(image)

    client = FakeClient()
    client.images = Images()  # type: ignore[assignment]
    assert remove_replaced_images(client, tmp_path / "bundle", "sha256:new") == ["sha256:old"]
    assert client.images.filters == [  # type: ignore[attr-defined]
        {"dangling": True, "label": f"{BUNDLE_LABEL}={tmp_path / 'bundle'}"}
    ]
    assert client.images.removed == ["sha256:old"]  # type: ignore[attr-defined]


# --- an image removed under a build ---------------------------------------------------------------

#: What dockerd 20.10 answers when the image a build step started from (a
#: layer it reused as cache) was removed before the step was committed.
GONE = "sha256:" + "e13f" * 16
REMOVED = (
    f"failed to get digest {GONE}: open /var/lib/docker/image/overlay2/imagedb/content/"
    f"{GONE.replace(':', '/')}: no such file or directory"
)
#: The same, seen when the last step's image was to name the removed one as its parent.
PARENT_REMOVED = (
    f"failed to export image: failed to set parent {GONE}: unknown parent image ID {GONE}"
)
STEPS = [{"stream": "Step 1/2 : FROM base\n"}, {"stream": "Step 2/2 : RUN pip install\n"}]


class Builds:
    """The daemon's build streams, one per build, in order."""

    def __init__(self, *streams: list[dict[str, Any]]) -> None:
        self.streams = list(streams)
        self.calls = 0

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.calls += 1
        return iter(self.streams.pop(0))


def built_with(builds: Builds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run build_image against ``builds``; the progress lines (the ID as the last)."""
    from types import SimpleNamespace

    from plugin.bundle import _rootfs

    monkeypatch.setattr(_rootfs, "build_context", lambda project, wheels: io.BytesIO(b""))
    client = FakeClient()
    client.api = builds  # type: ignore[assignment]
    project = SimpleNamespace(image_tag="p-rootfs:build", bundle_dir=tmp_path / "bundle")
    said: list[str] = []
    image_id = _rootfs.build_image(client, project, "base", tmp_path, said.append)  # type: ignore[arg-type]
    return [*said, image_id]


def failed(message: str) -> dict[str, Any]:
    return {"errorDetail": {"message": message}, "error": message}


@pytest.mark.parametrize("gone", [REMOVED, PARENT_REMOVED], ids=["digest", "parent"])
def test_a_build_whose_cache_image_was_removed_meanwhile_builds_again_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    builds = Builds([*STEPS, failed(gone)], [*STEPS, {"aux": {"ID": "sha256:new"}}])
    assert built_with(builds, tmp_path, monkeypatch) == [
        "Step 1/2 : FROM base",
        "Step 2/2 : RUN pip install",
        "an image this build was reusing as cache (e13fe13fe13f) was removed meanwhile (an "
        "image removal or another build on this daemon): building again",
        "Step 1/2 : FROM base",
        "Step 2/2 : RUN pip install",
        "sha256:new",
    ]
    assert builds.calls == 2


def test_a_build_builds_again_only_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plugin.bundle import BuildError

    builds = Builds([failed(REMOVED)], [failed(REMOVED)], [{"aux": {"ID": "sha256:new"}}])
    with pytest.raises(BuildError) as raised:
        built_with(builds, tmp_path, monkeypatch)
    assert str(raised.value) == f"docker build failed: {REMOVED}"
    assert builds.calls == 2


@pytest.mark.parametrize(
    "message",
    [
        "The command '/bin/sh -c pip install' returned a non-zero code: 1",
        # Not an image gone under the build: the daemon's own storage is broken.
        f"failed to get digest {GONE}: open /var/lib/docker/image/overlay2/imagedb/content/"
        f"{GONE.replace(':', '/')}: permission denied",
        f"failed to set parent {GONE}: invalid parent image {GONE}",
    ],
)
def test_other_build_failures_are_not_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    from plugin.bundle import BuildError

    builds = Builds([*STEPS, failed(message)], [{"aux": {"ID": "sha256:new"}}])
    with pytest.raises(BuildError) as raised:
        built_with(builds, tmp_path, monkeypatch)
    assert str(raised.value) == f"docker build failed: {message}"
    assert builds.calls == 1
