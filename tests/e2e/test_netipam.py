"""The reference network and IPAM plugins on the real daemon, driven with the
docker CLI: bridgenet (a bridge per network) with poolipam (addresses).

Both plugins are built once (shared: built_bundle) and created under unique names,
each with its own data directory and (poolipam) its own range; networks
and containers have unique names and subnets; teardown removes only what
the tests made. Tests run in file order. The daemon restart happens on a
private daemon of that test's own (own_daemon), with plugins of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    ROOT,
    TEST_IMAGE,
    Plugin,
    built_bundle,
    docker,
    remove_plugin,
    wait_for,
)
from .private_daemon import PrivateDaemon

pytestmark = pytest.mark.e2e


# --- building and creating the plugins ---------------------------------------------------------


@dataclass
class NetPlugins:
    net: Plugin
    ipam: Plugin
    #: The /16 poolipam carves its pools from (unique to this session).
    pools: str
    #: The bundles the plugins were made from, by project name.
    bundles: dict[str, Path]

    def ipam_state(self) -> dict[str, Any]:
        return self.ipam.state()

    def net_state(self) -> dict[str, Any]:
        return self.net.state()


@pytest.fixture(scope="session")
def plugins(engine_ready: None) -> Iterator[NetPlugins]:
    with net_plugins(net_bundles()) as made:
        yield made


def net_bundles() -> list[Path]:
    """The bundles of bridgenet and poolipam (built on the shared daemon)."""
    return [built_bundle(ROOT / "reference" / name) for name in ("bridgenet", "poolipam")]


@contextlib.contextmanager
def net_plugins(bundles: list[Path]) -> Iterator[NetPlugins]:
    """Both plugins, created from ``bundles`` and enabled on the daemon of
    DOCKER_HOST; at the end, the containers and networks made meanwhile are
    removed, then the plugins."""
    from plugin.bundle._engine import Engine

    tag = uuid.uuid4().hex[:8]
    engine = Engine(report=lambda line: None)
    # Not 10.213/16: the private daemons' default bridges are there.
    pools = f"10.{random.choice([n for n in range(160, 251) if n != 213])}.0.0/16"
    made: list[Plugin] = []
    networks, containers = len(_made_networks), len(_made_containers)
    try:
        for name, bundle in zip(("bridgenet", "poolipam"), bundles, strict=True):
            plugin = Plugin(f"dpk-e2e-{tag}/{name}:latest", Path(f"/var/tmp/dpk-e2e-{name}-{tag}"))
            engine.create(plugin.name, bundle)
            made.append(plugin)
            settings = [f"data.source={plugin.data_dir}"]
            if name == "poolipam":
                settings.append(f"POOLS={pools}")
            engine.set(plugin.name, settings)
            engine.enable(plugin.name, timeout=30)
        built = {"bridgenet": bundles[0], "poolipam": bundles[1]}
        yield NetPlugins(made[0], made[1], pools, built)
    finally:
        for container in _made_containers[containers:]:
            docker("rm", "-f", container, check=False)
        for network in _made_networks[networks:]:
            docker("network", "rm", network, check=False)
        del _made_containers[containers:], _made_networks[networks:]
        for plugin in made:
            remove_plugin(plugin)


#: What the tests made, removed at the end (containers first).
_made_networks: list[str] = []
_made_containers: list[str] = []


# --- helpers ---------------------------------------------------------------------------------


#: The third octets of the /24s tests ask for (poolipam carves its own
#: pools from the low ones), each handed out once per session.
_THIRDS = random.sample(range(100, 251), k=151)


def subnet(plugins: NetPlugins) -> str:
    """A /24 of this session's range that no other test uses."""
    second = plugins.pools.split(".")[1]
    return f"10.{second}.{_THIRDS.pop()}.0/24"


def create_network(
    plugins: NetPlugins, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    name = f"dpk-net-{uuid.uuid4().hex[:8]}"
    _made_networks.append(name)
    proc = docker(
        "network",
        "create",
        "-d",
        plugins.net.name,
        "--ipam-driver",
        plugins.ipam.name,
        *args,
        name,
        check=check,
    )
    if proc.returncode == 0:
        assert proc.stdout.strip()  # the network's ID
    proc.args = name  # type: ignore[assignment]
    return proc


def network(plugins: NetPlugins, *args: str) -> str:
    return str(create_network(plugins, *args).args)


def run(network: str, *args: str) -> str:
    """A busybox container on ``network``, sleeping; its name."""
    name = f"dpk-c-{uuid.uuid4().hex[:8]}"
    _made_containers.append(name)
    docker("run", "-d", "--name", name, "--network", network, *args, TEST_IMAGE, "sleep", "600")
    return name


def ip_of(container: str, network: str) -> str:
    info = json.loads(docker("inspect", container).stdout)[0]
    return str(info["NetworkSettings"]["Networks"][network]["IPAddress"])


def pings(container: str, address: str) -> bool:
    proc = docker("exec", container, "ping", "-c", "1", "-W", "2", address, check=False)
    return proc.returncode == 0


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def network_id(name: str) -> str:
    return str(json.loads(docker("network", "inspect", name).stdout)[0]["Id"])


def ipam_addresses(plugins: NetPlugins) -> dict[str, str]:
    """Every address poolipam holds (address -> label), over all pools."""
    out: dict[str, str] = {}
    for pool in plugins.ipam_state()["pools"].values():
        for address, label in pool["addresses"].items():
            assert address not in out, f"{address} handed out twice"
            out[address] = label
    return out


# --- the tests ---------------------------------------------------------------------------------


def test_bundles_declare_what_each_plugin_needs(plugins: NetPlugins) -> None:
    for plugin, types, network_type, caps in (
        (plugins.net, ["docker.networkdriver/1.0"], "host", ["CAP_NET_ADMIN"]),
        (plugins.ipam, ["docker.ipamdriver/1.0"], "", []),
    ):
        info = json.loads(docker("plugin", "inspect", plugin.name).stdout)[0]
        assert info["Enabled"] is True
        config = info["Config"]
        assert config["Interface"]["Types"] == types
        assert config["Network"]["Type"] == network_type
        assert config["Linux"]["Capabilities"] == caps


def test_bridgenet_is_slim_and_keeps_the_programs_it_runs(plugins: NetPlugins) -> None:
    # What plugin.toml's keep names: no import shows them, yet every test
    # below runs them (ip for each interface, iptables for the rule that
    # lets two containers on one bridge reach each other).
    rootfs = plugins.bundles["bridgenet"] / "rootfs"
    for program in ("ip", "iptables-nft", "iptables-legacy"):
        assert (rootfs / "usr" / "sbin" / program).resolve().is_file(), program
    assert list(rootfs.glob("usr/lib/*-linux-gnu/xtables/libxt_standard.so"))
    # Slim: the image's package manager is not there.
    assert not (rootfs / "usr" / "bin" / "apt").exists()
    size = sum(p.lstat().st_size for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 50_000_000, size


def test_two_containers_reach_each_other(plugins: NetPlugins) -> None:
    net = network(plugins, "--subnet", subnet(plugins))
    c1, c2 = run(net), run(net)
    ip1, ip2 = ip_of(c1, net), ip_of(c2, net)
    assert pings(c1, ip2) and pings(c2, ip1)
    # The addresses came from poolipam (dockerd 20.10 sends no endpoint
    # name with the request, so they are not labelled).
    held = ipam_addresses(plugins)
    assert ip1 in held and ip2 in held and ip1 != ip2
    # docker network inspect shows them, with the plugins' full names.
    info = json.loads(docker("network", "inspect", net).stdout)[0]
    assert (info["Driver"], info["IPAM"]["Driver"]) == (plugins.net.name, plugins.ipam.name)
    shown = {c["Name"]: c["IPv4Address"] for c in info["Containers"].values()}
    prefix = info["IPAM"]["Config"][0]["Subnet"].split("/")[1]
    assert shown == {c1: f"{ip1}/{prefix}", c2: f"{ip2}/{prefix}"}
    # The gateway (poolipam's first address) is on the plugin's bridge on the
    # host, and reachable.
    nid = network_id(net)
    (gateway,) = plugins.net_state()["networks"][nid]["gateways"]
    assert held[gateway.split("/")[0]] == "gateway"
    assert pings(c1, gateway.split("/")[0])
    assert f"bn-{nid[:12]}" in host_links()


def test_an_explicit_range_gateway_and_address(plugins: NetPlugins) -> None:
    sub = subnet(plugins)
    base = sub.rsplit(".", 1)[0]
    net = network(
        plugins, "--subnet", sub, "--ip-range", f"{base}.128/25", "--gateway", f"{base}.1"
    )
    c1 = run(net)
    c2 = run(net, "--ip", f"{base}.9")
    assert ip_of(c1, net) == f"{base}.128"
    assert ip_of(c2, net) == f"{base}.9"
    assert pings(c2, f"{base}.128")


def test_removing_containers_and_the_network_releases_everything(plugins: NetPlugins) -> None:
    net = network(plugins)  # no --subnet: poolipam picks the pool
    nid = network_id(net)
    c1 = run(net)
    ip1 = ip_of(c1, net)
    assert ip1 in ipam_addresses(plugins)
    endpoints = plugins.net_state()["networks"][nid]["endpoints"]
    (veth,) = [e["veth"] for e in endpoints.values()]
    assert veth in host_links()
    docker("rm", "-f", c1)
    assert ip1 not in ipam_addresses(plugins)
    assert veth not in host_links()
    pools = {p["pool"] for p in plugins.ipam_state()["pools"].values()}
    info = json.loads(docker("network", "inspect", net).stdout)[0]
    pool = info["IPAM"]["Config"][0]["Subnet"]
    assert pool in pools and pool.startswith(plugins.pools.split(".0.0/")[0])
    docker("network", "rm", net)
    assert pool not in {p["pool"] for p in plugins.ipam_state()["pools"].values()}
    assert nid not in plugins.net_state()["networks"]
    left = {name for name in host_links() if name.startswith(("bn-", "vn-", "vc-"))}
    assert f"bn-{nid[:12]}" not in left and veth not in left


def test_a_bad_driver_option_fails_with_the_plugins_message(plugins: NetPlugins) -> None:
    pools = plugins.ipam_state()["pools"]
    proc = create_network(plugins, "-o", "mtu=9", check=False)
    assert proc.returncode != 0
    assert "invalid value for option mtu: '9' (expected a number from 68 to 65535)" in proc.stderr
    proc = create_network(plugins, "-o", "vlan=3", check=False)
    assert "unknown option 'vlan' (supported: bridge_name, mtu)" in proc.stderr
    # The IPAM pools taken for the refused networks were given back.
    assert plugins.ipam_state()["pools"] == pools


def test_a_failed_join_leaks_no_address(plugins: NetPlugins) -> None:
    net = network(plugins, "--subnet", subnet(plugins))
    nid = network_id(net)
    held = ipam_addresses(plugins)
    # The bridge goes from under the plugin (deleted by hand): Join fails.
    subprocess.run(["ip", "link", "del", f"bn-{nid[:12]}"], check=True)
    name = f"dpk-c-{uuid.uuid4().hex[:8]}"
    _made_containers.append(name)
    proc = docker(
        "run", "-d", "--name", name, "--network", net, TEST_IMAGE, "sleep", "60", check=False
    )
    assert proc.returncode != 0
    assert re.search(
        r"cannot create veth pair vn-[0-9a-f]{12}/vc-[0-9a-f]{12}: Error: argument "
        rf'"bn-{nid[:12]}" is wrong: Device does not exist',
        proc.stderr,
    ), proc.stderr
    # The daemon undid the endpoint: its address went back to poolipam.
    assert ipam_addresses(plugins) == held


def test_the_short_name_is_not_enough(plugins: NetPlugins) -> None:
    # The daemon resolves network and IPAM drivers by exact name, tag included.
    net, ipam = (p.name.removesuffix(":latest") for p in (plugins.net, plugins.ipam))
    for args, message in (
        (["-d", net], f"could not resolve driver {net} in registry"),
        (["--ipam-driver", ipam], f'invalid ipam driver: "{ipam}"'),
    ):
        name = f"dpk-net-{uuid.uuid4().hex[:8]}"
        _made_networks.append(name)
        proc = docker("network", "create", *args, name, check=False)
        assert (proc.returncode, proc.stderr) == (1, f"Error response from daemon: {message}\n")


def test_an_exhausted_pool_fails_with_the_plugins_message(plugins: NetPlugins) -> None:
    base = subnet(plugins).rsplit(".", 1)[0]
    net = network(plugins, "--subnet", f"{base}.0/29")  # 6 addresses, one the gateway
    for _ in range(5):
        run(net)
    name = f"dpk-c-{uuid.uuid4().hex[:8]}"
    _made_containers.append(name)
    proc = docker(
        "run", "-d", "--name", name, "--network", net, TEST_IMAGE, "sleep", "60", check=False
    )
    assert proc.returncode != 0
    assert f"pool {base}.0/29 is exhausted: all 6 addresses are in use" in proc.stderr


def test_hostile_bodies_on_every_endpoint_answer_json(plugins: NetPlugins) -> None:
    from plugin.ipam import IpamDriver
    from plugin.network import NetworkDriver
    from tests.unit.test_fuzz import HOSTILE_BODIES, raw_exchange

    bodies = [b for b in HOSTILE_BODIES if len(b) < 200_000]
    for plugin, kind, sock in (
        (plugins.net, NetworkDriver, "bridgenet.sock"),
        (plugins.ipam, IpamDriver, "poolipam.sock"),
    ):
        path = f"/run/docker/plugins/{plugin.id}/{sock}"
        for endpoint in kind.endpoints:
            call = f"/{kind.prefix}.{endpoint.name}"
            for body in bodies:
                head = f"POST {call} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                raw = head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body
                answer = raw_exchange(path, raw, wait=10)
                status = int(answer.split(b" ", 2)[1])
                data = json.loads(answer.split(b"\r\n\r\n", 1)[1])
                assert isinstance(data, dict), (call, body[:80])
                if status != 200:
                    assert status in (400, 404, 500) and data["Err"].strip(), (call, body[:80])
                    assert "(see its log)" not in data["Err"], (call, body[:80], data)


def _kill(plugin: Plugin) -> None:
    pid = plugin.pid()
    assert pid is not None, f"no process of {plugin.name}"
    os.kill(pid, signal.SIGKILL)
    wait_for(f"{plugin.name} restarted", lambda: (p := plugin.pid()) is not None and p != pid, 60)


def test_plugins_killed_and_restarted_keep_the_network_working(plugins: NetPlugins) -> None:
    net = network(plugins, "--subnet", subnet(plugins))
    c1, c2 = run(net), run(net)
    ip1, ip2 = ip_of(c1, net), ip_of(c2, net)
    _kill(plugins.net)
    _kill(plugins.ipam)
    # The running containers keep their connectivity.
    assert pings(c1, ip2)
    # The plugins answer again and know the network: a new container joins.
    c3 = wait_for("a container joining after the restart", lambda: _try_run(net), 60)
    ip3 = ip_of(c3, net)
    assert ip3 not in (ip1, ip2)
    assert pings(c3, ip1) and pings(c1, ip3)
    ipam_addresses(plugins)  # asserts that no address is held twice


def _try_run(net: str) -> str | None:
    name = f"dpk-c-{uuid.uuid4().hex[:8]}"
    _made_containers.append(name)
    proc = docker(
        "run", "-d", "--name", name, "--network", net, TEST_IMAGE, "sleep", "600", check=False
    )
    if proc.returncode != 0:
        docker("rm", "-f", name, check=False)
        return None
    return name


@pytest.mark.xdist_group("restart-netipam")
def test_a_daemon_restart_keeps_the_network(own_daemon: PrivateDaemon) -> None:
    """Both plugins on a daemon of the test's own, restarted under a network
    with two containers."""
    bundles = net_bundles()  # built where the builder's images are: on the shared daemon
    with (
        own_daemon.as_docker_host("restarting under a network"),
        net_plugins(bundles) as plugins,
    ):
        net = network(plugins, "--subnet", subnet(plugins))
        c1, c2 = run(net), run(net)
        own_daemon.restart()
        wait_for(
            "both plugins enabled again",
            lambda: all(
                json.loads(docker("plugin", "inspect", p.name).stdout)[0]["Enabled"]
                for p in (plugins.net, plugins.ipam)
            ),
            120,
        )
        # Containers stopped with the daemon; started again, they reach each other.
        docker("start", c1, c2)
        ip1, ip2 = ip_of(c1, net), ip_of(c2, net)
        assert wait_for("c1 reaching c2 after the restart", lambda: pings(c1, ip2), 30)
        c3 = run(net)
        ip3 = ip_of(c3, net)
        assert ip3 not in {ip1, ip2}
        assert pings(c3, ip1)
        held = ipam_addresses(plugins)  # no address held twice
        assert {ip1, ip2, ip3} <= set(held)
