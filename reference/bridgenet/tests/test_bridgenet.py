"""bridgenet through the SDK, as the daemon calls it, on a host in memory;
and its host operations for real, in a network namespace of the test's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgenet import BridgeNetworks
from bridgenet.driver import BridgeSettings, ip_host
from bridgenet.host import Link, MemoryHost

from plugin.__main__ import check_settings
from plugin.settings import SettingsError
from plugin.state import StateError
from plugin.testing import PluginClient

NET = "1" * 64
EP = "a" * 64
EP2 = "b" * 64
BRIDGE = "bn-111111111111"


def create_body(net: str = NET, gateway: str = "10.9.0.1/24", **opts: str) -> dict[str, Any]:
    return {
        "NetworkID": net,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": opts},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24", "Gateway": gateway}],
        "IPv6Data": None,
    }


def endpoint_body(ep: str = EP, address: str = "10.9.0.5/24", mac: str = "") -> dict[str, Any]:
    iface = {"Address": address, "AddressIPv6": "", "MacAddress": mac}
    return {"NetworkID": NET, "EndpointID": ep, "Interface": iface, "Options": {}}


def ids(ep: str = EP) -> dict[str, str]:
    return {"NetworkID": NET, "EndpointID": ep}


@pytest.fixture
def host() -> MemoryHost:
    return MemoryHost()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data: Path, host: MemoryHost) -> Iterator[PluginClient]:
    with PluginClient(BridgeNetworks(str(data), host)) as client:
        yield client


def state(data: Path) -> dict[str, Any]:
    return json.loads((data / "state.json").read_text())  # type: ignore[no-any-return]


def fails(client: PluginClient, call: str, body: dict[str, Any]) -> str:
    reply = client.post(f"/NetworkDriver.{call}", body)
    assert reply.status == 500, reply.body
    return reply.json["Err"]  # type: ignore[no-any-return]


def test_walk_through(client: PluginClient, host: MemoryHost, data: Path) -> None:
    assert client.call("NetworkDriver.GetCapabilities") == {"Scope": "local"}
    assert client.call("NetworkDriver.CreateNetwork", create_body()) == {}
    instance = state(data)["instance"]
    assert host.bridges == {
        BRIDGE: {"alias": f"bridgenet {instance} {NET}", "mtu": None, "addresses": ["10.9.0.1/24"]}
    }
    assert host.rules == [BRIDGE]
    # The MAC came empty: derived from the address, as Docker's bridge does.
    assert client.call("NetworkDriver.CreateEndpoint", endpoint_body()) == {
        "Interface": {"MacAddress": "02:42:0a:09:00:05"}
    }
    assert client.call(
        "NetworkDriver.Join", {**ids(), "SandboxKey": "/var/run/docker/netns/x"}
    ) == {
        "InterfaceName": {"SrcName": "vc-aaaaaaaaaaaa", "DstPrefix": "eth"},
        "Gateway": "10.9.0.1",
        "StaticRoutes": [],
        "DisableGatewayService": False,
    }
    assert host.veths["vn-aaaaaaaaaaaa"] == {
        "peer": "vc-aaaaaaaaaaaa",
        "bridge": BRIDGE,
        "alias": f"bridgenet {instance} {EP}",
        "mtu": None,
        "mac": "02:42:0a:09:00:05",
    }
    assert client.call("NetworkDriver.EndpointOperInfo", ids()) == {
        "Value": {"bridge": BRIDGE, "veth": "vn-aaaaaaaaaaaa", "mac": "02:42:0a:09:00:05"}
    }
    assert client.call("NetworkDriver.Leave", ids()) == {}
    assert host.veths == {}
    assert client.call("NetworkDriver.DeleteEndpoint", ids()) == {}
    assert state(data)["networks"][NET]["endpoints"] == {}
    assert client.call("NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == {}
    assert (host.bridges, host.rules, state(data)["networks"]) == ({}, [], {})


def test_a_mac_the_daemon_gave_is_kept(client: PluginClient, host: MemoryHost) -> None:
    client.call("NetworkDriver.CreateNetwork", create_body())
    body = endpoint_body(mac="02:AA:BB:CC:DD:EE")
    assert client.call("NetworkDriver.CreateEndpoint", body) == {}
    client.call("NetworkDriver.Join", ids())
    assert host.veths["vn-aaaaaaaaaaaa"]["mac"] == "02:aa:bb:cc:dd:ee"


def test_driver_options(client: PluginClient, host: MemoryHost) -> None:
    body = create_body(mtu="1400", bridge_name="br-mine")
    assert client.call("NetworkDriver.CreateNetwork", body) == {}
    assert host.bridges["br-mine"]["mtu"] == 1400
    client.call("NetworkDriver.CreateEndpoint", endpoint_body())
    client.call("NetworkDriver.Join", ids())
    assert host.veths["vn-aaaaaaaaaaaa"]["mtu"] == 1400


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"mtu": "9"}, "invalid value for option mtu: '9' (expected a number from 68 to 65535)"),
        (
            {"mtu": "1e3"},
            "invalid value for option mtu: '1e3' (expected a number from 68 to 65535)",
        ),
        (
            {"bridge_name": "a-name-far-too-long"},
            "invalid value for option bridge_name: 'a-name-far-too-long' (at most 15 letters, "
            "digits, '_', '.', '-')",
        ),
        (
            {"bridge_name": "x y"},
            "invalid value for option bridge_name: 'x y' (at most 15 letters, digits, '_', '.', "
            "'-')",
        ),
        ({"vlan": "3"}, "unknown option 'vlan' (supported: bridge_name, mtu)"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(
    client: PluginClient, host: MemoryHost, opts: dict[str, str], message: str
) -> None:
    assert fails(client, "CreateNetwork", create_body(**opts)) == message
    assert (host.bridges, host.rules) == ({}, [])


def test_hostile_ids_and_addresses_never_reach_the_host(
    client: PluginClient, host: MemoryHost
) -> None:
    assert fails(client, "CreateNetwork", create_body(net="x\nlink del eth0")) == (
        "invalid network ID 'x\\nlink del eth0': expected 64 hexadecimal digits"
    )
    assert fails(client, "CreateNetwork", create_body(gateway="10.9.0.1/24 dev eth0")) == (
        "invalid gateway '10.9.0.1/24 dev eth0': expected an address in CIDR form"
    )
    client.call("NetworkDriver.CreateNetwork", create_body())
    assert fails(client, "CreateEndpoint", endpoint_body(ep="../x")) == (
        "invalid endpoint ID '../x': expected 64 hexadecimal digits"
    )
    assert fails(client, "CreateEndpoint", endpoint_body(mac="02:42 dev eth0")) == (
        "invalid MAC address '02:42 dev eth0'"
    )
    assert list(host.bridges) == [BRIDGE] and host.veths == {}


def test_names_already_taken(client: PluginClient, host: MemoryHost) -> None:
    host.others.append(Link("br-taken", "bridge", ""))
    assert fails(client, "CreateNetwork", create_body(bridge_name="br-taken")) == (
        "an interface named br-taken exists on the host already: choose another -o bridge_name"
    )
    client.call("NetworkDriver.CreateNetwork", create_body(bridge_name="br-one"))
    assert fails(client, "CreateNetwork", create_body(net="2" * 64, bridge_name="br-one")) == (
        "bridge br-one is already used by network 111111111111"
    )
    # The same create again (a retry) is fine; with other options it is not.
    assert client.call("NetworkDriver.CreateNetwork", create_body(bridge_name="br-one")) == {}
    assert fails(client, "CreateNetwork", create_body(mtu="1400")) == (
        "network 111111111111 exists with other options"
    )


def test_undo_and_unknown_ids(client: PluginClient, host: MemoryHost, data: Path) -> None:
    # Rollbacks and cleanups after restarts name what the plugin may not know.
    assert client.call("NetworkDriver.Leave", ids()) == {}
    assert client.call("NetworkDriver.DeleteEndpoint", ids()) == {}
    assert client.call("NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == {}
    assert fails(client, "CreateEndpoint", endpoint_body()) == (
        "no such network: 111111111111 (not created by this plugin, or its state was lost)"
    )
    client.call("NetworkDriver.CreateNetwork", create_body())
    assert fails(client, "Join", ids()) == "no such endpoint: aaaaaaaaaaaa"
    assert client.call("NetworkDriver.EndpointOperInfo", ids(EP2)) == {"Value": {}}


def test_a_failing_step_leaves_nothing_behind(
    data: Path, host: MemoryHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = BridgeNetworks(str(data), host)
    client = PluginClient(driver)
    host.fail = "allow forwarding on"
    assert fails(client, "CreateNetwork", create_body()) == (
        f"cannot allow forwarding on {BRIDGE}: Operation not permitted"
    )
    assert (host.bridges, host.rules, state(data)["networks"]) == ({}, [], {})
    client.call("NetworkDriver.CreateNetwork", create_body())
    client.call("NetworkDriver.CreateEndpoint", endpoint_body())
    host.fail = "create veth pair"
    assert fails(client, "Join", ids()) == (
        "cannot create veth pair vn-aaaaaaaaaaaa: Operation not permitted"
    )
    assert host.veths == {}
    assert state(data)["networks"][NET]["endpoints"][EP]["veth"] == ""

    def full(data: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    # A full disk: what the call made on the host is removed again.
    monkeypatch.setattr(driver.state, "save", full)
    assert fails(client, "Join", ids()) == (
        "cannot save the network state (No space left on device); nothing was changed"
    )
    assert host.veths == {}
    assert fails(client, "CreateNetwork", create_body(net="2" * 64)) == (
        "cannot save the network state (No space left on device); nothing was changed"
    )
    assert (list(host.bridges), host.rules) == ([BRIDGE], [BRIDGE])
    client.close()


def test_a_restart_finds_its_bridges_and_keeps_containers_connected(
    data: Path, host: MemoryHost
) -> None:
    with PluginClient(BridgeNetworks(str(data), host)) as client:
        client.call("NetworkDriver.CreateNetwork", create_body())
        client.call("NetworkDriver.CreateEndpoint", endpoint_body())
        client.call("NetworkDriver.Join", ids())
    before = (dict(host.bridges), dict(host.veths), list(host.rules))
    with PluginClient(BridgeNetworks(str(data), host)) as client:  # the plugin restarted
        assert (host.bridges, host.veths, host.rules) == before  # nothing touched
        client.call("NetworkDriver.CreateEndpoint", endpoint_body(EP2, "10.9.0.6/24"))
        client.call("NetworkDriver.Join", ids(EP2))
        client.call("NetworkDriver.Leave", ids())
        assert sorted(host.veths) == ["vn-bbbbbbbbbbbb"]


def test_a_start_repairs_the_host(data: Path, host: MemoryHost) -> None:
    with PluginClient(BridgeNetworks(str(data), host)) as client:
        client.call("NetworkDriver.CreateNetwork", create_body())
        client.call("NetworkDriver.CreateEndpoint", endpoint_body())
        client.call("NetworkDriver.Join", ids())
    instance = state(data)["instance"]
    # The host rebooted (no bridge, no veth, no rule); a crash left an
    # interface of ours behind; another bridgenet's interface is not ours.
    host.bridges.clear()
    host.veths.clear()
    host.rules.clear()
    host.others += [
        Link("vn-cccccccccccc", "veth", f"bridgenet {instance} {'c' * 64}"),
        Link("bn-other", "bridge", f"bridgenet 0123abcd {'2' * 64}"),
    ]
    removed: list[str] = []
    real_delete = host.delete_link

    def delete(name: str) -> None:
        removed.append(name)
        host.others = [link for link in host.others if link.name != name]
        real_delete(name)

    host.delete_link = delete  # type: ignore[method-assign]
    BridgeNetworks(str(data), host)
    assert removed == ["vn-cccccccccccc"]
    assert list(host.bridges) == [BRIDGE] and host.rules == [BRIDGE]
    assert state(data)["networks"][NET]["endpoints"][EP]["veth"] == ""
    assert [link.name for link in host.others] == ["bn-other"]


def test_a_damaged_state_file_stops_the_start(data: Path, host: MemoryHost) -> None:
    data.mkdir()
    (data / "state.json").write_text('{"version": 1, "networks": []}')
    with pytest.raises(StateError) as info:
        BridgeNetworks(str(data), host)
    assert str(info.value) == (
        f'{data}/state.json: "networks" must be an object; it was left untouched: repair or '
        "remove it"
    )


@pytest.mark.parametrize(
    ("value", "iptables", "firewall"),
    [
        ("auto", None, True),
        ("IPTABLES-LEGACY", "iptables-legacy", True),
        ("iptables-nft", "iptables-nft", True),
        ("off", None, False),
    ],
)
def test_the_iptables_setting(value: str, iptables: str | None, firewall: bool) -> None:
    host = ip_host(BridgeSettings.parse({"IPTABLES": value}))
    assert (host._iptables, host.firewall) == (iptables, firewall)


def test_a_bad_setting_stops_the_start() -> None:
    with pytest.raises(SettingsError) as info:
        check_settings([BridgeNetworks], {"IPTABLES": "nft"})
    assert str(info.value) == (
        'bad setting IPTABLES="nft": not one of auto, iptables-nft, iptables-legacy, off; '
        "change it with docker plugin set PLUGIN IPTABLES=VALUE"
    )
    assert [(e.name, e.value) for e in BridgeSettings.env()] == [("IPTABLES", "auto")]


# --- the real host, in a network namespace of this test's own ----------------------------

REAL = """
import json, subprocess, sys
from bridgenet.host import IpHost

def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout

host = IpHost(iptables="iptables")
host.add_bridge("bn-t", "bridgenet test n", 1400, ["10.77.0.1/24", "fd77::1/64"])
host.allow_forwarding("bn-t")
host.allow_forwarding("bn-t")  # once only
host.add_veth("vn-t", "vc-t", "bn-t", "bridgenet test e", 1400, "02:42:0a:4d:00:05")
links = {l.name: (l.kind, l.alias) for l in host.links()}
rules = run("iptables", "-S", "FORWARD")
addrs = json.loads(run("ip", "-j", "addr", "show", "bn-t"))
peer = json.loads(run("ip", "-j", "link", "show", "vc-t"))
host.delete_link("vn-t")
host.delete_link("vn-t")  # gone already: fine
host.forbid_forwarding("bn-t")
IpHost(firewall=False).allow_forwarding("bn-t")  # IPTABLES=off: no rule
host.delete_link("bn-t")
after = [l.name for l in host.links()]
rules_after = run("iptables", "-S", "FORWARD")
try:
    host.add_veth("vn-u", "vc-u", "no-such-br", "x", None, None)
except Exception as exc:
    error = str(exc)
print(json.dumps({
    "links": links, "rules": rules, "addrs": [a["local"] for a in addrs[0]["addr_info"]],
    "mtu": addrs[0]["mtu"], "peer_mac": peer[0]["address"], "after": after,
    "rules_after": rules_after, "error": error, "left": [l.name for l in host.links()],
}))
"""


def test_the_host_operations_for_real_in_a_namespace_of_our_own() -> None:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        pytest.skip("needs root, ip and iptables (the end-to-end tests cover the plugin)")
    ns = f"dpk-bn-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        root = Path(__file__).resolve().parents[1]
        kit = root.parents[1]
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", REAL],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": f"{root}:{kit}"},
            timeout=60,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["links"]["bn-t"] == ["bridge", "bridgenet test n"]
    assert got["links"]["vn-t"] == ["veth", "bridgenet test e"]
    assert got["links"]["vc-t"][0] == "veth"
    assert got["rules"].count("-A FORWARD -i bn-t -o bn-t -j ACCEPT") == 1
    assert got["addrs"][:1] == ["10.77.0.1"] and "fd77::1" in got["addrs"]
    assert (got["mtu"], got["peer_mac"]) == (1400, "02:42:0a:4d:00:05")
    assert "bn-t" not in got["after"] and "vn-t" not in got["after"] and "vc-t" not in got["after"]
    assert "bn-t" not in got["rules_after"]
    assert got["error"].startswith("cannot create veth pair vn-u/vc-u: ")
    assert "vn-u" not in got["left"] and "vc-u" not in got["left"]
