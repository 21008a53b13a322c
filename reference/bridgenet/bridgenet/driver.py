"""bridgenet: a Linux bridge per network, a veth pair per container.

Install, then name it with its full tagged name (the daemon resolves network
and IPAM drivers by exact name, tag included)::

    docker plugin install --alias bridgenet IMAGE
    docker network create -d bridgenet:latest --subnet 10.9.0.0/24 [-o mtu=1400] NAME
    docker network create -d bridgenet:latest --ipam-driver poolipam:latest NAME

What it does on the host (it runs in the host's network namespace with
``CAP_NET_ADMIN``):

* CreateNetwork: a bridge ``bn-<network id>`` holding the gateway address(es)
  of the network's pools, and an iptables rule that lets frames cross it
  (see ``bridgenet.host`` for why Docker's FORWARD policy needs one).
* Join: a veth pair; one end ``vn-...`` on the bridge, the other ``vc-...``
  handed to the daemon, which moves it into the container as ``eth<N>``
  with the endpoint's addresses and MAC; the gateway is the bridge's.
* Leave, DeleteEndpoint, DeleteNetwork remove what the step before made;
  each accepts what it does not know (the daemon also sends them to roll
  back, and after restarts).

Driver options (``-o``): ``mtu`` (68-65535) of the bridge and the veths,
``bridge_name`` (a name of your own for the bridge, at most 15 characters).
Anything else fails with the list of what is supported.

Setting (``docker plugin set``, typed, checked before the plugin starts):
``IPTABLES``: ``auto`` (the backend that holds Docker's rules),
``iptables-nft``, ``iptables-legacy``, or ``off`` (no rule at all).

State (``state.json`` in the data directory, replaced whole on each change
and written before the daemon is answered): the networks and endpoints, so
a restarted plugin finds its bridges again and containers keep their
connectivity. At start it recreates a missing bridge (and its rule), and
removes interfaces it made that the state does not know (a step that
crashed half-way).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from plugin import Mount, PluginError, settings
from plugin.network import (
    CreateEndpointRequest,
    CreateEndpointResponse,
    CreateNetworkRequest,
    DeleteEndpointRequest,
    DeleteNetworkRequest,
    EndpointOperInfoRequest,
    EndpointOperInfoResponse,
    InterfaceName,
    JoinRequest,
    JoinResponse,
    LeaveRequest,
    NetworkDriver,
)
from plugin.state import StateFile

from .host import Host, IpHost, Link, br_netfilter_on

__all__ = ["DATA", "BridgeNetworks", "BridgeSettings"]

log = logging.getLogger("bridgenet")

DATA = Mount(
    "data",
    destination="/data",
    source="/var/lib/docker-bridgenet",
    description="host directory holding state.json (docker plugin set PLUGIN data.source=/path)",
)


class BridgeSettings(settings.Settings):
    """How bridgenet treats the host's firewall (``docker plugin set``)."""

    iptables = settings.choice(
        ["auto", "iptables-nft", "iptables-legacy", "off"],
        "auto",
        "the iptables whose FORWARD chain gets each bridge's ACCEPT rule: auto finds the "
        "backend that holds Docker's rules; off adds none (bridged traffic then depends on "
        "the host's own rules)",
    )


STATE_VERSION = 1
OPTIONS = ("bridge_name", "mtu")
#: Linux interface names: at most 15 bytes, no '/', ':' or whitespace.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_ID = re.compile(r"[0-9a-f]{64}")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
ALIAS = "bridgenet"


class BridgeNetworks(NetworkDriver):
    """Bridge networks on this host (see the module's docstring)."""

    network = "host"
    linux_capabilities = ("CAP_NET_ADMIN",)
    mounts = (DATA,)
    settings = BridgeSettings
    scope = "local"

    def __init__(self, data_dir: str | None = None, host: Host | None = None) -> None:
        if host is None:
            host = ip_host(BridgeSettings.from_env())
        self.host: Host = host
        self.state = StateFile(os.path.join(data_dir or DATA.destination, "state.json"), 1)
        self._lock = threading.Lock()
        data = self.state.load() or {}
        self.instance: str = data.get("instance") or uuid.uuid4().hex[:8]
        networks = data.get("networks", {})
        if not isinstance(networks, dict):
            raise self.state.corrupt('"networks" must be an object')
        self._networks: dict[str, dict[str, Any]] = networks
        self._save(self._networks)  # the instance ID, from the first start on
        self._recover()

    # --- networks -------------------------------------------------------------------------

    def create_network(self, req: CreateNetworkRequest) -> None:
        _check_id("network", req.network_id)
        options = _parse_options(req.driver_options)
        gateways = [
            _cidr("gateway", d.gateway) for d in (*req.ipv4_data, *req.ipv6_data) if d.gateway
        ]
        pools = [d.pool for d in (*req.ipv4_data, *req.ipv6_data) if d.pool]
        bridge = options.get("bridge_name") or f"bn-{req.network_id[:12]}"
        mtu = int(options["mtu"]) if "mtu" in options else None
        with self._lock:
            known = self._networks.get(req.network_id)
            if known is not None:
                if known["options"] == options:
                    return  # a retry
                raise PluginError(f"network {req.network_id[:12]} exists with other options")
            for other_id, other in self._networks.items():
                if other["bridge"] == bridge:
                    raise PluginError(f"bridge {bridge} is already used by network {other_id[:12]}")
            if any(link.name == bridge for link in self.host.links()):
                raise PluginError(
                    f"an interface named {bridge} exists on the host already: choose another "
                    "-o bridge_name"
                )
            self.host.add_bridge(bridge, self._alias(req.network_id), mtu, gateways)
            try:
                self.host.allow_forwarding(bridge)
                entry = {
                    "bridge": bridge,
                    "options": options,
                    "gateways": gateways,
                    "pools": pools,
                    "endpoints": {},
                }
                self._save({**self._networks, req.network_id: entry})
            except BaseException:
                self._undo(lambda: self.host.forbid_forwarding(bridge))
                self._undo(lambda: self.host.delete_link(bridge))
                raise
        log.info("network %s: bridge %s, gateways %s", req.network_id[:12], bridge, gateways)

    def delete_network(self, req: DeleteNetworkRequest) -> None:
        with self._lock:
            net = self._networks.get(req.network_id)
            if net is None:
                log.info("delete of unknown network %s: nothing to do", req.network_id[:12])
                return
            for endpoint in net["endpoints"].values():
                if endpoint.get("veth"):
                    self.host.delete_link(endpoint["veth"])
            self.host.forbid_forwarding(net["bridge"])
            self.host.delete_link(net["bridge"])
            self._save({k: v for k, v in self._networks.items() if k != req.network_id})
        log.info("network %s: bridge %s removed", req.network_id[:12], net["bridge"])

    # --- endpoints ------------------------------------------------------------------------------

    def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse:
        _check_id("endpoint", req.endpoint_id)
        iface = req.interface
        if iface.mac_address and not _MAC.fullmatch(iface.mac_address):
            raise PluginError(f"invalid MAC address {iface.mac_address[:40]!r}")
        mac = (iface.mac_address or _mac_for(iface.address or "", req.endpoint_id)).lower()
        with self._lock:
            net = self._network(req.network_id)
            endpoint = {
                "address": iface.address or "",
                "address_ipv6": iface.address_ipv6 or "",
                "mac": mac,
                "veth": "",
            }
            endpoints = {**net["endpoints"], req.endpoint_id: endpoint}
            self._save({**self._networks, req.network_id: {**net, "endpoints": endpoints}})
        return req.respond(mac_address=mac)

    def delete_endpoint(self, req: DeleteEndpointRequest) -> None:
        with self._lock:
            net = self._networks.get(req.network_id)
            endpoint = net["endpoints"].get(req.endpoint_id) if net else None
            if net is None or endpoint is None:
                return  # a rollback, or a cleanup after a restart
            if endpoint.get("veth"):
                self.host.delete_link(endpoint["veth"])
            endpoints = {k: v for k, v in net["endpoints"].items() if k != req.endpoint_id}
            self._save({**self._networks, req.network_id: {**net, "endpoints": endpoints}})

    def endpoint_oper_info(self, req: EndpointOperInfoRequest) -> EndpointOperInfoResponse:
        net = self._networks.get(req.network_id)
        endpoint = net["endpoints"].get(req.endpoint_id) if net else None
        if net is None or endpoint is None:
            return EndpointOperInfoResponse()
        return EndpointOperInfoResponse(
            {"bridge": net["bridge"], "veth": endpoint["veth"], "mac": endpoint["mac"]}
        )

    def join(self, req: JoinRequest) -> JoinResponse:
        veth, peer = f"vn-{req.endpoint_id[:12]}", f"vc-{req.endpoint_id[:12]}"
        with self._lock:
            net = self._network(req.network_id)
            endpoint = net["endpoints"].get(req.endpoint_id)
            if endpoint is None:
                raise PluginError(f"no such endpoint: {req.endpoint_id[:12]}")
            mtu = int(net["options"]["mtu"]) if "mtu" in net["options"] else None
            self.host.delete_link(veth)  # left by a Join whose answer was lost
            self.host.add_veth(
                veth, peer, net["bridge"], self._alias(req.endpoint_id), mtu, endpoint["mac"]
            )
            try:
                endpoints = {**net["endpoints"], req.endpoint_id: {**endpoint, "veth": veth}}
                self._save({**self._networks, req.network_id: {**net, "endpoints": endpoints}})
            except BaseException:
                self._undo(lambda: self.host.delete_link(veth))
                raise
        v4 = [g for g in net["gateways"] if ":" not in g]
        v6 = [g for g in net["gateways"] if ":" in g]
        return JoinResponse(
            InterfaceName(peer, "eth"),
            gateway=v4[0].split("/")[0] if v4 else None,
            gateway_ipv6=v6[0].split("/")[0] if v6 else None,
        )

    def leave(self, req: LeaveRequest) -> None:
        with self._lock:
            net = self._networks.get(req.network_id)
            endpoint = net["endpoints"].get(req.endpoint_id) if net else None
            if net is None or endpoint is None or not endpoint.get("veth"):
                return
            self.host.delete_link(endpoint["veth"])
            endpoints = {**net["endpoints"], req.endpoint_id: {**endpoint, "veth": ""}}
            self._save({**self._networks, req.network_id: {**net, "endpoints": endpoints}})

    # --- state and recovery ----------------------------------------------------------------------

    def _network(self, network_id: str) -> dict[str, Any]:
        net = self._networks.get(network_id)
        if net is None:
            raise PluginError(
                f"no such network: {network_id[:12]} (not created by this plugin, or its state "
                "was lost)"
            )
        return net

    def _alias(self, ident: str) -> str:
        return f"{ALIAS} {self.instance} {ident}"

    def _save(self, networks: dict[str, dict[str, Any]]) -> None:
        try:
            self.state.save({"instance": self.instance, "networks": networks})
        except OSError as exc:
            log.error("cannot write %s: %s", self.state.path, exc)
            raise PluginError(
                f"cannot save the network state ({exc.strerror or exc}); nothing was changed"
            ) from None
        self._networks = networks

    def _recover(self) -> None:
        """Make the host match the state: bridges (and their rules) back,
        interfaces of ours that the state does not know removed."""
        links = {link.name: link for link in self.host.links()}
        wanted: set[str] = set()
        changed = False
        networks = dict(self._networks)
        for network_id, net in networks.items():
            bridge = net["bridge"]
            wanted.add(bridge)
            if bridge not in links:
                mtu = int(net["options"]["mtu"]) if "mtu" in net["options"] else None
                self.host.add_bridge(bridge, self._alias(network_id), mtu, net["gateways"])
                log.warning(
                    "network %s: bridge %s was missing; made again", network_id[:12], bridge
                )
            self.host.allow_forwarding(bridge)
            endpoints = dict(net["endpoints"])
            for endpoint_id, endpoint in endpoints.items():
                veth = endpoint.get("veth")
                if not veth:
                    continue
                if veth in links:
                    wanted.add(veth)
                else:
                    # Its container is gone (the host rebooted): joined no more.
                    endpoints[endpoint_id] = {**endpoint, "veth": ""}
                    changed = True
            networks[network_id] = {**net, "endpoints": endpoints}
        for link in links.values():
            if _ours(link, self.instance) and link.name not in wanted:
                log.warning("removing %s: made by this plugin, unknown to its state", link.name)
                self.host.delete_link(link.name)
        if changed:
            self._save(networks)
        self._networks = networks
        log.info(
            "%d networks; bridged traffic %s iptables (br_netfilter)",
            len(networks),
            "goes through" if br_netfilter_on() else "does not go through",
        )

    @staticmethod
    def _undo(step: Any) -> None:
        try:
            step()
        except PluginError as exc:
            log.error("undo failed: %s", exc)


def ip_host(config: BridgeSettings) -> IpHost:
    """The real host, with the firewall as the settings say."""
    if config.iptables == "off":
        return IpHost(firewall=False)
    return IpHost(iptables=None if config.iptables == "auto" else config.iptables)


def _ours(link: Link, instance: str) -> bool:
    return link.alias.split(" ")[:2] == [ALIAS, instance]


def _parse_options(options: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(options):
        value = options[key]
        if key == "mtu":
            if not value.isdigit() or not 68 <= int(value) <= 65535:
                raise PluginError(
                    f"invalid value for option mtu: {value!r} (expected a number from 68 to 65535)"
                )
            out[key] = str(int(value))
        elif key == "bridge_name":
            if not _IFNAME.fullmatch(value):
                raise PluginError(
                    f"invalid value for option bridge_name: {value!r} (at most 15 letters, digits, "
                    "'_', '.', '-')"
                )
            out[key] = value
        else:
            raise PluginError(f"unknown option {key!r} (supported: {', '.join(OPTIONS)})")
    return out


def _mac_for(address: str, endpoint_id: str) -> str:
    """02:42 and the IPv4 address, as Docker's bridge does; from the endpoint
    ID when there is no IPv4 address. Locally administered, unicast."""
    try:
        octets = list(ipaddress.IPv4Interface(address).ip.packed)
    except ValueError:
        octets = list(bytes.fromhex(endpoint_id[:8]))
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)


def _cidr(what: str, value: str) -> str:
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise PluginError(
            f"invalid {what} {value[:60]!r}: expected an address in CIDR form"
        ) from None


def _check_id(kind: str, ident: str) -> None:
    """Docker's IDs are 64 hex digits; they become interface names and
    command arguments, so nothing else is let through."""
    if not _ID.fullmatch(ident):
        raise PluginError(f"invalid {kind} ID {ident[:80]!r}: expected 64 hexadecimal digits")
