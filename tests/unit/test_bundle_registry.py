"""Publishing: several tags of several architectures (create, push, remove
each), the architecture checked before push, enable and install, and push
errors that say what the registry refused."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests.exceptions
import urllib3.exceptions
from docker.auth import AuthConfig, load_config  # type: ignore[import-untyped,unused-ignore]

import plugin.bundle._engine as engine_module
from plugin.bundle import EngineError
from plugin.bundle.__main__ import main
from plugin.bundle._engine import Engine
from plugin.bundle._platform import PLATFORM_ENV
from plugin.bundle._registry import (
    PLUGIN_MEDIA_TYPE,
    DaemonStopped,
    Pushed,
    install,
    plan_push,
    publish,
    push,
    upgrade,
)
from tests.unit.test_bundle_engine import FakeAPI, FakeClient, FakeResponse
from tests.unit.test_bundle_platform import AARCH64, X86_64

REPO = "localhost:5000/acme/vol"
CREDENTIALS = {"auths": {"localhost:5000": {"auth": "dXNlcjpwYXNz"}}}  # user:pass


def pushed_ok(name: str) -> list[dict[str, Any]]:
    """A push stream as the daemon sends it."""
    return [
        {"status": f"The push refers to repository [{name.rsplit(':', 1)[0]}]"},
        {"status": "Preparing", "progressDetail": {}, "id": "ab12"},
        {"status": "Pushing", "progressDetail": {"current": 512, "total": 9_000_000}, "id": "ab12"},
        {"status": "Pushed", "progressDetail": {}, "id": "ab12"},
        {"status": f"{name.rsplit(':', 1)[1]}: digest: sha256:d1 size: 525"},
        {"progressDetail": {}, "aux": {"Tag": name.rsplit(":", 1)[1], "Digest": "sha256:d1"}},
    ]


class RegistryAPI(FakeAPI):
    """The fake daemon, with push, privileges and pull, and the env of
    each created plugin's config (where the platform is recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self._auth_configs = AuthConfig({"auths": {"other.invalid": {"auth": "eDp5"}}})
        self.credstore_env = None
        self.push_stream: Iterable[Any] | None = None
        #: Whether the daemon answers a ping (it died in the middle of a push).
        self.up = True
        self.refs: dict[str, bytes] = {}
        self.registry: dict[str, list[dict[str, str]]] = {}  # remote -> config env

    def _post(
        self,
        url: str,
        params: dict[str, str] | None = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> FakeResponse:
        if url.endswith("/push"):
            name = url.split("/plugins/", 1)[1].removesuffix("/push")
            self.calls.append(("push", name, headers))
            self._get(name)
            self._pushing = name
            return FakeResponse(200)
        assert params is not None and headers is not None
        response = super()._post(url, params, data, headers)
        if response.status_code == 204:
            with tarfile.open(fileobj=io.BytesIO(self.bodies[-1])) as tar:
                config = json.load(tar.extractfile("config.json"))  # type: ignore[arg-type]
                ref = tar.extractfile("rootfs/.plugin-ref")
                assert ref is not None
                self.refs[params["name"]] = ref.read()
            self.plugins[params["name"]]["Config"]["Env"] = [
                {"Name": e["name"], "Value": e.get("value")} for e in config.get("env", [])
            ]
        return response

    def ping(self, timeout: float | None = None) -> bool:
        if not self.up:
            raise requests.exceptions.ConnectionError(
                "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"
            )
        return True

    def _stream_helper(self, response: FakeResponse, decode: bool = False) -> Iterable[Any]:
        if self.push_stream is not None:
            return self.push_stream
        return pushed_ok(self._pushing)

    def plugin_privileges(self, remote: str) -> list[dict[str, Any]]:
        return [{"Name": "network", "Value": ["host"]}]

    def pull_plugin(self, remote: str, privileges: Any, name: str) -> list[dict[str, Any]]:
        self.calls.append(("pull", remote, name))
        self.add(name)
        self.plugins[name]["PluginReference"] = remote
        self.plugins[name]["Config"]["Env"] = self.registry[remote]
        return [{"status": "Download complete"}]


class RegistryClient(FakeClient):
    api: RegistryAPI

    def __init__(self) -> None:
        super().__init__()
        self.api = RegistryAPI()


@pytest.fixture
def client() -> RegistryClient:
    return RegistryClient()


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def engine(client: RegistryClient, lines: list[str]) -> Engine:
    return Engine(client, report=lines.append)


def make_bundle(path: Path, python: bytes, platform: str | None) -> Path:
    (path / "rootfs/usr/bin").mkdir(parents=True)
    (path / "rootfs/usr/bin/python3").write_bytes(python)
    env = [{"name": PLATFORM_ENV, "value": platform}] if platform else []
    config = {"entrypoint": ["/usr/bin/python3"], "env": env}
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def bundles(tmp_path: Path) -> list[Path]:
    return [
        make_bundle(tmp_path / "rootfs-build", X86_64, "linux/amd64"),
        make_bundle(tmp_path / "rootfs-build-arm64", AARCH64, "linux/arm64"),
    ]


# --- the plan ---------------------------------------------------------------------------


def test_each_tag_gets_the_bundle_of_its_architecture(bundles: list[Path]) -> None:
    amd64, arm64 = bundles
    plan = plan_push(REPO, ["1.0-amd64", "1.0-arm64", "1.0", "latest", "arm64"], bundles)
    assert plan == [
        Pushed(f"{REPO}:1.0-amd64", "linux/amd64", amd64),
        Pushed(f"{REPO}:1.0-arm64", "linux/arm64", arm64),
        Pushed(f"{REPO}:1.0", "linux/amd64", amd64),
        Pushed(f"{REPO}:latest", "linux/amd64", amd64),
        Pushed(f"{REPO}:arm64", "linux/arm64", arm64),
    ]
    # --arch arm64: tags that name no architecture are arm64.
    assert [p.platform for p in plan_push(REPO, ["latest"], bundles, "arm64")] == ["linux/arm64"]


def test_the_bundle_named_for_the_architecture_wins(bundles: list[Path], tmp_path: Path) -> None:
    other = make_bundle(tmp_path / "elsewhere", AARCH64, "linux/arm64")
    (plan,) = plan_push(REPO, ["1-arm64"], [other, *bundles])
    assert plan.bundle == bundles[1]


def test_a_tag_without_a_bundle_of_its_architecture(bundles: list[Path]) -> None:
    with pytest.raises(EngineError) as err:
        plan_push(REPO, ["latest"], bundles[1:])
    assert str(err.value) == (
        f"push {REPO}:latest: refused: its tag is for linux/amd64 (a tag that names no "
        f"architecture is amd64), and no bundle is: linux/arm64 in {bundles[1]}; build it "
        "with --arch amd64"
    )
    with pytest.raises(EngineError) as err:
        plan_push(REPO, ["2.0-arm64"], bundles[:1])
    assert str(err.value) == (
        f"push {REPO}:2.0-arm64: refused: its tag is for linux/arm64, and no bundle is: "
        f"linux/amd64 in {bundles[0]}; build it with --arch arm64"
    )


def test_a_bundle_whose_rootfs_contradicts_its_record(tmp_path: Path) -> None:
    liar = make_bundle(tmp_path / "b", X86_64, "linux/arm64")
    with pytest.raises(EngineError) as err:
        plan_push(REPO, ["1-arm64"], [liar])
    assert str(err.value) == (
        f"{liar}: config.json records linux/arm64 but the rootfs is for linux/amd64 "
        "(rebuild the bundle)"
    )


def test_a_bundle_without_a_record_goes_by_its_rootfs(tmp_path: Path) -> None:
    old = make_bundle(tmp_path / "old", AARCH64, None)
    (plan,) = plan_push(REPO, ["1-arm64"], [old])
    assert plan.platform == "linux/arm64"


@pytest.mark.parametrize(
    ("repository", "tags", "message"),
    [
        (f"{REPO}:1.0", ["1.0"], f"push: give the repository without a tag ({REPO}) and the "
         "tags after push"),
        (REPO, [], "push: no tags given"),
        (REPO, ["1", "latest", "1"], "push: a tag is given twice: 1 latest 1"),
        (REPO, ["Bad Tag"], f"invalid plugin name '{REPO}:Bad Tag': use an image-style "
         "reference in lower case, e.g. acme/myplugin:1.0 or localhost:5000/acme/myplugin"),
    ],
)  # fmt: skip
def test_bad_pushes(bundles: list[Path], repository: str, tags: list[str], message: str) -> None:
    with pytest.raises(Exception) as err:
        plan_push(repository, tags, bundles)
    assert str(err.value) == message


def test_no_bundle(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as err:
        plan_push(REPO, ["1"], [])
    assert str(err.value) == "push: no bundle to publish (build one first)"
    with pytest.raises(EngineError) as err:
        plan_push(REPO, ["1"], [tmp_path])
    assert str(err.value) == f"{tmp_path} is not a plugin bundle (config.json and rootfs/ expected)"


# --- publishing -------------------------------------------------------------------------


def test_publish_creates_pushes_and_removes_each_tag(
    engine: Engine, client: RegistryClient, bundles: list[Path], lines: list[str]
) -> None:
    done = publish(engine, REPO, ["1.0-amd64", "1.0-arm64", "latest"], bundles)
    assert done == [
        Pushed(f"{REPO}:1.0-amd64", "linux/amd64", bundles[0], "sha256:d1", 9_000_000),
        Pushed(f"{REPO}:1.0-arm64", "linux/arm64", bundles[1], "sha256:d1", 9_000_000),
        Pushed(f"{REPO}:latest", "linux/amd64", bundles[0], "sha256:d1", 9_000_000),
    ]
    steps = [c[:2] for c in client.api.calls if c[0] in ("post", "push", "remove")]
    expected: list[tuple[str, ...]] = []
    for tag in ("1.0-amd64", "1.0-arm64", "latest"):
        name = f"{REPO}:{tag}"
        expected += [("post", "http+docker://localhost/v1.45/plugins/create")]
        expected += [("push", name), ("remove", name)]
    assert steps == expected
    # Each one created with its own ref file: the same bundle twice is not
    # byte-identical content for the daemon.
    assert client.api.refs == {
        f"{REPO}:{tag}": f"{REPO}:{tag}\n".encode() for tag in ("1.0-amd64", "1.0-arm64", "latest")
    }
    assert client.api.plugins == {}
    assert (
        f"{REPO}:1.0-arm64 (linux/arm64) from {bundles[1]}: create with /.plugin-ref naming it, "
        "push, remove"
    ) in lines
    assert f"pushed {REPO}:latest: sha256:d1, 9.0 MB of layers" in lines


def test_publish_never_replaces_a_plugin(
    engine: Engine, client: RegistryClient, bundles: list[Path]
) -> None:
    client.api.add(f"{REPO}:latest", enabled=True)
    with pytest.raises(EngineError) as err:
        publish(engine, REPO, ["1.0", "latest"], bundles)
    assert str(err.value) == (
        f"push {REPO}:latest: a plugin of that name exists here and would be replaced; "
        f"remove it (docker plugin rm {REPO}:latest) or push it alone with --name"
    )
    assert [c for c in client.api.calls if c[0] in ("post", "push")] == []


def error_stream(message: str) -> list[dict[str, Any]]:
    return [
        {"status": "Preparing", "id": "ab12"},
        {"errorDetail": {"message": message}, "error": message},
    ]


@pytest.mark.parametrize(
    "message",
    [
        # dockerd 20.10 (containerd's pusher), as the e2e test sees it
        'error pushing plugin: failed commit on ref "manifest-sha256:ab": unexpected status: '
        "400 Bad Request",
        "manifest invalid: manifest invalid",
        "unsupported media type application/vnd.docker.plugin.v1+json",
    ],
)
def test_a_registry_refusing_the_manifest_names_the_media_type(
    engine: Engine, client: RegistryClient, bundles: list[Path], message: str
) -> None:
    client.api.push_stream = error_stream(message)
    with pytest.raises(EngineError) as err:
        publish(engine, REPO, ["1.0-arm64"], bundles)
    assert str(err.value) == (
        f"push {REPO}:1.0-arm64: {message}\n"
        "  the registry refused the plugin's manifest: a Docker plugin's config has the media "
        f"type {PLUGIN_MEDIA_TYPE} (not an image's), which some registries do not accept"
    )
    assert client.api.plugins == {}  # the tag's plugin is removed all the same


def test_a_refusal_without_credentials_says_where_they_come_from(
    engine: Engine, client: RegistryClient, bundles: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "docker.utils.config.find_config_file", lambda config_path=None: "/home/u/.docker/c.json"
    )
    client.api.push_stream = error_stream(
        "error pushing plugin: unexpected status: 401 Unauthorized"
    )
    with pytest.raises(EngineError) as err:
        publish(engine, REPO, ["1"], bundles)
    assert str(err.value) == (
        f"push {REPO}:1: error pushing plugin: unexpected status: 401 Unauthorized\n"
        "  no credentials for localhost:5000 in the Docker config (/home/u/.docker/c.json): "
        "docker login localhost:5000"
    )
    (push_call,) = [c for c in client.api.calls if c[0] == "push"]
    assert push_call[2] == {}


def test_credentials_come_from_the_docker_config_and_a_refusal_names_the_scope(
    engine: Engine,
    client: RegistryClient,
    bundles: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CREDENTIALS))
    client.api._auth_configs = load_config(config_path=str(config))
    monkeypatch.setattr(
        "docker.utils.config.find_config_file", lambda config_path=None: "/home/u/.docker/c.json"
    )
    client.api.push_stream = error_stream("denied: requested access to the resource is denied")
    with pytest.raises(EngineError) as err:
        publish(engine, REPO, ["1"], bundles)
    assert str(err.value) == (
        f"push {REPO}:1: denied: requested access to the resource is denied\n"
        "  the credentials for localhost:5000 from /home/u/.docker/c.json were refused, or the "
        "registry does not accept plugins (they need the token scope "
        f"repository(plugin):acme/vol:push and the media type {PLUGIN_MEDIA_TYPE})"
    )
    (push_call,) = [c for c in client.api.calls if c[0] == "push"]
    header = json.loads(base64.urlsafe_b64decode(push_call[2]["X-Registry-Auth"]))
    assert {k.lower(): v for k, v in header.items()} == {
        "username": "user",
        "password": "pass",
        "serveraddress": "localhost:5000",
        "email": None,
    }


def test_a_plain_http_registry_hides_its_answer(
    engine: Engine, client: RegistryClient, bundles: list[Path]
) -> None:
    message = (
        'error pushing plugin: failed to do request: Head "https://localhost:5000/v2/acme/vol/'
        'blobs/sha256:ab": http: server gave HTTP response to HTTPS client'
    )
    client.api.push_stream = error_stream(message)
    with pytest.raises(EngineError) as err:
        publish(engine, REPO, ["1"], bundles)
    assert str(err.value) == (
        f"push {REPO}:1: {message}\n"
        "  localhost:5000 answers plain HTTP: the daemon tried again over HTTP and that failed "
        "too, but it reports only its first (HTTPS) attempt; the registry's own answer is in "
        "its log (or serve the registry over TLS)"
    )


def test_another_push_error_is_the_registrys_message(
    engine: Engine, client: RegistryClient, bundles: list[Path]
) -> None:
    client.api.push_stream = error_stream("received unexpected HTTP status: 500 Internal Error")
    with pytest.raises(EngineError) as err:
        publish(engine, REPO, ["1"], bundles)
    assert str(err.value) == (f"push {REPO}:1: received unexpected HTTP status: 500 Internal Error")


def test_pushing_a_plugin_checks_its_platform_against_the_tag(
    engine: Engine, client: RegistryClient, bundles: list[Path]
) -> None:
    engine.create(f"{REPO}:1.0", bundles[1])  # arm64, under a tag that means amd64
    with pytest.raises(EngineError) as err:
        push(engine, f"{REPO}:1.0", platform="linux/amd64")
    assert str(err.value) == (
        f"push {REPO}:1.0: refused: the plugin is built for linux/arm64, and its tag is for "
        "linux/amd64"
    )
    assert [c for c in client.api.calls if c[0] == "push"] == []
    assert push(engine, f"{REPO}:1.0", platform="linux/arm64") == ("sha256:d1", 9_000_000)


# --- enable and install -----------------------------------------------------------------


def enable_refusal(name: str, reference: str) -> str:
    return (
        f"enable {name}: refused: the plugin is built for linux/arm64 and this daemon runs "
        "linux/amd64 (a plugin of another architecture fails to start, and the daemon reports "
        'only "dial unix ...: no such file or directory"); install the tag built for amd64: '
        f"{reference}"
    )


def test_enable_refuses_a_plugin_of_another_architecture(
    engine: Engine, client: RegistryClient
) -> None:
    client.api.add(f"{REPO}:1.0-arm64")
    client.api.plugins[f"{REPO}:1.0-arm64"]["Config"]["Env"] = [
        {"Name": PLATFORM_ENV, "Value": "linux/arm64"}
    ]
    with pytest.raises(EngineError) as err:
        engine.enable(f"{REPO}:1.0-arm64")
    assert str(err.value) == enable_refusal(f"{REPO}:1.0-arm64", f"{REPO}:1.0-amd64")
    assert [c for c in client.api.calls if c[0] == "enable"] == []
    client.api.arch = "arm64"  # on an arm64 daemon it is enabled
    Engine(client).enable(f"{REPO}:1.0-arm64")
    assert client.api.plugins[f"{REPO}:1.0-arm64"]["Enabled"] is True


def test_enable_reads_the_rootfs_of_a_plugin_without_a_record(
    engine: Engine, client: RegistryClient, tmp_path: Path
) -> None:
    from tests.unit.test_bundle_engine import PLUGIN_ID

    client.api.root_dir = str(tmp_path)
    client.api.add("acme/other:2")
    client.api.plugins["acme/other:2"]["Config"]["Entrypoint"] = ["/usr/bin/python3"]
    make_bundle(tmp_path / "plugins" / PLUGIN_ID, AARCH64, None)
    with pytest.raises(EngineError) as err:
        engine.enable("acme/other:2")
    assert str(err.value) == enable_refusal("acme/other:2", "acme/other:2-amd64")
    # Nothing to read (not this host's daemon, or no such file): enabled.
    client.api.root_dir = str(tmp_path / "nowhere")
    engine.enable("acme/other:2")
    assert client.api.plugins["acme/other:2"]["Enabled"] is True


def test_install_of_a_tag_for_another_architecture_is_refused_before_the_pull(
    engine: Engine, client: RegistryClient
) -> None:
    remote = f"{REPO}:1.0-arm64"
    client.api.registry[remote] = [{"Name": PLATFORM_ENV, "Value": "linux/arm64"}]
    with pytest.raises(EngineError) as err:
        install(engine, remote, grant=True, settings=["data.source=/srv"])
    assert str(err.value) == (
        f"enable {remote}: refused: {remote} is tagged for linux/arm64 and this daemon runs "
        "linux/amd64 (a plugin of another architecture fails to start, and the daemon reports "
        'only "dial unix ...: no such file or directory"); install the tag built for amd64: '
        f"{REPO}:1.0-amd64"
    )
    assert [c for c in client.api.calls if c[0] == "pull"] == []
    # Pulled without enabling, it stays: enabling it is refused then.
    assert install(engine, remote, grant=True, enable=False) == remote
    assert client.api.plugins[remote]["Enabled"] is False
    with pytest.raises(EngineError) as err:
        engine.enable(remote)
    assert str(err.value) == enable_refusal(remote, f"{REPO}:1.0-amd64")


def test_install_of_a_plain_tag_of_another_architecture_is_refused_and_cleaned_up(
    engine: Engine, client: RegistryClient
) -> None:
    remote = f"{REPO}:2.0"  # by the convention amd64, but the rootfs is arm64
    client.api.registry[remote] = [{"Name": PLATFORM_ENV, "Value": "linux/arm64"}]
    with pytest.raises(EngineError) as err:
        install(engine, remote, grant=True, settings=["data.source=/srv"])
    assert str(err.value) == enable_refusal(remote, f"{REPO}:2.0-amd64")
    assert [c[0] for c in client.api.calls if c[0] in ("pull", "set", "enable", "remove")] == [
        "pull",
        "remove",
    ]
    assert client.api.plugins == {}


def test_upgrade_to_a_tag_for_another_architecture_is_refused_before_anything(
    engine: Engine, client: RegistryClient
) -> None:
    client.api.add(f"{REPO}:1.0-amd64", enabled=True)
    with pytest.raises(EngineError) as err:
        upgrade(engine, f"{REPO}:1.0-amd64", f"{REPO}:1.1-arm64", grant=True)
    assert str(err.value) == (
        f"upgrade {REPO}:1.0-amd64: refused: {REPO}:1.1-arm64 is tagged for linux/arm64 and "
        "this daemon runs linux/amd64 (a plugin of another architecture fails to start, and the "
        'daemon reports only "dial unix ...: no such file or directory"); install the tag built '
        f"for amd64: {REPO}:1.1-amd64"
    )
    assert client.api.plugins[f"{REPO}:1.0-amd64"]["Enabled"] is True
    assert [c for c in client.api.calls if c[0] in ("disable", "upgrade")] == []


# --- the daemon dies in the middle of a push --------------------------------------------


def broken_stream(
    api: RegistryAPI, log: Path | None = None, *, dies: bool = True
) -> Iterator[dict[str, Any]]:
    """A push stream that breaks off as when dockerd 20.10 panics in
    containerd's pusher: the daemon writes the panic into its log and
    exits; docker-py lets the broken read through as urllib3's error."""
    yield {"status": "Preparing", "progressDetail": {}, "id": "ab12"}
    yield {
        "status": "Pushing",
        "progressDetail": {"current": 512, "total": 9_000_000},
        "id": "ab12",
    }
    if log is not None:
        with log.open("a") as f:
            f.write("panic: send on closed channel\n\ngoroutine 1234 [running]:\n")
    api.up = not dies
    raise urllib3.exceptions.ProtocolError(
        "Connection broken: IncompleteRead(0 bytes read)", http.client.IncompleteRead(b"")
    )


STOPPED = (
    "the Docker daemon stopped while pushing {name} (dockerd 20.10 can crash in containerd's "
    'pusher: look for "panic" in its log); start it again and push again: blobs already in the '
    "registry are not sent again"
)


def test_a_daemon_that_dies_mid_push_is_named_with_its_panic(
    engine: Engine,
    client: RegistryClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "dockerd.log"
    log.write_text("panic: an older one, before this push\n")
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(log))
    name = f"{REPO}:1.0-amd64"
    engine.create(name, make_bundle(tmp_path / "b", X86_64, "linux/amd64"))
    client.api.push_stream = broken_stream(client.api, log)
    with pytest.raises(DaemonStopped) as err:
        push(engine, name)
    assert str(err.value) == (
        STOPPED.format(name=name) + f"\n  its log ({log}) says: panic: send on closed channel"
    )


def test_publish_says_the_tags_plugin_is_left_when_the_daemon_dies(
    engine: Engine,
    client: RegistryClient,
    bundles: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(tmp_path / "no-such.log"))
    client.api.push_stream = broken_stream(client.api)
    name = f"{REPO}:1.0-arm64"
    with pytest.raises(DaemonStopped) as err:
        publish(engine, REPO, ["1.0-arm64"], bundles)
    assert str(err.value) == (
        STOPPED.format(name=name) + f"\n  {name}, created for this push, is still on the daemon: "
        f"remove it first (docker plugin rm {name})"
    )
    # Nothing more was asked of a daemon that is gone.
    assert [c[:2] for c in client.api.calls if c[0] in ("push", "remove")] == [("push", name)]


def test_the_command_line_says_the_daemon_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: RegistryClient
) -> None:
    monkeypatch.setattr(engine_module, "docker_client", lambda timeout=600: client)
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(tmp_path / "no-such.log"))
    name = f"{REPO}:1.0-amd64"
    Engine(client).create(name, make_bundle(tmp_path / "b", X86_64, "linux/amd64"))
    client.api.push_stream = broken_stream(client.api)
    out = io.StringIO()
    assert main(["--name", name, "push"], out=out) == 1
    assert out.getvalue().splitlines()[-1] == "error: " + STOPPED.format(name=name)


def test_a_broken_connection_to_a_daemon_that_still_answers(
    engine: Engine, client: RegistryClient, tmp_path: Path
) -> None:
    name = f"{REPO}:1"
    engine.create(name, make_bundle(tmp_path / "b", X86_64, "linux/amd64"))
    client.api.push_stream = broken_stream(client.api, dies=False)
    with pytest.raises(EngineError) as err:
        push(engine, name)
    assert not isinstance(err.value, DaemonStopped)
    assert str(err.value) == (
        f"push {name}: the connection to the Docker daemon broke (Connection broken: "
        "IncompleteRead(0 bytes read)); if the daemon restarted "
        'meanwhile (dockerd 20.10 can crash in containerd\'s pusher: look for "panic" in its '
        "log), push again: blobs already in the registry are not sent again"
    )


# --- the command line -------------------------------------------------------------------


def test_push_tags_from_the_projects_bundles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: RegistryClient
) -> None:
    monkeypatch.setattr(engine_module, "docker_client", lambda timeout=600: client)
    (tmp_path / "plugin.toml").write_text(
        '[plugin]\nname = "localhost:5000/acme/vol:9"\ndrivers = ["a.b:C"]\nsocket = "t.sock"\n'
    )
    make_bundle(tmp_path / "rootfs-build", X86_64, "linux/amd64")
    make_bundle(tmp_path / "rootfs-build-arm64", AARCH64, "linux/arm64")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert main(["push", "1.0-amd64", "1.0-arm64", "latest"], out=out) == 0
    text = re.sub(r"done in \d+\.\d s", "done in N.N s", out.getvalue()).splitlines()
    assert text[0] == f"==> push {REPO}: 1.0-amd64 1.0-arm64 latest"
    assert text[-4:] == [
        "    done in N.N s",
        f"{REPO}:1.0-amd64\tlinux/amd64\tsha256:d1\t9.0 MB",
        f"{REPO}:1.0-arm64\tlinux/arm64\tsha256:d1\t9.0 MB",
        f"{REPO}:latest\tlinux/amd64\tsha256:d1\t9.0 MB",
    ]


def test_push_tags_refused_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: RegistryClient
) -> None:
    monkeypatch.setattr(engine_module, "docker_client", lambda timeout=600: client)
    amd64 = make_bundle(tmp_path / "a", X86_64, "linux/amd64")
    out = io.StringIO()
    argv = ["--name", REPO, "push", "--bundle", str(amd64), "1.0-amd64", "1.0-arm64"]
    assert main(argv, out=out) == 1
    assert out.getvalue().splitlines()[-1] == (
        f"error: push {REPO}:1.0-arm64: refused: its tag is for linux/arm64, and no bundle is: "
        f"linux/amd64 in {amd64}; build it with --arch arm64"
    )
    assert client.api.calls == []


def test_push_of_a_created_plugin_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: RegistryClient
) -> None:
    monkeypatch.setattr(engine_module, "docker_client", lambda timeout=600: client)
    Engine(client).create(f"{REPO}:1.0-arm64", make_bundle(tmp_path / "b", AARCH64, "linux/arm64"))
    out = io.StringIO()
    assert main(["--name", f"{REPO}:1.0-arm64", "push"], out=out) == 0
    assert f"    {REPO}:1.0-arm64 (linux/arm64): sha256:d1, 9.0 MB of layers" in (
        out.getvalue().splitlines()
    )
    out = io.StringIO()
    assert main(["--name", f"{REPO}:1.0-arm64", "--arch", "arm64", "push"], out=out) == 0
    out = io.StringIO()
    assert main(["--name", f"{REPO}:1.0-arm64", "--arch", "sparc", "push"], out=out) == 1
    assert out.getvalue().splitlines()[-1] == (
        "error: architecture 'sparc' is not supported (supported: amd64, arm64)"
    )


def test_the_pushed_size_comes_from_the_daemons_content_store(
    engine: Engine, client: RegistryClient, bundles: list[Path], tmp_path: Path
) -> None:
    from tests.unit.test_bundle_engine import PLUGIN_ID

    root = tmp_path / "docker"
    blobs = root / "plugins/storage/blobs/sha256"
    blobs.mkdir(parents=True)
    (blobs / "aa").write_bytes(b"x" * 1234)
    (root / "plugins" / PLUGIN_ID).mkdir()
    (root / "plugins" / PLUGIN_ID / "config.json").write_text(
        json.dumps({"Blobsums": ["sha256:aa"], "Manifest": "sha256:m"})
    )
    client.api.root_dir = str(root)
    client.api.push_stream = [{"status": "Preparing"}, {"aux": {"Digest": "sha256:d2"}}]
    (done,) = publish(engine, REPO, ["1"], bundles)
    assert (done.digest, done.size) == ("sha256:d2", 1234)
