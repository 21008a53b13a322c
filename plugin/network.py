"""Network drivers: ``docker.networkdriver/1.0`` (``/NetworkDriver.*``).

Read top to bottom: wire constants, request/response models named after the
wire verb, the driver base class, the endpoint table.

The daemon registers a managed network plugin under its full name *with the
tag*, and looks drivers up by exact name: users must write
``docker network create -d acme/mynet:latest`` (and
``--ipam-driver acme/myipam:latest``); the short form fails with "could not
resolve driver ... in registry".

What the daemon does with the answers, call by call:

* ``GetCapabilities`` right after the plugin is enabled. A scope other than
  ``local``/``global`` and the driver is silently never registered, so the
  class attributes are checked when the class is defined.
* ``CreateNetwork`` carries the user's ``-o key=value`` options under
  ``com.docker.network.generic`` (``CreateNetworkRequest.driver_options``)
  and the pools the IPAM driver handed out (``ipv4_data``: ``Pool``,
  ``Gateway`` and aux addresses, all in CIDR form). A v2 plugin has no Docker
  socket to ask later: persist what it says, or the network is forgotten at
  the next plugin restart ("No such network").
* ``CreateEndpoint`` sends the interface the daemon already knows (addresses
  from IPAM, a MAC if the user gave one). Return only fields that came empty:
  setting one the daemon has is an error and the endpoint is rolled back.
  ``CreateEndpointRequest.respond()`` builds that answer.
* ``Join`` gets the container's network namespace (``SandboxKey``). Answer
  with ``InterfaceName(src_name, dst_prefix)``: ``src_name`` is an interface
  the plugin made in the *host* namespace (one end of a veth pair); the
  daemon moves it into the container, renames it ``dst_prefix`` + an index
  (``eth0``) and gives it the endpoint's addresses and MAC. ``Gateway`` is a
  plain IP (no ``/24``). With neither a gateway nor a default route the
  daemon also connects the container to ``docker_gwbridge``, unless
  ``disable_gateway_service`` is set.
* ``Leave``, ``DeleteEndpoint``, ``DeleteNetwork`` undo; the daemon also
  sends them to roll back a failed step, so they must accept what they do
  not know (an endpoint never joined, a network half-made).
* ``ProgramExternalConnectivity`` / ``RevokeExternalConnectivity`` are
  optional: the SDK answers 404, which the daemon reads as "not
  implemented". ``DiscoverNew`` / ``DiscoverDelete`` (Swarm node events) and
  ``FreeNetwork`` default to doing nothing; ``AllocateNetwork`` (Swarm
  managers, global scope) to handing the options back unchanged;
  ``EndpointOperInfo`` to an empty ``Value``.

An error is ``raise PluginError("...")``: the SDK answers HTTP 500 with
``{"Err": ...}`` and the user reads ``NetworkDriver.<Call>: <message>``.
"""

from __future__ import annotations

import ipaddress
from abc import abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

from ._driver import Driver, Endpoint, optional
from ._wire import Model, wire

__all__ = [
    "ENABLE_IPV4",
    "ENABLE_IPV6",
    "GENERIC",
    "INTERNAL",
    "NODE_DISCOVERY",
    "ROUTE_CONNECTED",
    "ROUTE_NEXT_HOP",
    "AllocateNetworkRequest",
    "AllocateNetworkResponse",
    "CapabilitiesResponse",
    "CreateEndpointRequest",
    "CreateEndpointResponse",
    "CreateNetworkRequest",
    "DeleteEndpointRequest",
    "DeleteNetworkRequest",
    "DiscoveryNotification",
    "EndpointInterface",
    "EndpointOperInfoRequest",
    "EndpointOperInfoResponse",
    "FreeNetworkRequest",
    "GwAllocCheckRequest",
    "GwAllocCheckResponse",
    "IPAMData",
    "InterfaceName",
    "JoinRequest",
    "JoinResponse",
    "LeaveRequest",
    "NetworkDriver",
    "ProgramExternalConnectivityRequest",
    "RevokeExternalConnectivityRequest",
    "StaticRoute",
]

IMPLEMENTS = "NetworkDriver"
CAPABILITY = "docker.networkdriver/1.0"

#: Key of ``CreateNetworkRequest.options`` holding the user's ``-o`` options.
GENERIC = "com.docker.network.generic"
#: Keys of ``CreateNetworkRequest.options``: booleans.
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
ENABLE_IPV4 = "com.docker.network.enable_ipv4"  # Docker 28 and later
INTERNAL = "com.docker.network.internal"  # only sent for --internal
#: ``DiscoveryNotification.discovery_type`` of a Swarm node event (the only
#: one the daemon forwards).
NODE_DISCOVERY = 1
#: ``StaticRoute.route_type``: through ``next_hop``, or on the link itself.
ROUTE_NEXT_HOP = 0
ROUTE_CONNECTED = 1

_SCOPES = ("local", "global")


# --- shared objects ---------------------------------------------------------------------


@dataclass(slots=True)
class IPAMData(Model):
    """One pool of a network as the IPAM driver handed it out.

    ``pool`` is a network (``10.1.0.0/24``); ``gateway`` and every value of
    ``aux_addresses`` are addresses *with the pool's prefix length*
    (``10.1.0.1/24``), or absent when unset.
    """

    address_space: str = wire("AddressSpace", "")
    pool: str = wire("Pool", "")
    gateway: str | None = wire("Gateway", None)
    aux_addresses: dict[str, str] = wire("AuxAddresses", factory=dict)


@dataclass(slots=True)
class EndpointInterface(Model):
    """An endpoint's interface: addresses in CIDR form (``10.1.0.5/24``), a
    MAC as ``aa:bb:cc:dd:ee:ff``. In a request a field the daemon has no
    value for is ``""``; in a response ``None`` leaves it out."""

    address: str | None = wire("Address", None)
    address_ipv6: str | None = wire("AddressIPv6", None)
    mac_address: str | None = wire("MacAddress", None)


@dataclass(slots=True)
class InterfaceName(Model):
    """The interface ``Join`` hands over: ``src_name`` exists in the host's
    network namespace; the daemon moves it into the container and names it
    ``dst_prefix`` followed by an index (``eth`` -> ``eth0``). (The daemon's
    own struct also has ``DstName``, which it ignores.)"""

    src_name: str = wire("SrcName")
    dst_prefix: str = wire("DstPrefix")

    def __post_init__(self) -> None:
        if not self.src_name or not self.dst_prefix:
            raise ValueError("InterfaceName needs both src_name and dst_prefix")


@dataclass(slots=True)
class StaticRoute(Model):
    """A route the daemon adds in the container: ``destination`` in CIDR
    form; ``ROUTE_NEXT_HOP`` needs ``next_hop`` (a plain IP),
    ``ROUTE_CONNECTED`` must not have one."""

    destination: str = wire("Destination")
    route_type: int = wire("RouteType", ROUTE_NEXT_HOP)
    next_hop: str | None = wire("NextHop", None)

    def __post_init__(self) -> None:
        _check_cidr("StaticRoute.destination", self.destination, network=True)
        if self.route_type == ROUTE_NEXT_HOP:
            if not self.next_hop:
                raise ValueError("StaticRoute: a ROUTE_NEXT_HOP route needs next_hop")
            _check_ip("StaticRoute.next_hop", self.next_hop)
        elif self.route_type == ROUTE_CONNECTED:
            if self.next_hop:
                raise ValueError("StaticRoute: a ROUTE_CONNECTED route has no next_hop")
        else:
            raise ValueError(
                f"StaticRoute.route_type must be ROUTE_NEXT_HOP (0) or ROUTE_CONNECTED (1), "
                f"not {self.route_type!r}"
            )


# --- requests ---------------------------------------------------------------------------


@dataclass(slots=True)
class GwAllocCheckRequest(Model):
    """Docker 28+, before ``CreateNetwork``, if the capabilities say
    ``GwAllocChecker``; ``options`` as in ``CreateNetworkRequest``."""

    options: dict[str, Any] = wire("Options", factory=dict)


@dataclass(slots=True)
class CreateNetworkRequest(Model):
    """``docker network create -d PLUGIN:TAG [-o key=value ...] NAME``."""

    network_id: str = wire("NetworkID")
    #: ``com.docker.network.generic`` (the ``-o`` options), ``...enable_ipv6``,
    #: ``...internal``: see ``driver_options``, ``ipv6``, ``internal``.
    options: dict[str, Any] = wire("Options", factory=dict)
    ipv4_data: list[IPAMData] = wire("IPv4Data", factory=list)
    ipv6_data: list[IPAMData] = wire("IPv6Data", factory=list)

    @property
    def driver_options(self) -> dict[str, str]:
        """The user's ``-o key=value`` options (not validated by the daemon)."""
        generic = self.options.get(GENERIC)
        if not isinstance(generic, dict):
            return {}
        return {str(k): v if isinstance(v, str) else str(v) for k, v in generic.items()}

    @property
    def ipv6(self) -> bool:
        return self.options.get(ENABLE_IPV6) is True

    @property
    def internal(self) -> bool:
        """``--internal``: no traffic to or from outside the network."""
        return self.options.get(INTERNAL) is True


@dataclass(slots=True)
class DeleteNetworkRequest(Model):
    network_id: str = wire("NetworkID")


@dataclass(slots=True)
class AllocateNetworkRequest(Model):
    """Swarm managers only, for drivers of ``global`` scope."""

    network_id: str = wire("NetworkID")
    options: dict[str, str] = wire("Options", factory=dict)
    ipv4_data: list[IPAMData] = wire("IPv4Data", factory=list)
    ipv6_data: list[IPAMData] = wire("IPv6Data", factory=list)


@dataclass(slots=True)
class FreeNetworkRequest(Model):
    network_id: str = wire("NetworkID")


@dataclass(slots=True)
class CreateEndpointRequest(Model):
    """A container (or a service) gets an endpoint on the network."""

    network_id: str = wire("NetworkID")
    endpoint_id: str = wire("EndpointID")
    interface: EndpointInterface = wire("Interface", factory=EndpointInterface)
    options: dict[str, Any] = wire("Options", factory=dict)

    def respond(
        self,
        *,
        address: str | None = None,
        address_ipv6: str | None = None,
        mac_address: str | None = None,
    ) -> CreateEndpointResponse:
        """The answer that fills in only the fields the daemon sent empty.

        A value equal to the daemon's is left out; a different one raises
        ValueError, since the daemon would refuse it and roll the endpoint
        back. Addresses in CIDR form."""
        given = self.interface
        out = EndpointInterface()
        for name, value in (
            ("address", address),
            ("address_ipv6", address_ipv6),
            ("mac_address", mac_address),
        ):
            if value is None:
                continue
            have = getattr(given, name)
            if not have:
                setattr(out, name, value)
            elif _same(name, have, value):
                continue
            else:
                raise ValueError(
                    f"CreateEndpoint: the daemon set {name} to {have!r}; a driver may only "
                    f"fill in empty fields, not change it to {value!r}"
                )
        if out.address is None and out.address_ipv6 is None and out.mac_address is None:
            return CreateEndpointResponse()
        return CreateEndpointResponse(out)


@dataclass(slots=True)
class EndpointOperInfoRequest(Model):
    network_id: str = wire("NetworkID")
    endpoint_id: str = wire("EndpointID")


@dataclass(slots=True)
class DeleteEndpointRequest(Model):
    network_id: str = wire("NetworkID")
    endpoint_id: str = wire("EndpointID")


@dataclass(slots=True)
class JoinRequest(Model):
    network_id: str = wire("NetworkID")
    endpoint_id: str = wire("EndpointID")
    #: Path of the container's network namespace (``/var/run/docker/netns/...``).
    sandbox_key: str = wire("SandboxKey", "")
    options: dict[str, Any] = wire("Options", factory=dict)


@dataclass(slots=True)
class LeaveRequest(Model):
    network_id: str = wire("NetworkID")
    endpoint_id: str = wire("EndpointID")


@dataclass(slots=True)
class ProgramExternalConnectivityRequest(Model):
    """The endpoint is (or became) the container's gateway: set up port
    mappings (``com.docker.network.portmap`` in ``options``) or outside access."""

    network_id: str = wire("NetworkID")
    endpoint_id: str = wire("EndpointID")
    options: dict[str, Any] = wire("Options", factory=dict)


@dataclass(slots=True)
class RevokeExternalConnectivityRequest(Model):
    network_id: str = wire("NetworkID")
    endpoint_id: str = wire("EndpointID")


@dataclass(slots=True)
class DiscoveryNotification(Model):
    """``DiscoverNew`` / ``DiscoverDelete``: a Swarm node joined or left
    (``discovery_type`` ``NODE_DISCOVERY``; ``discovery_data`` is
    ``{"Address": ..., "BindAddress": ..., "Self": bool}``)."""

    discovery_type: int = wire("DiscoveryType", 0)
    discovery_data: Any = wire("DiscoveryData", None)


# --- responses ----------------------------------------------------------------------------


@dataclass(slots=True)
class CapabilitiesResponse(Model):
    scope: str = wire("Scope", "local")
    #: None: the same as ``scope``.
    connectivity_scope: str | None = wire("ConnectivityScope", None)
    #: Docker 28+: call ``GwAllocCheck`` before ``CreateNetwork``.
    gw_alloc_checker: bool | None = wire("GwAllocChecker", None)


@dataclass(slots=True)
class GwAllocCheckResponse(Model):
    """True: reserve no gateway address for that family (unless the user
    gave one)."""

    skip_ipv4: bool = wire("SkipIPv4", False)
    skip_ipv6: bool = wire("SkipIPv6", False)


@dataclass(slots=True)
class AllocateNetworkResponse(Model):
    """Options handed to ``CreateNetwork`` on every node."""

    options: dict[str, str] = wire("Options", factory=dict)


@dataclass(slots=True)
class CreateEndpointResponse(Model):
    """Only what the daemon sent empty (see ``CreateEndpointRequest.respond``);
    None changes nothing."""

    interface: EndpointInterface | None = wire("Interface", None)

    def __post_init__(self) -> None:
        iface = self.interface
        if iface is None:
            return
        if iface.address:
            _check_cidr("CreateEndpointResponse address", iface.address)
        if iface.address_ipv6:
            _check_cidr("CreateEndpointResponse address_ipv6", iface.address_ipv6)


@dataclass(slots=True)
class EndpointOperInfoResponse(Model):
    """Shown by the daemon with the container's network details."""

    value: dict[str, Any] = wire("Value", factory=dict)


@dataclass(slots=True)
class JoinResponse(Model):
    interface_name: InterfaceName | None = wire("InterfaceName", None)
    #: Plain IPs, not CIDR.
    gateway: str | None = wire("Gateway", None)
    gateway_ipv6: str | None = wire("GatewayIPv6", None)
    static_routes: list[StaticRoute] = wire("StaticRoutes", factory=list)
    #: Do not also connect the container to docker_gwbridge.
    disable_gateway_service: bool = wire("DisableGatewayService", False)

    def __post_init__(self) -> None:
        if self.gateway:
            _check_ip("JoinResponse.gateway", self.gateway)
        if self.gateway_ipv6:
            _check_ip("JoinResponse.gateway_ipv6", self.gateway_ipv6)


# --- the driver ---------------------------------------------------------------------------


class NetworkDriver(Driver):
    """Base class of a network driver.

    Implement ``create_network``, ``delete_network``, ``create_endpoint``,
    ``delete_endpoint``, ``join`` and ``leave``, each plain or ``async``
    (plain ones run in a thread pool and may block). Every other call has
    the default the daemon expects (see the module's docstring). Set
    ``scope`` (and ``connectivity_scope``) as class attributes; override
    ``gw_alloc_check`` to have the daemon (28+) ask it.

    A driver that makes host interfaces needs the host's network and
    ``CAP_NET_ADMIN``: set ``network = "host"`` and
    ``linux_capabilities = ("CAP_NET_ADMIN",)``.
    """

    implements: ClassVar[str] = IMPLEMENTS
    prefix: ClassVar[str] = IMPLEMENTS
    capability: ClassVar[str] = CAPABILITY
    #: ``local``: networks exist per host; ``global``: once for a Swarm cluster.
    scope: ClassVar[str] = "local"
    #: Where endpoints can reach each other; None: the same as ``scope``.
    connectivity_scope: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The daemon silently never registers a driver with another scope.
        if cls.scope not in _SCOPES:
            raise TypeError(f"{cls.__name__}.scope must be 'local' or 'global', not {cls.scope!r}")
        if cls.connectivity_scope not in (None, *_SCOPES):
            raise TypeError(
                f"{cls.__name__}.connectivity_scope must be 'local', 'global' or None, "
                f"not {cls.connectivity_scope!r}"
            )

    @abstractmethod
    def create_network(self, req: CreateNetworkRequest) -> Awaitable[None] | None: ...

    @abstractmethod
    def delete_network(self, req: DeleteNetworkRequest) -> Awaitable[None] | None: ...

    @abstractmethod
    def create_endpoint(
        self, req: CreateEndpointRequest
    ) -> CreateEndpointResponse | Awaitable[CreateEndpointResponse | None] | None: ...

    @abstractmethod
    def delete_endpoint(self, req: DeleteEndpointRequest) -> Awaitable[None] | None: ...

    @abstractmethod
    def join(self, req: JoinRequest) -> JoinResponse | Awaitable[JoinResponse]: ...

    @abstractmethod
    def leave(self, req: LeaveRequest) -> Awaitable[None] | None: ...

    def get_capabilities(self) -> CapabilitiesResponse | Awaitable[CapabilitiesResponse]:
        checker = type(self).gw_alloc_check is not NetworkDriver.gw_alloc_check
        return CapabilitiesResponse(self.scope, self.connectivity_scope, True if checker else None)

    def gw_alloc_check(
        self, req: GwAllocCheckRequest
    ) -> GwAllocCheckResponse | Awaitable[GwAllocCheckResponse]:
        """Only asked when overridden (``GwAllocChecker`` is then answered true)."""
        return GwAllocCheckResponse()

    def allocate_network(
        self, req: AllocateNetworkRequest
    ) -> AllocateNetworkResponse | Awaitable[AllocateNetworkResponse]:
        # The answer replaces the options the nodes get: hand them back.
        return AllocateNetworkResponse(dict(req.options))

    def free_network(self, req: FreeNetworkRequest) -> Awaitable[None] | None:
        return None

    def endpoint_oper_info(
        self, req: EndpointOperInfoRequest
    ) -> EndpointOperInfoResponse | Awaitable[EndpointOperInfoResponse]:
        return EndpointOperInfoResponse()

    def discover_new(self, req: DiscoveryNotification) -> Awaitable[None] | None:
        return None

    def discover_delete(self, req: DiscoveryNotification) -> Awaitable[None] | None:
        return None

    @optional
    def program_external_connectivity(
        self, req: ProgramExternalConnectivityRequest
    ) -> Awaitable[None] | None:
        """Optional: not overridden, the SDK answers 404 ("not implemented")."""

    @optional
    def revoke_external_connectivity(
        self, req: RevokeExternalConnectivityRequest
    ) -> Awaitable[None] | None:
        """Optional: not overridden, the SDK answers 404 ("not implemented")."""


# No call has a deadline of its own: the daemon waits as long as its client
# timeout (the enable timeout; none after install or a daemon restart).
NetworkDriver.endpoints = (
    Endpoint("GetCapabilities", None, CapabilitiesResponse),
    Endpoint("GwAllocCheck", GwAllocCheckRequest, GwAllocCheckResponse),
    Endpoint("CreateNetwork", CreateNetworkRequest, None),
    Endpoint("DeleteNetwork", DeleteNetworkRequest, None),
    Endpoint("AllocateNetwork", AllocateNetworkRequest, AllocateNetworkResponse),
    Endpoint("FreeNetwork", FreeNetworkRequest, None),
    Endpoint("CreateEndpoint", CreateEndpointRequest, CreateEndpointResponse),
    Endpoint("EndpointOperInfo", EndpointOperInfoRequest, EndpointOperInfoResponse),
    Endpoint("DeleteEndpoint", DeleteEndpointRequest, None),
    Endpoint("Join", JoinRequest, JoinResponse),
    Endpoint("Leave", LeaveRequest, None),
    Endpoint("DiscoverNew", DiscoveryNotification, None),
    Endpoint("DiscoverDelete", DiscoveryNotification, None),
    Endpoint("ProgramExternalConnectivity", ProgramExternalConnectivityRequest, None),
    Endpoint("RevokeExternalConnectivity", RevokeExternalConnectivityRequest, None),
)


# --- address forms ----------------------------------------------------------------------------


def _check_cidr(what: str, value: str, *, network: bool = False) -> None:
    """``value`` in the CIDR form the daemon parses (``10.1.0.5/24``)."""
    if "/" not in value:
        raise ValueError(f"{what} must be in CIDR form (like 10.1.0.5/24), got {value!r}")
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{what} is not a CIDR address: {value!r}") from None
    if network:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{what} is not a CIDR network: {value!r}") from None


def _check_ip(what: str, value: str) -> None:
    """``value`` a plain IP address, as the daemon parses it (no prefix)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        hint = " (a plain IP, without a prefix length)" if "/" in value else ""
        raise ValueError(f"{what} is not an IP address{hint}: {value!r}") from None


def _same(name: str, a: str, b: str) -> bool:
    if name == "mac_address":
        return a.replace("-", ":").lower() == b.replace("-", ":").lower()
    try:
        return ipaddress.ip_interface(a) == ipaddress.ip_interface(b)
    except ValueError:
        return a == b
