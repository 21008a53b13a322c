"""config.json: rendered from config.json.j2 and the drivers, then validated."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from localvol.driver import DATA, LocalVolSettings

from plugin import Args, Device, Env, Mount
from plugin._requirements import requirements
from plugin.bundle import (
    ConfigError,
    ImageFacts,
    Problem,
    Project,
    check_config,
    load_project,
    render_config,
    validate_config,
)
from plugin.bundle._builder import render_bundle_config, validate_bundle
from plugin.bundle._config import read_config, resolve_in_rootfs, template_context
from plugin.bundle._rootfs import make_dirs
from plugin.manifest import LOG_LEVEL
from plugin.volume import VolumeDriver

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "config.json.j2"
KNOWN_TYPES = (
    "docker.authz/1.0, docker.ipamdriver/1.0, docker.logdriver/1.0, "
    "docker.metricscollector/1.0, docker.networkdriver/1.0, docker.secretprovider/1.0, "
    "docker.volumedriver/1.0"
)
IMAGE_ATTRS = {
    "Config": {
        "Env": [
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
            "PYTHONPATH=/opt/plugin/site",
            "PYTHONUNBUFFERED=1",
            "LOG_LEVEL=debug",
            "HOME=/root",
        ],
        "WorkingDir": "/opt/plugin",
    }
}


def make_rootfs(root: Path) -> Path:
    """A rootfs like the reference plugin's: python3 is a relative symlink."""
    for d in ("usr/bin", "run/docker/plugins", "data", "mnt/volumes", "opt/plugin"):
        (root / d).mkdir(parents=True)
    python = root / "usr/bin/python3.11"
    python.write_text("")
    python.chmod(0o755)
    (root / "usr/bin/python3").symlink_to("python3.11")
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "rootfs")


def good() -> dict[str, Any]:
    """A valid config.json that matches make_rootfs()."""
    return {
        "description": "test plugin",
        "entrypoint": ["/usr/bin/python3", "-u", "-m", "plugin"],
        "workdir": "/opt/plugin",
        "interface": {"types": ["docker.volumedriver/1.0"], "socket": "t.sock"},
        "network": {"type": ""},
        "propagatedMount": "/mnt/volumes",
        "mounts": [
            {
                "name": "data",
                "description": "",
                "settable": ["source"],
                "source": "/var/lib/t",
                "destination": "/data",
                "type": "bind",
                "options": ["rbind"],
            }
        ],
        "env": [{"name": "LOG_LEVEL", "description": "", "settable": ["value"], "value": "info"}],
        "linux": {"capabilities": ["CAP_SYS_ADMIN"], "allowAllDevices": False, "devices": []},
    }


def with_(**changes: Any) -> dict[str, Any]:
    config = good()
    config.update(copy.deepcopy(changes))
    return config


def errors(message: str, field: str) -> list[Problem]:
    return [Problem(field, message)]


# --- rendering ----------------------------------------------------------------------


def test_the_reference_plugin_renders_from_its_declarations(rootfs: Path) -> None:
    project = load_project(ROOT / "reference" / "localvol" / "plugin.toml")
    config, warnings = render_bundle_config(project, IMAGE_ATTRS, rootfs)
    assert warnings == []
    assert config == {
        "description": project.description,
        "documentation": project.documentation,
        # python3 is looked up on the image's PATH: /usr/local/bin has none.
        "entrypoint": [
            "/usr/bin/python3",
            "-u",
            "-m",
            "plugin",
            "--socket",
            "localvol.sock",
            "localvol.driver:LocalVolumes",
        ],
        "workdir": "/opt/plugin",
        "interface": {"types": ["docker.volumedriver/1.0"], "socket": "localvol.sock"},
        "network": {"type": ""},
        "propagatedMount": "/mnt/volumes",
        "mounts": [
            {
                "name": "data",
                "description": DATA.description,
                "settable": ["source"],
                "source": "/var/lib/docker-localvol",
                "destination": "/data",
                "type": "bind",
                "options": ["rbind"],
            }
        ],
        # The image's env without PATH and HOME; MIN_FREE (a typed setting) and
        # LOG_LEVEL are the driver's declarations, PYTHONUNBUFFERED the template's.
        "env": [
            {
                "name": "MIN_FREE",
                "description": LocalVolSettings.min_free.env().description,
                "settable": ["value"],
                "value": "0",
            },
            {
                "name": "LOG_LEVEL",
                "description": LOG_LEVEL.description,
                "settable": ["value"],
                "value": "info",
            },
            {"name": "LANG", "description": "from the image", "value": "C.UTF-8"},
            {"name": "PYTHONPATH", "description": "from the image", "value": "/opt/plugin/site"},
            {
                "name": "PYTHONUNBUFFERED",
                "description": "stdout/stderr reach the daemon's log at once",
                "value": "1",
            },
        ],
        "linux": {"capabilities": ["CAP_SYS_ADMIN"], "allowAllDevices": False, "devices": []},
        "ipcHost": False,
        "pidHost": False,
    }
    assert validate_config(config, rootfs) == []


class Stub(VolumeDriver):
    """Only the declarations matter to the builder; the calls do nothing."""

    def create(self, req: Any) -> None: ...
    def remove(self, req: Any) -> None: ...
    def mount(self, req: Any) -> Any: ...
    def unmount(self, req: Any) -> None: ...
    def path(self, req: Any) -> Any: ...
    def get(self, req: Any) -> Any: ...
    def list(self) -> Any: ...


class Tiny(Stub):
    mounts = (
        Mount("state", "/state", source="/var/lib/tiny", settable=False, options=("rbind", "ro")),
    )
    devices = (Device("fuse", "/dev/fuse", "the FUSE device"),)
    env = (Env("TOKEN", "t0k", "api token", settable=False), Env("DEBUG", "0", "debug output"))
    args = Args("flags", ("-v", "--fast"), "extra flags")
    network = "host"
    linux_capabilities = ("CAP_SYS_ADMIN", "CAP_NET_ADMIN")
    ipc_host = True
    pid_host = True
    allow_all_devices = True


def test_each_declaration_lands_in_its_place(tmp_path: Path) -> None:
    project = Project(
        root=tmp_path,
        name="tiny:latest",
        drivers=("tests.unit.test_bundle_config:Tiny",),
        socket="tiny.sock",
        entrypoint=("/usr/bin/python3", "-m", "tiny"),
    )
    context = template_context(project, requirements([Tiny]), ImageFacts(), None)
    config = render_config(TEMPLATE, context)
    assert config == {
        "description": "",
        "documentation": "",
        "entrypoint": ["/usr/bin/python3", "-m", "tiny"],
        "workdir": "/",
        "interface": {"types": ["docker.volumedriver/1.0"], "socket": "tiny.sock"},
        "network": {"type": "host"},
        "mounts": [
            {
                "name": "state",
                "description": "",
                "settable": [],
                "source": "/var/lib/tiny",
                "destination": "/state",
                "type": "bind",
                "options": ["rbind", "ro"],
            }
        ],
        "env": [
            {"name": "TOKEN", "description": "api token", "settable": [], "value": "t0k"},
            {"name": "DEBUG", "description": "debug output", "settable": ["value"], "value": "0"},
            {
                "name": "LOG_LEVEL",
                "description": LOG_LEVEL.description,
                "settable": ["value"],
                "value": "info",
            },
            {
                "name": "PYTHONUNBUFFERED",
                "description": "stdout/stderr reach the daemon's log at once",
                "value": "1",
            },
        ],
        "args": {
            "name": "flags",
            "description": "extra flags",
            "settable": ["value"],
            "value": ["-v", "--fast"],
        },
        "linux": {
            "capabilities": ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"],
            "allowAllDevices": True,
            "devices": [
                {
                    "name": "fuse",
                    "description": "the FUSE device",
                    "settable": ["path"],
                    "path": "/dev/fuse",
                }
            ],
        },
        "ipcHost": True,
        "pidHost": True,
    }
    # Valid; its broad privileges are warnings (tests/unit/test_privileges.py).
    problems = validate_config(config)
    assert [(p.field, p.error) for p in problems] == [
        ("linux.allowAllDevices", False),
        ("network.type", False),
        ("pidHost", False),
        ("ipcHost", False),
    ]


def test_the_entrypoint_must_be_on_the_image_path(tmp_path: Path) -> None:
    project = Project(root=tmp_path, name="t:latest", drivers=("m:C",), socket="t.sock")
    rootfs = make_rootfs(tmp_path / "rootfs")
    with pytest.raises(ConfigError) as exc:
        template_context(
            project, requirements([Tiny]), ImageFacts(env=("PATH=/usr/local/bin",)), rootfs
        )
    assert str(exc.value) == "entrypoint: 'python3' not found on the image's PATH (/usr/local/bin)"


def test_an_absolute_symlink_on_the_path_is_followed_inside_the_rootfs(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    (rootfs / "usr/local/bin").mkdir(parents=True)
    (rootfs / "usr/local/bin/python3").symlink_to("/usr/bin/python3.11")
    (rootfs / "usr/local/bin/sh").symlink_to("/bin/sh")  # exists on the host only
    project = Project(
        root=tmp_path, name="t:latest", drivers=("m:C",), socket="t.sock", python="python3"
    )
    image = ImageFacts(env=("PATH=/usr/local/bin:/usr/bin",))
    context = template_context(project, requirements([Tiny]), image, rootfs)
    assert context["entrypoint"][0] == "/usr/local/bin/python3"
    project = Project(
        root=tmp_path, name="t:latest", drivers=("m:C",), socket="t.sock", python="sh"
    )
    with pytest.raises(ConfigError) as exc:
        template_context(project, requirements([Tiny]), image, rootfs)
    assert (
        str(exc.value) == "entrypoint: 'sh' not found on the image's PATH (/usr/local/bin:/usr/bin)"
    )


def test_conflicting_declarations_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json.j2").write_text(TEMPLATE.read_text())
    project = Project(
        root=tmp_path,
        name="t:latest",
        drivers=("tests.unit.test_bundle_config:Tiny", "tests.unit.test_bundle_config:Other"),
        socket="t.sock",
    )
    with pytest.raises(ConfigError) as exc:
        render_bundle_config(project, {}, None)
    with pytest.raises(ValueError) as conflict:
        requirements([Tiny, Other])
    assert str(exc.value) == f"plugin.drivers: {conflict.value}"


class Other(Stub):
    mounts = (Mount("state", "/elsewhere"),)


def render_text(tmp_path: Path, text: str) -> dict[str, Any]:
    template = tmp_path / "config.json.j2"
    template.write_text(text)
    return render_config(template, {"description": "d"})


def test_a_template_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        render_text(tmp_path, '{\n  "a": 1,\n  {% if %}\n}\n')
    assert str(exc.value) == (
        f"{tmp_path}/config.json.j2:3: template syntax error: "
        "Expected an expression, got 'end of statement block'"
    )


def test_an_undefined_variable_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        render_text(tmp_path, '{\n  "a": 1,\n  "b": {{ nope | tojson }}\n}\n')
    assert str(exc.value) == f"{tmp_path}/config.json.j2:3: 'nope' is undefined"
    with pytest.raises(ConfigError) as exc:
        render_text(tmp_path, '{\n  "b": {{ description.x.y }}\n}\n')
    assert str(exc.value) == f"{tmp_path}/config.json.j2:2: 'str object' has no attribute 'x'"


def test_rendering_to_invalid_json_shows_the_rendered_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        render_text(tmp_path, '{\n  "a": {{ description | tojson }}\n  "b": 1\n}\n')
    assert str(exc.value) == (
        f"{tmp_path}/config.json.j2: the rendered config.json is not valid JSON: Expecting ',' "
        "delimiter (rendered line 3 column 3: '\"b\": 1')"
    )


def test_rendering_a_key_twice_or_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        render_text(tmp_path, '{"a": 1,\n "a": 2}\n')
    assert str(exc.value) == (
        f"{tmp_path}/config.json.j2: the rendered config.json has the key 'a' twice in one object"
    )
    with pytest.raises(ConfigError) as exc:
        render_text(tmp_path, "[1]\n")
    assert str(exc.value) == (
        f"{tmp_path}/config.json.j2: the rendered config.json is not a JSON object"
    )


def test_a_missing_template(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        render_config(tmp_path / "nope.j2", {})
    assert str(exc.value) == f"{tmp_path}/nope.j2: template not found"


def test_read_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    with pytest.raises(ConfigError) as exc:
        read_config(path)
    assert str(exc.value) == f"{path}: not found (run the build first)"
    path.write_text('{"a": 1,}')
    with pytest.raises(ConfigError) as exc:
        read_config(path)
    assert str(exc.value) == (
        f"{path}: not valid JSON: Expecting property name enclosed in double quotes "
        "(line 1 column 9)"
    )
    path.write_text('{"a": {"b": 1, "b": 2}}')
    with pytest.raises(ConfigError) as exc:
        read_config(path)
    assert str(exc.value) == f"{path}: the key 'b' is given twice in one object"
    path.write_text("[]")
    with pytest.raises(ConfigError) as exc:
        read_config(path)
    assert str(exc.value) == f"{path}: not a JSON object"
    path.write_text('{"a": 1}')
    assert read_config(path) == {"a": 1}


# --- validation: one rule each ---------------------------------------------------------


def test_a_good_config_has_no_problems(rootfs: Path) -> None:
    assert validate_config(good()) == []
    assert validate_config(good(), rootfs) == []
    assert check_config(good(), rootfs) == []


def test_null_objects_and_arrays_are_what_go_accepts() -> None:
    assert validate_config(with_(linux=None, network=None, mounts=None, env=None)) == []


def test_not_an_object() -> None:
    assert validate_config([]) == errors("must be an object, not []", "config.json")


def test_an_unknown_key_with_a_hint() -> None:
    assert validate_config(with_(propagatedMounts="/mnt/volumes")) == errors(
        "unknown key; the daemon would ignore it (did you mean 'propagatedMount'?)",
        "propagatedMounts",
    )
    config = good()
    config["interface"]["sockets"] = "x.sock"
    assert validate_config(config) == errors(
        "unknown key; the daemon would ignore it (did you mean 'socket'?)", "interface.sockets"
    )
    assert validate_config(with_(frobnicate=1)) == errors(
        "unknown key; the daemon would ignore it", "frobnicate"
    )


def test_keys_are_case_insensitive_so_one_given_twice_is_a_problem() -> None:
    assert validate_config(with_(PropagatedMount="/mnt/volumes")) == errors(
        "given twice in different letter case", "PropagatedMount"
    )
    config = good()
    del config["propagatedMount"]
    config["PROPAGATEDMOUNT"] = "/mnt/volumes"
    assert validate_config(config) == []


def test_wrong_types() -> None:
    assert validate_config(with_(entrypoint="/usr/bin/python3")) == errors(
        'must be an array, not "/usr/bin/python3"', "entrypoint"
    )
    assert validate_config(with_(interface=["docker.volumedriver/1.0"])) == errors(
        'must be an object, not ["docker.volumedriver/1.0"]', "interface"
    )
    assert validate_config(with_(ipcHost="yes")) == errors(
        'must be a boolean, not "yes"', "ipcHost"
    )
    assert validate_config(with_(workdir=7)) == errors("must be a string, not 7", "workdir")
    assert validate_config(with_(entrypoint=["/usr/bin/python3", 1])) == errors(
        "must be a string, not 1", "entrypoint[1]"
    )
    config = good()
    config["mounts"][0]["source"] = 5
    assert validate_config(config) == errors("must be a string or null, not 5", "mounts[0].source")
    config = good()
    config["env"] = [["LOG_LEVEL", "a" * 50]]
    assert validate_config(config) == errors(
        'must be an object, not ["LOG_LEVEL", "aaaaaaaaaaaaaaaaaaaaaa...', "env[0]"
    )
    assert validate_config(with_(user={"uid": True, "gid": 0})) == [
        Problem("user.uid", "must be an integer, not true"),
        Problem("user", "is ignored by the daemon: plugins run as root", error=False),
    ]


def test_entrypoint_is_required() -> None:
    config = good()
    del config["entrypoint"]
    required = errors("is required (the plugin's program and its arguments)", "entrypoint")
    assert validate_config(config) == required
    assert validate_config(with_(entrypoint=[])) == required


def test_interface_types_and_socket_are_required() -> None:
    config = good()
    del config["interface"]
    assert validate_config(config) == errors("is required", "interface")
    assert validate_config(with_(interface={})) == [
        Problem("interface.types", "is required (e.g. docker.volumedriver/1.0)"),
        Problem("interface.socket", "is required (e.g. plugin.sock)"),
    ]


def test_the_entrypoint_must_be_absolute() -> None:
    assert validate_config(with_(entrypoint=["python3", "-m", "plugin"])) == errors(
        "must be an absolute path (the image's PATH does not apply): 'python3'", "entrypoint[0]"
    )


def test_the_socket_is_a_short_file_name() -> None:
    long = "a" * 21 + ".sock"
    assert validate_config(
        with_(interface={"types": ["docker.volumedriver/1.0"], "socket": long})
    ) == errors(
        f"'{long}' is 26 characters; the daemon's limit is 23 (its socket path must fit in "
        "108 bytes)",
        "interface.socket",
    )
    assert validate_config(
        with_(interface={"types": ["docker.volumedriver/1.0"], "socket": "run/t.sock"})
    ) == errors("must be a file name, not a path: 'run/t.sock'", "interface.socket")


def test_the_interface_version_is_exactly_1_0() -> None:
    for version in ("2.0", "1", "1.0.0"):
        config = with_(interface={"types": [f"docker.volumedriver/{version}"], "socket": "t.sock"})
        assert validate_config(config) == errors(
            f"version must be exactly 1.0, not '{version}'", "interface.types[0]"
        )


def test_an_unknown_interface_type() -> None:
    config = with_(
        interface={"types": ["docker.volumedriver/1.0", "docker.volume/1.0"], "socket": "t.sock"}
    )
    assert validate_config(config) == errors(
        f"unknown type 'docker.volume/1.0' (known: {KNOWN_TYPES})", "interface.types[1]"
    )


def test_the_protocol_scheme_is_http() -> None:
    for ok in ("", "moby.plugins.http/v1"):
        config = good()
        config["interface"]["protocolScheme"] = ok
        assert validate_config(config) == []
    config = good()
    config["interface"]["protocolscheme"] = "moby.plugins.grpc/v1"
    assert validate_config(config) == errors(
        "'moby.plugins.grpc/v1' is not the HTTP protocol; the daemon would refuse to talk to "
        'the plugin (use "" or "moby.plugins.http/v1")',
        "interface.protocolScheme",
    )


def test_an_unknown_capability_with_a_hint() -> None:
    config = good()
    config["linux"]["capabilities"] = ["SYS_ADMIN", "cap_net_admin", "CAP_SYS_ADMN", "NOT_A_THING"]
    assert validate_config(config) == [
        Problem(
            "linux.capabilities[0]",
            "unknown capability 'SYS_ADMIN' (did you mean 'CAP_SYS_ADMIN'?)",
        ),
        Problem(
            "linux.capabilities[1]",
            "unknown capability 'cap_net_admin' (did you mean 'CAP_NET_ADMIN'?)",
        ),
        Problem(
            "linux.capabilities[2]",
            "unknown capability 'CAP_SYS_ADMN' (did you mean 'CAP_SYS_ADMIN'?)",
        ),
        Problem("linux.capabilities[3]", "unknown capability 'NOT_A_THING'"),
    ]


def test_a_mount_can_only_make_its_source_settable() -> None:
    config = good()
    config["mounts"][0]["settable"] = ["source", "destination"]
    assert validate_config(config) == errors(
        "only 'source' can be settable here, not 'destination'", "mounts[0].settable"
    )


def test_an_env_can_only_make_its_value_settable() -> None:
    config = good()
    config["env"][0]["settable"] = ["source"]
    assert validate_config(config) == errors(
        "only 'value' can be settable here, not 'source'", "env[0].settable"
    )


def test_devices_and_args_settable_fields() -> None:
    config = good()
    config["linux"]["devices"] = [{"name": "fuse", "settable": ["value"], "path": "/dev/fuse"}]
    config["args"] = {"name": "flags", "settable": ["path"], "value": []}
    assert validate_config(config) == [
        Problem("linux.devices[0].settable", "only 'path' can be settable here, not 'value'"),
        Problem("args.settable", "only 'value' can be settable here, not 'path'"),
    ]


def test_a_settable_name_used_twice() -> None:
    config = good()
    config["env"].append({"name": "data", "settable": ["value"], "value": "x"})
    config["args"] = {"name": "LOG_LEVEL", "settable": ["value"], "value": []}
    assert validate_config(config) == [
        Problem(
            "mounts[0].name",
            "'data' is also the name of env[1]; `docker plugin set` would only reach the first",
        ),
        Problem(
            "args.name",
            "'LOG_LEVEL' is also the name of env[0]; `docker plugin set` would only reach the "
            "first",
        ),
    ]


def test_names_are_required_where_set_needs_them() -> None:
    config = good()
    config["env"].append({"value": "x"})
    config["mounts"].append(
        {"source": "/dev", "destination": "/dev", "type": "bind", "options": ["rbind"]}
    )
    config["linux"]["devices"] = [{"path": "/dev/fuse"}, {"settable": ["path"], "path": "/dev/x"}]
    assert validate_config(config) == [
        Problem("env[1].name", "is required"),
        Problem(
            "linux.devices[1].name", "is required (`docker plugin set` finds settings by name)"
        ),
    ]


def test_an_env_name_with_a_dot_cannot_be_set() -> None:
    config = good()
    config["env"] = [
        {"name": "log.level", "settable": ["value"], "value": "info"},
        {"name": "a.b", "value": "fixed"},
        {"name": "A=B", "value": "x"},
    ]
    assert validate_config(config) == [
        Problem("env[0].name", "'log.level' contains '.', so `docker plugin set` cannot set it"),
        Problem("env[2].name", "must not contain '=': 'A=B'"),
    ]


def test_an_empty_mount_source() -> None:
    config = good()
    config["mounts"][0]["source"] = ""
    assert validate_config(config) == [
        Problem(
            "mounts[0].source",
            "is empty: users must `docker plugin set PLUGIN data.source=/path` before enable",
            error=False,
        )
    ]
    config["mounts"][0]["settable"] = []
    assert validate_config(config) == errors(
        "is empty and not settable: the plugin could never be enabled", "mounts[0].source"
    )


def test_a_null_mount_source_can_never_be_enabled() -> None:
    # The daemon's `set` answers "Plugin config has no mount source" for a
    # null source (older daemons dereference nil), and enable fails with
    # "mount source is not specified": settable or not, null is an error.
    config = good()
    config["mounts"][0]["source"] = None
    assert validate_config(config) == errors(
        'is null, which `docker plugin set` cannot change (the daemon answers "Plugin config '
        'has no mount source"); give a default, or "" for users to set',
        "mounts[0].source",
    )
    config["mounts"][0]["settable"] = []
    assert validate_config(config) == errors(
        "is null and not settable: the plugin could never be enabled", "mounts[0].source"
    )


def test_a_null_device_path() -> None:
    config = good()
    config["linux"]["devices"] = [{"name": "fuse", "settable": ["path"], "path": None}]
    assert validate_config(config) == errors(
        'is null, which `docker plugin set` cannot change (the daemon answers "Plugin config '
        'has no device path"); give a default, or "" for users to set',
        "linux.devices[0].path",
    )


def test_mount_paths_must_be_absolute() -> None:
    config = good()
    config["mounts"][0]["destination"] = "data"
    config["mounts"][0]["source"] = "var/lib/t"
    assert validate_config(config) == [
        Problem("mounts[0].destination", "must be an absolute path: 'data'"),
        Problem("mounts[0].source", "a bind mount needs an absolute host path: 'var/lib/t'"),
    ]
    config = good()
    del config["mounts"][0]["destination"]
    assert validate_config(config) == errors("is required", "mounts[0].destination")


def test_workdir_and_propagated_mount_must_be_absolute() -> None:
    assert validate_config(with_(workdir="opt", propagatedMount="mnt")) == [
        Problem("workdir", "must be an absolute path: 'opt'"),
        Problem("propagatedMount", "must be an absolute path: 'mnt'"),
    ]


def test_network_types_that_give_no_network() -> None:
    assert validate_config(with_(network={"type": "bridge"})) == [
        Problem("network.type", "'bridge' gives the plugin no network at all; use \"host\"", False)
    ]
    assert validate_config(with_(network={"type": "Host"})) == [
        Problem(
            "network.type",
            '\'Host\' is no network mode: the plugin gets no network (use "host" or "")',
            False,
        )
    ]
    network_plugin = {"types": ["docker.networkdriver/1.0"], "socket": "t.sock"}
    assert validate_config(with_(network={"type": "host"}, interface=network_plugin)) == []


def test_user_and_rootfs_are_warnings() -> None:
    config = with_(user={"uid": 1000, "gid": 1000}, rootfs={"type": "layers", "diff_ids": []})
    assert validate_config(config) == [
        Problem("user", "is ignored by the daemon: plugins run as root", error=False),
        Problem("rootfs", "is overwritten by `docker plugin create`", error=False),
    ]
    assert check_config(config) == [
        "user: is ignored by the daemon: plugins run as root",
        "rootfs: is overwritten by `docker plugin create`",
    ]


def test_several_errors_make_one_config_error() -> None:
    config = with_(entrypoint=["python3"], propagatedMounts="/x", ipcHost=1)
    with pytest.raises(ConfigError) as exc:
        check_config(config, where="b/config.json")
    problems = [
        "propagatedMounts: unknown key; the daemon would ignore it (did you mean "
        "'propagatedMount'?)",
        "ipcHost: must be a boolean, not 1",
        "entrypoint[0]: must be an absolute path (the image's PATH does not apply): 'python3'",
    ]
    assert str(exc.value) == "b/config.json: 3 problems: " + "; ".join(problems)
    assert exc.value.problems == problems


def test_one_error_is_one_line() -> None:
    with pytest.raises(ConfigError) as exc:
        check_config(with_(entrypoint=[]))
    assert str(exc.value) == (
        "config.json: entrypoint: is required (the plugin's program and its arguments)"
    )


# --- validation against the rootfs ---------------------------------------------------


def test_everything_missing_from_an_empty_rootfs(tmp_path: Path) -> None:
    assert validate_config(good(), tmp_path) == [
        Problem("entrypoint[0]", "/usr/bin/python3 does not exist in the rootfs"),
        Problem(
            "workdir", "/opt/plugin does not exist in the rootfs (create it in the Dockerfile)"
        ),
        Problem(
            "propagatedMount",
            "/mnt/volumes does not exist in the rootfs (create it in the Dockerfile)",
        ),
        Problem(
            "mounts[0].destination",
            "/data does not exist in the rootfs (create it in the Dockerfile)",
        ),
        Problem(
            "rootfs",
            "/run/docker/plugins does not exist (the daemon mounts the socket directory there)",
        ),
    ]


def test_the_rootfs_must_be_a_directory(tmp_path: Path) -> None:
    assert validate_config(good(), tmp_path / "nope") == errors(
        f"{tmp_path / 'nope'} is not a directory", "rootfs"
    )


def test_the_entrypoint_must_be_an_executable_file(rootfs: Path) -> None:
    (rootfs / "usr/bin/python3.11").chmod(0o644)
    assert validate_config(good(), rootfs) == errors(
        "/usr/bin/python3 is not an executable file in the rootfs", "entrypoint[0]"
    )
    assert validate_config(with_(entrypoint=["/usr/bin"]), rootfs) == errors(
        "/usr/bin is not an executable file in the rootfs", "entrypoint[0]"
    )


def test_absolute_symlinks_resolve_inside_the_rootfs(rootfs: Path) -> None:
    # /usr/local/bin/python3 -> /usr/bin/python3 -> python3.11, all in the rootfs
    (rootfs / "usr/local/bin").mkdir(parents=True)
    (rootfs / "usr/local/bin/python3").symlink_to("/usr/bin/python3")
    # Debian's /var/run -> /run: a mount under it lands in the rootfs's /run
    (rootfs / "var").mkdir()
    (rootfs / "var/run").symlink_to("/run")
    config = good()
    config["entrypoint"][0] = "/usr/local/bin/python3"
    config["mounts"][0]["destination"] = "/var/run/docker"
    assert validate_config(config, rootfs) == []
    # /bin/sh exists on this host, not in the rootfs
    assert os.path.exists("/bin/sh")
    (rootfs / "usr/bin/sh").symlink_to("/bin/sh")
    assert validate_config(with_(entrypoint=["/usr/bin/sh"]), rootfs) == errors(
        "/usr/bin/sh does not exist in the rootfs", "entrypoint[0]"
    )


def test_a_symlink_loop_does_not_exist(rootfs: Path) -> None:
    (rootfs / "usr/bin/loop").symlink_to("/usr/bin/loop")
    assert resolve_in_rootfs(rootfs, "/usr/bin/loop") is None
    assert validate_config(with_(entrypoint=["/usr/bin/loop"]), rootfs) == errors(
        "/usr/bin/loop does not exist in the rootfs", "entrypoint[0]"
    )


def test_dotdot_stops_at_the_rootfs(rootfs: Path) -> None:
    assert resolve_in_rootfs(rootfs, "/../../usr/bin/python3") == rootfs / "usr/bin/python3.11"
    (rootfs / "data/up").symlink_to("../../../..")
    assert resolve_in_rootfs(rootfs, "/data/up/opt/plugin") == rootfs / "opt/plugin"


def test_make_dirs_stays_inside_the_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "run").mkdir(parents=True)
    (rootfs / "var").mkdir()
    (rootfs / "var/run").symlink_to("/run")
    lines: list[str] = []
    make_dirs(rootfs, ["/var/run/dpk-test-never-on-host", "/data", "/run"], lines.append)
    assert (rootfs / "run/dpk-test-never-on-host").is_dir()
    assert not os.path.lexists("/run/dpk-test-never-on-host")
    assert (rootfs / "data").is_dir()
    assert lines == [
        "created /var/run/dpk-test-never-on-host in the rootfs",
        "created /data in the rootfs",
    ]


def test_validate_bundle(tmp_path: Path) -> None:
    make_rootfs(tmp_path / "rootfs")
    (tmp_path / "config.json").write_text(
        '{"entrypoint": ["/usr/bin/python3"], "user": {"uid": 1},'
        ' "interface": {"types": ["docker.volumedriver/1.0"], "socket": "a.sock"}}'
    )
    assert validate_bundle(tmp_path) == ["user: is ignored by the daemon: plugins run as root"]
