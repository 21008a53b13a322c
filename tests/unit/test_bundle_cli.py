"""``python -m plugin.bundle``: main(argv, out) called directly, with a fake daemon."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import plugin.bundle._builder as builder
import plugin.bundle._engine as engine_module
from plugin.bundle.__main__ import main
from plugin.bundle._builder import BuildResult
from tests.unit.test_bundle_config import good, make_rootfs
from tests.unit.test_bundle_engine import PLUGIN_ID, FakeClient

ROOT = Path(__file__).resolve().parents[2]

TOML = """\
[plugin]
name = "acme/vol"
drivers = ["acme.vol:Volumes"]
socket = "t.sock"
"""


NO_PROJECT = (
    "error: plugin.toml: not found (a plugin project has a plugin.toml; "
    "`docker-plugin-kit init DIR` writes one)"
)


def run(*argv: str) -> tuple[int, list[str]]:
    """Exit status and output lines, with step durations made N.N."""
    out = io.StringIO()
    code = main(list(argv), out=out)
    text = re.sub(r"done in \d+\.\d s", "done in N.N s", out.getvalue())
    return code, text.splitlines()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    """The daemon every command talks to."""
    client = FakeClient()
    monkeypatch.setattr(engine_module, "docker_client", lambda timeout=600: client)
    return client


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with a built bundle, as the working directory."""
    (tmp_path / "plugin.toml").write_text(TOML)
    bundle = tmp_path / "rootfs-build"
    make_rootfs(bundle / "rootfs")
    config = good()
    config["mounts"][0]["source"] = str(tmp_path / "data")  # enable creates it
    (bundle / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- validate ---------------------------------------------------------------------------


def test_validate_a_good_bundle(project: Path) -> None:
    bundle = project / "rootfs-build"
    assert run("validate") == (
        0,
        [f"==> validate {bundle}", f"    {bundle}/config.json: valid", "    done in N.N s"],
    )


def test_validate_with_bundle_and_warnings(tmp_path: Path) -> None:
    make_rootfs(tmp_path / "rootfs")
    config = good()
    config["user"] = {"uid": 0, "gid": 0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    # --bundle: no plugin.toml needed
    assert run("--project", str(tmp_path / "none.toml"), "--bundle", str(tmp_path), "validate") == (
        0,
        [
            f"==> validate {tmp_path}",
            "    warning: user: is ignored by the daemon: plugins run as root",
            f"    {tmp_path}/config.json: valid",
            "    done in N.N s",
        ],
    )


def test_validate_a_bad_config(project: Path) -> None:
    path = project / "rootfs-build/config.json"
    config = good()
    config["propagatedMounts"] = config.pop("propagatedMount")
    config["interface"]["socket"] = "a/b.sock"
    path.write_text(json.dumps(config))
    code, lines = run("validate")
    assert code == 1
    assert [line for line in lines if line.startswith("error:")] == [
        f"error: {path}: 2 problems: propagatedMounts: unknown key; the daemon would ignore it "
        "(did you mean 'propagatedMount'?); interface.socket: must be a file name, not a path: "
        "'a/b.sock'"
    ]
    assert lines == [f"==> validate {project / 'rootfs-build'}", lines[-1]]


def test_validate_json_that_is_not_json(project: Path) -> None:
    path = project / "rootfs-build/config.json"
    path.write_text("{")
    assert run("validate")[1][-1] == (
        f"error: {path}: not valid JSON: Expecting property name enclosed in double quotes "
        "(line 1 column 2)"
    )


def test_validate_a_missing_bundle(project: Path) -> None:
    path = project / "rootfs-build/config.json"
    path.unlink()
    assert run("validate") == (
        1,
        [
            f"==> validate {project / 'rootfs-build'}",
            f"error: {path}: not found (run the build first)",
        ],
    )


def test_a_missing_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("validate") == (
        1,
        [NO_PROJECT],
    )


def test_a_missing_project_is_reported_before_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_daemon(timeout: int = 600) -> None:
        raise AssertionError("the daemon was reached")

    monkeypatch.setattr(engine_module, "docker_client", no_daemon)
    monkeypatch.chdir(tmp_path)
    assert run("enable") == (
        1,
        [NO_PROJECT],
    )


# --- names and usage ----------------------------------------------------------------------


def test_an_invalid_name(project: Path, client: FakeClient) -> None:
    assert run("--name", "Acme/Vol", "enable") == (
        1,
        [
            "error: invalid plugin name 'Acme/Vol': use an image-style reference in lower case, "
            "e.g. acme/myplugin:1.0 or localhost:5000/acme/myplugin"
        ],
    )
    assert client.api.calls == []


def test_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"], out=io.StringIO())
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_the_command_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"], out=io.StringIO())
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: docker-plugin-kit [-h]")
    assert "  init       write a new plugin project: init DIR --type TYPE [--name NAME]" in out
    with pytest.raises(SystemExit):
        main(["frobnicate"], out=io.StringIO())
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith("docker-plugin-kit: error: argument COMMAND: invalid choice: 'frobnicate'")
    )


def test_the_packaged_scripts_run(capfd: pytest.CaptureFixture[str]) -> None:
    # scripts/registry is a thin caller of the packaged one: the same answer.
    assert main(["registry", "url"], out=io.StringIO()) == 0
    assert capfd.readouterr().out == "localhost:5000\n"
    with pytest.raises(SystemExit):
        main(["registry", "nonsense"], out=io.StringIO())
    thin = subprocess.run(
        [str(ROOT / "scripts" / "registry"), "url"], capture_output=True, text=True, check=True
    )
    assert thin.stdout == "localhost:5000\n"


def test_a_failing_script_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "registry").write_text("echo 'registry: error: no' >&2; exit 3\n")
    monkeypatch.setattr("plugin.bundle._rootfs.SCRIPTS", tmp_path)
    out = io.StringIO()
    assert main(["registry", "start"], out=out) == 1
    assert out.getvalue() == "error: registry start failed (exit status 3, see above)\n"


def test_set_needs_a_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["set"], out=io.StringIO())
    assert exc.value.code == 2


# --- engine commands ------------------------------------------------------------------


def test_set(project: Path, client: FakeClient) -> None:
    client.api.add("acme/vol:latest", config=good())
    assert run("set", "data.source=/srv", "LOG_LEVEL=debug") == (
        0,
        ["==> set acme/vol:latest", "    done in N.N s"],
    )
    assert client.api.calls[-1] == (
        "set",
        "acme/vol:latest",
        ["data.source=/srv", "LOG_LEVEL=debug"],
    )


def test_set_refused(project: Path, client: FakeClient) -> None:
    client.api.add("acme/vol:latest", enabled=True)
    assert run("set", "DEBUG") == (
        1,
        [
            "==> set acme/vol:latest",
            "error: set acme/vol:latest: 'DEBUG' must be written KEY=VALUE",
        ],
    )
    assert run("set", "DEBUG=1") == (
        1,
        [
            "==> set acme/vol:latest",
            "error: set acme/vol:latest: cannot set on an active plugin, disable plugin before "
            "setting",
        ],
    )


def test_enable_and_disable_by_name(client: FakeClient, tmp_path: Path) -> None:
    client.api.add("other:1.0")
    # --name: no plugin.toml needed
    project = ("--project", str(tmp_path / "none.toml"), "--name", "other:1.0")
    assert run(*project, "enable", "--timeout", "5") == (
        0,
        ["==> enable other:1.0", "    done in N.N s"],
    )
    assert client.api.calls[-1] == ("enable", "other:1.0", 5)
    assert run(*project, "enable") == (
        0,
        ["==> enable other:1.0", "    other:1.0 is already enabled", "    done in N.N s"],
    )
    assert run(*project, "disable", "--force") == (
        0,
        ["==> disable other:1.0", "    done in N.N s"],
    )
    assert client.api.calls[-1] == ("disable", "other:1.0", True)


def test_an_enable_failure(
    project: Path, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPK_DOCKERD_LOG", str(project / "none.log"))
    client.api.add("acme/vol:latest")
    client.api.enable_error = "timeout"
    assert run("enable") == (
        1,
        [
            "==> enable acme/vol:latest",
            "error: enable acme/vol:latest: timeout",
            f"  the plugin's output is in the daemon's log: lines with plugin={PLUGIN_ID}",
        ],
    )


def test_rm(project: Path, client: FakeClient) -> None:
    assert run("rm") == (
        0,
        [
            "==> remove acme/vol:latest",
            "    acme/vol:latest: no such plugin (nothing to do)",
            "    done in N.N s",
        ],
    )
    client.api.add("acme/vol:latest", enabled=True)
    assert run("rm", "--force") == (0, ["==> remove acme/vol:latest", "    done in N.N s"])
    assert client.api.calls[-1] == ("remove", "acme/vol:latest", True)


def test_inspect(project: Path, client: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    client.api.add("acme/vol:latest")
    assert run("inspect") == (0, [])
    assert json.loads(capsys.readouterr().out) == client.api.plugins["acme/vol:latest"]
    assert run("--name", "nope", "inspect") == (1, ["error: inspect nope:latest: no such plugin"])


def test_create(project: Path, client: FakeClient) -> None:
    assert run("create") == (
        0,
        [
            "==> create acme/vol:latest",
            f"    packing {project / 'rootfs-build'}",
            "    sending 0.0 MB to the daemon",
            f"    id {PLUGIN_ID[:12]}",
            "    done in N.N s",
        ],
    )
    code, lines = run("create")
    assert (code, lines[-1]) == (
        1,
        "error: plugin acme/vol:latest already exists (remove it, or create with --replace)",
    )
    assert run("create", "--replace")[0] == 0


def test_create_validates_first(project: Path, client: FakeClient) -> None:
    path = project / "rootfs-build/config.json"
    path.write_text(json.dumps({**good(), "entrypoint": []}))
    assert run("create") == (
        1,
        [
            "==> create acme/vol:latest",
            f"error: {path}: entrypoint: is required (the plugin's program and its arguments)",
        ],
    )
    assert client.api.bodies == []


def test_plugin_builds_creates_sets_and_enables(
    project: Path, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []

    def build_bundle(project_: Any, client_: Any, step: Any, report: Any) -> BuildResult:
        calls.append((project_.name, client_))
        with step("docker build"):
            report("built")
        return BuildResult(project / "rootfs-build", good(), [], 2_000_000)

    monkeypatch.setattr(builder, "build_bundle", build_bundle)
    client.api.add("acme/vol:latest", enabled=True)
    code, lines = run("plugin", "LOG_LEVEL=debug")
    assert calls == [("acme/vol:latest", client)]
    assert code == 0
    assert lines[:3] == ["==> docker build", "    built", "    done in N.N s"]
    assert re.fullmatch(
        rf"    bundle {project}/rootfs-build: rootfs 2\.0 MB, built in \d+\.\d s", lines[3]
    )
    assert lines[4:] == [
        "==> create acme/vol:latest",
        f"    removing the existing acme/vol:latest ({PLUGIN_ID[:12]})",
        f"    packing {project / 'rootfs-build'}",
        "    sending 0.0 MB to the daemon",
        f"    id {PLUGIN_ID[:12]}",
        "    done in N.N s",
        "==> set LOG_LEVEL=debug",
        "    done in N.N s",
        "==> enable acme/vol:latest",
        f"    created the mount source {project / 'data'} (data)",
        "    done in N.N s",
        "",
        "plugin acme/vol:latest is enabled.",
        "Try: docker volume create -d acme/vol myvol",
        "Per-host settings (plugin disabled): docker plugin set acme/vol:latest "
        "data.source=/path LOG_LEVEL=VALUE",
    ]
    assert [c[0] for c in client.api.calls] == [
        "inspect",
        "remove",
        "post",
        "inspect",
        "set",
        "inspect",
        "enable",
    ]


@pytest.mark.parametrize("reset", [False, True])
def test_plugin_keeps_this_hosts_settings_unless_told_not_to(
    project: Path, client: FakeClient, monkeypatch: pytest.MonkeyPatch, reset: bool
) -> None:
    def build_bundle(project_: Any, client_: Any, step: Any, report: Any) -> BuildResult:
        return BuildResult(project / "rootfs-build", good(), [], 2_000_000)

    monkeypatch.setattr(builder, "build_bundle", build_bundle)
    client.api.add("acme/vol:latest", config=good())
    data = project / "srv"
    client.api.configure_plugin("acme/vol:latest", ["LOG_LEVEL=debug", f"data.source={data}"])
    code, lines = run("plugin", *(["--reset-settings"] if reset else []))
    assert code == 0
    create = lines[lines.index("==> create acme/vol:latest") :]
    if reset:
        assert create[4] == (
            "    not keeping this host's settings (--reset-settings): LOG_LEVEL=debug "
            f"data.source={data}"
        )
        assert not data.exists()
    else:
        assert create[4] == f"    keeping this host's settings: LOG_LEVEL=debug data.source={data}"
        assert f"    created the mount source {data} (data)" in lines
    env = client.api.plugins["acme/vol:latest"]["Settings"]["Env"]
    assert ("LOG_LEVEL=info" if reset else "LOG_LEVEL=debug") in env


def test_render_needs_a_built_image(project: Path, client: FakeClient) -> None:
    assert run("render") == (
        1,
        [
            "==> render config.json",
            "error: image acme/vol-rootfs:build not found (run the build first)",
        ],
    )


def test_network_and_ipam_plugins_are_named_with_their_tag() -> None:
    from plugin.bundle.__main__ import Console, _usage

    out = io.StringIO()
    config = {"interface": {"types": ["docker.networkdriver/1.0", "docker.ipamdriver/1.0"]}}
    _usage("acme/net:latest", config, Console(out))
    assert out.getvalue().splitlines() == [
        "",
        "plugin acme/net:latest is enabled.",
        "Try: docker network create -d acme/net:latest mynet",
        "Try: docker network create --ipam-driver acme/net:latest mynet",
        "  (the daemon finds network and IPAM drivers by their full name, tag included: "
        'acme/net:latest; without the tag it answers "could not resolve driver" or "invalid ipam '
        'driver")',
    ]
