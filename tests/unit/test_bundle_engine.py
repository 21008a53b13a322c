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

    # -- helpers for tests
    def add(self, name: str, *, enabled: bool = False, mounts: list[Any] | None = None) -> None:
        self.plugins[name] = {
            "Id": PLUGIN_ID,
            "Name": name,
            "Enabled": enabled,
            "Settings": {"Mounts": mounts or [], "Env": [], "Args": [], "Devices": []},
            "PluginReference": name,
            "Config": {"Mounts": mounts or []},
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
        mounts = [
            {key.capitalize(): value for key, value in m.items()} for m in config.get("mounts", [])
        ]
        self.add(name, mounts=mounts)
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
        return True

    def enable_plugin(self, name: str, timeout: int = 0) -> bool:
        self.calls.append(("enable", name, timeout))
        plugin = self._get(name)
        if plugin["Enabled"]:
            raise self.error(500, f"plugin {name} is already enabled")
        if self.enable_error:
            raise self.error(500, self.enable_error)
        plugin["Enabled"] = True
        return True

    def disable_plugin(self, name: str, force: bool = False) -> bool:
        self.calls.append(("disable", name, force))
        self._get(name)["Enabled"] = False
        return True

    def remove_plugin(self, name: str, force: bool = False) -> bool:
        self.calls.append(("remove", name, force))
        plugin = self._get(name)
        if plugin["Enabled"] and not force:
            raise self.error(500, f"plugin {name} is enabled")
        del self.plugins[name]
        return True


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


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def engine(client: FakeClient, lines: list[str]) -> Engine:
    return Engine(client, report=lines.append)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs/usr/bin").mkdir(parents=True)
    (bundle / "rootfs/run/docker/plugins").mkdir(parents=True)
    (bundle / "rootfs/usr/bin/python3").write_text("#!\n")
    (bundle / "config.json").write_text(
        json.dumps(
            {
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
            }
        )
    )
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
    client.api.add("acme/vol:latest")
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
    log.write_text(
        f'time="2024-05-01T12:00:00Z" level=info msg="Loading containers: start."\n'
        f'time="2024-05-01T12:00:01Z" level=error msg="Traceback (most recent call last):"'
        f" plugin={PLUGIN_ID}\n"
        f'time="2024-05-01T12:00:01Z" level=error msg="  File \\"/opt/plugin/x.py\\", '
        f'line 1, in <module>" plugin={PLUGIN_ID}\n'
        f'time="2024-05-01T12:00:01Z" level=error msg="other plugin" plugin={other}\n'
        f"time=2024-05-01T12:00:01Z level=error msg=ValueError:boom plugin={PLUGIN_ID}\n"
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
