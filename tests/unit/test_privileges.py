"""Least privilege: the validator warns on privileges broader than a plugin
needs and ``--strict`` fails on them (plugin/bundle/_config.py, the CLI); a
legacy plugin's socket is 0660 with a chosen group (plugin/_serve.py)."""

from __future__ import annotations

import dataclasses
import grp
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localvol.driver import LocalVolumes

from plugin._requirements import requirements
from plugin.bundle import Problem, check_config, load_project, validate_config
from plugin.bundle.__main__ import main
from plugin.bundle._builder import render_bundle_config
from plugin.bundle._config import undeclared_capabilities
from plugin.bundle._rootfs import load_drivers
from plugin.ipam import IpamDriver
from plugin.network import NetworkDriver
from plugin.volume import VolumeDriver
from tests.conftest import PYTHONPATH
from tests.unit.test_bundle_config import IMAGE_ATTRS, good, make_rootfs, with_

ROOT = Path(__file__).resolve().parents[2]
LOCALVOL = ROOT / "reference" / "localvol"

ALL_DEVICES = (
    "linux.allowAllDevices: gives the plugin every device of the host; list the devices it "
    "needs in linux.devices instead"
)
HOST_NETWORK = (
    "network.type: 'host' gives a volume plugin the host's network; it needs it only to reach "
    'remote storage (otherwise use "")'
)
PID_HOST = (
    "pidHost: shares the host's process namespace with the plugin; leave it false unless the "
    "plugin needs it"
)
IPC_HOST = (
    "ipcHost: shares the host's IPC namespace with the plugin; leave it false unless the "
    "plugin needs it"
)


def root_mount(source: str) -> str:
    return (
        f"mounts[1].source: {source!r} mounts the host's whole filesystem into the plugin; "
        "mount only the directories it needs"
    )


def with_mount(source: str, options: list[str] | None = None) -> dict[str, Any]:
    config = good()
    config["mounts"].append(
        {
            "name": "host",
            "source": source,
            "destination": "/host",
            "type": "bind",
            "options": options or ["rbind"],
        }
    )
    return config


def warnings(config: dict[str, Any], **kwargs: Any) -> list[str]:
    return check_config(config, **kwargs)


# --- the validator ------------------------------------------------------------------------


def test_a_narrow_volume_plugin_has_no_warning() -> None:
    assert validate_config(good()) == []


def test_all_devices() -> None:
    config = good()
    config["linux"]["allowAllDevices"] = True
    assert warnings(config) == [ALL_DEVICES]
    assert validate_config(config) == [Problem(*ALL_DEVICES.split(": ", 1), error=False)]


def test_host_network_for_a_volume_plugin_only() -> None:
    assert warnings(with_(network={"type": "host"})) == [HOST_NETWORK]
    for types in (["docker.networkdriver/1.0"], ["docker.volumedriver/1.0", "docker.authz/1.0"]):
        interface = {"types": types, "socket": "t.sock"}
        assert warnings(with_(network={"type": "host"}, interface=interface)) == []
    assert warnings(with_(network={"type": ""})) == []


AUTHZ_NETWORK = (
    "network.type: 'host' gives an authorization plugin the host's network; it needs it only "
    'to fetch its policy from elsewhere (otherwise use "")'
)
PROPAGATED = (
    "propagatedMount: shares the plugin's mounts with the host; only a volume plugin has use "
    "for it (leave it out)"
)


def typed(*types: str, **changes: Any) -> dict[str, Any]:
    config = with_(interface={"types": list(types), "socket": "t.sock"})
    del config["propagatedMount"]  # a volume plugin's
    config.update(changes)
    return config


def test_host_network_for_an_authorization_plugin_only() -> None:
    authz = "docker.authz/1.0"
    assert warnings(typed(authz, network={"type": "host"})) == [AUTHZ_NETWORK]
    assert warnings(typed(authz, network={"type": ""})) == []
    # A secret provider may reach a vault; a plugin of two types has its reasons.
    assert warnings(typed("docker.secretprovider/1.0", network={"type": "host"})) == []
    both = typed(authz, "docker.networkdriver/1.0", network={"type": "host"})
    assert warnings(both) == []


def test_a_propagated_mount_for_authorization_and_secrets() -> None:
    for types in (
        ["docker.authz/1.0"],
        ["docker.secretprovider/1.0"],
        ["docker.authz/1.0", "docker.secretprovider/1.0"],
    ):
        config = typed(*types, propagatedMount="/mnt/volumes")
        assert warnings(config) == [PROPAGATED], types
        assert warnings(typed(*types)) == [], types
    mixed = typed("docker.authz/1.0", "docker.volumedriver/1.0", propagatedMount="/mnt/volumes")
    assert warnings(mixed) == []
    assert warnings(good()) == []  # a volume plugin's


IPAM_HOST_NETWORK = (
    "network.type: 'host' gives an IPAM plugin the host's network; it hands out addresses and "
    'needs it only to reach a remote address service (otherwise use "")'
)


def network_plugin(network: str, *types: str, caps: list[str] | None = None) -> dict[str, Any]:
    config = with_(network={"type": network}, interface={"types": list(types), "socket": "n.sock"})
    config["linux"]["capabilities"] = caps or []
    return config


def test_a_network_plugin_legitimately_has_the_host_network_and_net_admin() -> None:
    class Bridges(NetworkDriver):
        network = "host"
        linux_capabilities = ("CAP_NET_ADMIN",)

    declared = requirements([Bridges])
    net = "docker.networkdriver/1.0"
    config = network_plugin("host", net, caps=["CAP_NET_ADMIN"])
    assert warnings(config, declared=declared) == []
    # Serving IPAM next to it changes nothing.
    both = network_plugin("host", net, "docker.ipamdriver/1.0", caps=["CAP_NET_ADMIN"])
    assert warnings(both, declared=declared) == []


def test_an_ipam_plugin_needs_no_host_network() -> None:
    assert warnings(network_plugin("host", "docker.ipamdriver/1.0")) == [IPAM_HOST_NETWORK]
    assert warnings(network_plugin("", "docker.ipamdriver/1.0")) == []


def test_a_network_plugin_without_the_host_network_is_told_why_it_needs_it() -> None:
    expected = (
        "network.type: is '': a network plugin needs \"host\", since the daemon moves the "
        "interfaces it makes from the host's namespace into containers"
    )
    assert warnings(network_plugin("", "docker.networkdriver/1.0")) == [expected]
    assert warnings(network_plugin("none", "docker.networkdriver/1.0")) == [
        expected.replace("is ''", "is 'none'")
    ]


def test_net_admin_for_a_plugin_whose_drivers_do_not_declare_it() -> None:
    class Addresses(IpamDriver):
        pass

    config = network_plugin("", "docker.ipamdriver/1.0", caps=["CAP_NET_ADMIN"])
    assert warnings(config, declared=requirements([Addresses])) == [
        "linux.capabilities[0]: CAP_NET_ADMIN is not declared by the plugin's drivers "
        "(they declare none)"
    ]


def test_host_namespaces() -> None:
    assert warnings(with_(pidHost=True)) == [PID_HOST]
    assert warnings(with_(ipcHost=True)) == [IPC_HOST]
    assert warnings(with_(pidHost=False, ipcHost=False)) == []


@pytest.mark.parametrize("source", ["/", "//", "/.", "/..", "/./"])
def test_mounts_of_the_host_root(source: str) -> None:
    assert warnings(with_mount(source)) == [root_mount(source)]


def test_mounts_of_the_docker_socket() -> None:
    for source in ("/var/run/docker.sock", "/run/docker.sock", "/run//docker.sock"):
        assert warnings(with_mount(source)) == [
            f"mounts[1].source: {source!r} gives the plugin control of the Docker daemon"
        ]


def of_type(config: dict[str, Any], capability: str) -> dict[str, Any]:
    config["interface"] = {"types": [capability], "socket": "t.sock"}
    return config


def test_log_and_metrics_plugins_may_use_the_host_network() -> None:
    """A log driver ships to a remote backend, a metrics plugin serves a port."""
    for capability in ("docker.logdriver/1.0", "docker.metricscollector/1.0"):
        assert warnings(of_type(with_(network={"type": "host"}), capability)) == []


def test_a_metrics_plugin_mounting_the_metrics_socket_itself() -> None:
    for source in ("/var/run/docker/metrics.sock", "/run/docker/metrics.sock"):
        config = of_type(with_mount(source), "docker.metricscollector/1.0")
        assert warnings(config) == [
            f"mounts[1].source: {source!r}: the daemon mounts its metrics socket into every "
            "metrics plugin at /run/docker/metrics.sock; leave this mount out"
        ]


def test_mounts_of_the_daemons_data() -> None:
    for source in ("/var/lib/docker", "/var/lib/docker/containers", "/var/lib/docker/plugins"):
        assert warnings(of_type(with_mount(source), "docker.logdriver/1.0")) == [
            f"mounts[1].source: {source!r} is the daemon's own data (every container's files "
            "and logs); a log driver gets each container's output from the daemon"
        ]
        assert warnings(with_mount(source)) == [
            f"mounts[1].source: {source!r} is the daemon's own data (every container's files "
            "and logs); mount a directory of the plugin's own"
        ]
    for fine in ("/var/lib/docker-filelog", "/var/lib/docker/plugins/state", "/var/lib/dockerd"):
        assert warnings(of_type(with_mount(fine), "docker.logdriver/1.0")) == [], fine


def test_narrow_mounts_are_fine() -> None:
    for source in ("/var/lib/x", "/root", "/srv", "/run/docker/plugins"):
        assert warnings(with_mount(source)) == []


class Mounter(VolumeDriver):
    """Declares what it needs: CAP_SYS_ADMIN."""

    linux_capabilities = ("CAP_SYS_ADMIN",)


def test_capabilities_beyond_those_declared() -> None:
    declared = requirements([Mounter])
    config = good()
    config["linux"]["capabilities"] = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE"]
    expected = [
        "linux.capabilities[1]: CAP_NET_ADMIN is not declared by the plugin's drivers "
        "(they declare CAP_SYS_ADMIN)",
        "linux.capabilities[2]: CAP_SYS_MODULE is not declared by the plugin's drivers "
        "(they declare CAP_SYS_ADMIN)",
    ]
    assert warnings(config, declared=declared) == expected
    assert undeclared_capabilities(config, declared) == expected
    # Without the declarations there is nothing to compare with.
    assert warnings(config) == []
    nothing = requirements([type("Plain", (Mounter,), {"linux_capabilities": ()})])
    assert undeclared_capabilities(good(), nothing) == [
        "linux.capabilities[0]: CAP_SYS_ADMIN is not declared by the plugin's drivers "
        "(they declare none)"
    ]
    # The daemon reads keys in any case.
    assert undeclared_capabilities({"Linux": {"Capabilities": ["CAP_KILL"]}}, declared) == [
        "linux.capabilities[0]: CAP_KILL is not declared by the plugin's drivers "
        "(they declare CAP_SYS_ADMIN)"
    ]


def test_everything_broad_at_once_is_listed_in_order() -> None:
    config = with_mount("/")
    config.update(network={"type": "host"}, pidHost=True, ipcHost=True)
    config["linux"]["allowAllDevices"] = True
    assert warnings(config) == [ALL_DEVICES, HOST_NETWORK, PID_HOST, IPC_HOST, root_mount("/")]


# --- the reference plugin --------------------------------------------------------------------


@pytest.fixture
def reference_bundle(tmp_path: Path) -> Path:
    """The reference plugin's config.json as the builder renders it, in a bundle."""
    bundle = tmp_path / "bundle"
    rootfs = make_rootfs(bundle / "rootfs")
    config, _ = render_bundle_config(load_project(LOCALVOL / "plugin.toml"), IMAGE_ATTRS, rootfs)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def test_the_reference_plugin_asks_for_nothing_broad(reference_bundle: Path) -> None:
    project = load_project(LOCALVOL / "plugin.toml")
    declared = requirements(load_drivers(project))
    config = json.loads((reference_bundle / "config.json").read_text())
    assert check_config(config, reference_bundle / "rootfs", declared=declared) == []
    assert declared.linux_capabilities == LocalVolumes.linux_capabilities == ("CAP_SYS_ADMIN",)


def run(*argv: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, re.sub(r"done in \d+\.\d s", "done in N.N s", out.getvalue()).splitlines()


def test_the_reference_plugin_passes_strict(reference_bundle: Path) -> None:
    project = str(LOCALVOL / "plugin.toml")
    assert run("--project", project, "--bundle", str(reference_bundle), "validate", "--strict") == (
        0,
        [
            f"==> validate {reference_bundle}",
            f"    {reference_bundle}/config.json: valid",
            "    done in N.N s",
        ],
    )


def test_strict_turns_warnings_into_a_failure(reference_bundle: Path) -> None:
    path = reference_bundle / "config.json"
    config = json.loads(path.read_text())
    config["linux"]["allowAllDevices"] = True
    config["linux"]["capabilities"].append("CAP_NET_ADMIN")
    path.write_text(json.dumps(config))
    caps = (
        "linux.capabilities[1]: CAP_NET_ADMIN is not declared by the plugin's drivers "
        "(they declare CAP_SYS_ADMIN)"
    )
    argv = [
        "--project",
        str(LOCALVOL / "plugin.toml"),
        "--bundle",
        str(reference_bundle),
        "validate",
    ]
    assert run(*argv) == (
        0,
        [
            f"==> validate {reference_bundle}",
            f"    warning: {ALL_DEVICES}",
            f"    warning: {caps}",
            f"    {path}: valid",
            "    done in N.N s",
        ],
    )
    assert run(*argv, "--strict") == (
        1,
        [
            f"==> validate {reference_bundle}",
            f"    warning: {ALL_DEVICES}",
            f"    warning: {caps}",
            f"error: {path}: --strict: 2 warnings: {ALL_DEVICES}; {caps}",
        ],
    )
    config["linux"]["capabilities"].pop()
    path.write_text(json.dumps(config))
    assert run(*argv, "--strict")[1][-1] == f"error: {path}: --strict: {ALL_DEVICES}"


def test_strict_create_sends_nothing_to_the_daemon(
    reference_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plugin.bundle import _engine
    from tests.unit.test_bundle_engine import FakeClient

    client = FakeClient()
    monkeypatch.setattr(_engine, "docker_client", lambda timeout=600: client)
    path = reference_bundle / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pidHost": True}))
    argv = ["--project", str(LOCALVOL / "plugin.toml"), "--bundle", str(reference_bundle)]
    assert run(*argv, "create", "--strict") == (
        1,
        [
            "==> create localvol:latest",
            f"    warning: {PID_HOST}",
            f"error: {path}: --strict: {PID_HOST}",
        ],
    )
    assert client.api.bodies == []


def test_strict_is_offered_where_a_bundle_is_made_or_used() -> None:
    for command in ("build", "plugin", "validate", "create"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"], out=io.StringIO())
        assert info.value.code == 0
    with pytest.raises(SystemExit):
        main(["enable", "--strict"], out=io.StringIO())


# --- the socket of a legacy plugin -------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(dir="/tmp", prefix="pk-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


LEGACY = """
import sys
from plugin import serve
from tests.unit.test_privileges import Mounter

class Legacy(Mounter):
    def create(self, req): pass
    def remove(self, req): pass
    def mount(self, req): raise NotImplementedError
    def unmount(self, req): pass
    def path(self, req): raise NotImplementedError
    def get(self, req): raise NotImplementedError
    def list(self): return None

kwargs = {"group": sys.argv[2]} if len(sys.argv) > 2 else {}
serve(Legacy(), path=sys.argv[1], **kwargs)
"""


def serve_legacy(path: str, *group: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LEGACY, path, *group],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Until it listens: the socket file exists from bind(), its mode and
    # group are set before listen().
    deadline = time.monotonic() + 15
    while True:
        assert proc.poll() is None, "the plugin exited"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
                return proc
            except OSError:
                pass
        assert time.monotonic() < deadline, "the plugin did not listen within 15 s"
        time.sleep(0.02)


def test_a_legacy_socket_is_0660_with_the_chosen_group(short_dir: str) -> None:
    # A legacy plugin is started by a person, so the socket is what guards
    # it: no access for others, and the group of the user's choice.
    path = os.path.join(short_dir, "legacy.sock")
    proc = serve_legacy(path)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == os.getegid()
    finally:
        proc.terminate()
        proc.wait(15)
    assert not os.path.exists(path)
    if os.geteuid() != 0:
        pytest.skip("only root may give the socket to any group")
    group = next(g for g in grp.getgrall() if g.gr_gid != os.getegid())
    proc = serve_legacy(path, group.gr_name)
    try:
        st = os.stat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group.gr_gid)
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize("name", ["policyauthz", "filesecrets"])
def test_the_authz_and_secrets_reference_plugins_pass_strict(name: str, tmp_path: Path) -> None:
    project_file = ROOT / "reference" / name / "plugin.toml"
    bundle = tmp_path / "bundle"
    rootfs = make_rootfs(bundle / "rootfs")
    project = load_project(project_file)
    declared = requirements(load_drivers(project))
    for mount in declared.mounts:  # as the build creates them
        (rootfs / mount.destination.lstrip("/")).mkdir(parents=True)
    config, warnings_ = render_bundle_config(project, IMAGE_ATTRS, rootfs)
    assert warnings_ == []
    (bundle / "config.json").write_text(json.dumps(config))
    # No capability, no network, no propagated mount; one read-only mount.
    assert check_config(config, rootfs, declared=declared) == []
    assert (declared.linux_capabilities, declared.network, declared.propagated_mount) == (
        (),
        "",
        None,
    )
    assert [(m.name, m.options) for m in declared.mounts] == [
        ({"policyauthz": "policy", "filesecrets": "secrets"}[name], ("rbind", "ro"))
    ]
    assert run("--project", str(project_file), "--bundle", str(bundle), "validate", "--strict") == (
        0,
        [f"==> validate {bundle}", f"    {bundle}/config.json: valid", "    done in N.N s"],
    )


@pytest.mark.parametrize("name", ["filelog", "metricsexport"])
def test_the_log_and_metrics_reference_plugins_pass_strict(tmp_path: Path, name: str) -> None:
    project = ROOT / "reference" / name / "plugin.toml"
    bundle = tmp_path / "bundle"
    rootfs = make_rootfs(bundle / "rootfs")
    (rootfs / "logs").mkdir()
    config, _ = render_bundle_config(load_project(project), IMAGE_ATTRS, rootfs)
    (bundle / "config.json").write_text(json.dumps(config))
    declared = requirements(load_drivers(load_project(project)))
    assert check_config(config, rootfs, declared=declared) == []
    assert declared.linux_capabilities == ()
    assert declared.network == ("host" if name == "metricsexport" else "")
    assert run("--project", str(project), "--bundle", str(bundle), "validate", "--strict") == (
        0,
        [f"==> validate {bundle}", f"    {bundle}/config.json: valid", "    done in N.N s"],
    )


def test_a_build_warns_once_about_capabilities_its_drivers_do_not_declare(
    tmp_path: Path,
) -> None:
    # The template asks for one capability more than LocalVolumes declares;
    # the build's own check reports it, with the drivers it loaded.
    project = load_project(LOCALVOL / "plugin.toml")
    template = tmp_path / "config.json.j2"
    text = project.template_path.read_text()
    line = '"capabilities": {{ capabilities | tojson }}'
    assert line in text
    more = '"capabilities": {{ ((capabilities | list) + ["CAP_NET_ADMIN"]) | tojson }}'
    template.write_text(text.replace(line, more))
    project = dataclasses.replace(project, config_template=str(template))
    rootfs = make_rootfs(tmp_path / "bundle" / "rootfs")
    _, warnings_ = render_bundle_config(project, IMAGE_ATTRS, rootfs)
    assert warnings_ == [
        "linux.capabilities[1]: CAP_NET_ADMIN is not declared by the plugin's drivers "
        "(they declare CAP_SYS_ADMIN)"
    ]
