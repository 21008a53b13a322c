"""plugin.network: the network driver type, as the daemon drives it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from plugin import Model, PluginError, method_name, wire
from plugin._requirements import requirements
from plugin.ipam import IpamDriver, RequestAddressResponse, RequestPoolResponse
from plugin.network import (
    CreateEndpointRequest,
    CreateEndpointResponse,
    CreateNetworkRequest,
    EndpointInterface,
    GwAllocCheckRequest,
    GwAllocCheckResponse,
    InterfaceName,
    JoinRequest,
    JoinResponse,
    NetworkDriver,
    ProgramExternalConnectivityRequest,
    StaticRoute,
)
from plugin.testing import PluginClient

NET = "n" * 64
EP = "e" * 64


class Net(NetworkDriver):
    """The smallest network driver: remembers what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def create_network(self, req: CreateNetworkRequest) -> None:
        if req.driver_options.get("fail"):
            raise PluginError(f"bad option fail={req.driver_options['fail']}")
        self.calls.append(("create_network", req))

    def delete_network(self, req):  # type: ignore[no-untyped-def]
        self.calls.append(("delete_network", req))

    def create_endpoint(self, req: CreateEndpointRequest) -> CreateEndpointResponse:
        self.calls.append(("create_endpoint", req))
        return req.respond(address="10.1.0.9/24", mac_address="02:42:0a:01:00:09")

    def delete_endpoint(self, req):  # type: ignore[no-untyped-def]
        self.calls.append(("delete_endpoint", req))

    def join(self, req: JoinRequest) -> JoinResponse:
        self.calls.append(("join", req))
        return JoinResponse(
            InterfaceName("veth1234", "eth"),
            gateway="10.1.0.1",
            static_routes=[
                StaticRoute("10.2.0.0/16", next_hop="10.1.0.254"),
                StaticRoute("10.3.0.0/16", route_type=1),
            ],
            disable_gateway_service=True,
        )

    def leave(self, req):  # type: ignore[no-untyped-def]
        self.calls.append(("leave", req))


# A network create as dockerd 20.10 sends it (Go's encoder, nil maps as null).
CREATE = {
    "NetworkID": NET,
    "Options": {
        "com.docker.network.enable_ipv6": False,
        "com.docker.network.generic": {"mtu": "1400", "bridge": "br-x"},
    },
    "IPv4Data": [
        {
            "AddressSpace": "LocalDefault",
            "Gateway": "10.1.0.1/24",
            "Pool": "10.1.0.0/24",
            "AuxAddresses": {"host1": "10.1.0.250/24"},
        }
    ],
    "IPv6Data": None,
}


def test_walk_through() -> None:
    driver = Net()
    with PluginClient(driver) as client:
        assert client.call("NetworkDriver.GetCapabilities") == {"Scope": "local"}
        assert client.call("NetworkDriver.CreateNetwork", CREATE) == {}
        req = driver.calls[-1][1]
        assert isinstance(req, CreateNetworkRequest)
        assert req.network_id == NET
        assert req.driver_options == {"mtu": "1400", "bridge": "br-x"}
        assert (req.ipv6, req.internal) == (False, False)
        assert req.ipv6_data == []
        (v4,) = req.ipv4_data
        assert (v4.address_space, v4.pool, v4.gateway) == (
            "LocalDefault",
            "10.1.0.0/24",
            "10.1.0.1/24",
        )
        assert v4.aux_addresses == {"host1": "10.1.0.250/24"}

        # The daemon sends the interface with what it knows; the answer
        # carries only what came empty.
        endpoint = {
            "NetworkID": NET,
            "EndpointID": EP,
            "Interface": {"Address": "10.1.0.9/24", "AddressIPv6": "", "MacAddress": ""},
            "Options": {"com.docker.network.endpoint.exposedports": None},
        }
        assert client.call("NetworkDriver.CreateEndpoint", endpoint) == {
            "Interface": {"MacAddress": "02:42:0a:01:00:09"}
        }
        assert client.call(
            "NetworkDriver.EndpointOperInfo", {"NetworkID": NET, "EndpointID": EP}
        ) == {"Value": {}}
        join = {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/abc"}
        assert client.call("NetworkDriver.Join", {**join, "Options": None}) == {
            "InterfaceName": {"SrcName": "veth1234", "DstPrefix": "eth"},
            "Gateway": "10.1.0.1",
            "StaticRoutes": [
                {"Destination": "10.2.0.0/16", "RouteType": 0, "NextHop": "10.1.0.254"},
                {"Destination": "10.3.0.0/16", "RouteType": 1},
            ],
            "DisableGatewayService": True,
        }
        assert driver.calls[-1][1].sandbox_key == "/var/run/docker/netns/abc"  # type: ignore[attr-defined]
        ids = {"NetworkID": NET, "EndpointID": EP}
        # Optional calls not implemented: 404, which the daemon reads as "not implemented".
        for call in ("ProgramExternalConnectivity", "RevokeExternalConnectivity"):
            reply = client.post(f"/NetworkDriver.{call}", ids)
            assert (reply.status, reply.json) == (
                404,
                {"Err": f"not implemented: /NetworkDriver.{call}"},
            )
        assert client.call("NetworkDriver.Leave", ids) == {}
        assert client.call("NetworkDriver.DeleteEndpoint", ids) == {}
        assert client.call("NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == {}
    assert [name for name, _ in driver.calls] == [
        "create_network",
        "create_endpoint",
        "join",
        "leave",
        "delete_endpoint",
        "delete_network",
    ]


def test_an_error_reaches_the_user_as_err() -> None:
    body = {**CREATE, "Options": {"com.docker.network.generic": {"fail": "yes"}}}
    with PluginClient(Net()) as client:
        reply = client.post("/NetworkDriver.CreateNetwork", body)
    assert (reply.status, reply.json) == (500, {"Err": "bad option fail=yes"})


def test_defaults_of_the_calls_a_driver_may_leave_out() -> None:
    with PluginClient(Net()) as client:
        allocate = {
            "NetworkID": NET,
            "Options": {"com.docker.network.generic": "x", "k": "v"},
            "IPv4Data": [{"AddressSpace": "GlobalDefault", "Pool": "10.0.0.0/24"}],
            "IPv6Data": None,
        }
        # Swarm replaces the nodes' options with the answer: handed back unchanged.
        assert client.call("NetworkDriver.AllocateNetwork", allocate) == {
            "Options": {"com.docker.network.generic": "x", "k": "v"}
        }
        assert client.call("NetworkDriver.FreeNetwork", {"NetworkID": NET}) == {}
        node = {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.2", "Self": False}}
        assert client.call("NetworkDriver.DiscoverNew", node) == {}
        assert client.call("NetworkDriver.DiscoverDelete", node) == {}
        assert client.call("NetworkDriver.GwAllocCheck", {"Options": None}) == {
            "SkipIPv4": False,
            "SkipIPv6": False,
        }


def test_only_what_a_driver_must_answer_is_abstract() -> None:
    assert NetworkDriver.__abstractmethods__ == {
        "create_network",
        "delete_network",
        "create_endpoint",
        "delete_endpoint",
        "join",
        "leave",
    }
    assert IpamDriver.__abstractmethods__ == {
        "request_pool",
        "release_pool",
        "request_address",
        "release_address",
    }
    methods = {k: v for k, v in vars(Net).items() if k in NetworkDriver.__abstractmethods__}
    del methods["leave"]
    with pytest.raises(TypeError, match=r"abstract method .?leave"):
        type("NoLeave", (NetworkDriver,), methods)()


def test_method_names_follow_the_one_rule() -> None:
    for kind in (NetworkDriver, IpamDriver):
        for endpoint in kind.endpoints:
            assert callable(getattr(kind, method_name(endpoint.name))), endpoint.name
            for model in (endpoint.request, endpoint.response):
                for f in dataclasses.fields(model or _Empty):  # type: ignore[arg-type]
                    assert f.name == method_name(f.metadata["wire"]), (model, f.name)
    assert [e.name for e in NetworkDriver.endpoints] == [
        "GetCapabilities",
        "GwAllocCheck",
        "CreateNetwork",
        "DeleteNetwork",
        "AllocateNetwork",
        "FreeNetwork",
        "CreateEndpoint",
        "EndpointOperInfo",
        "DeleteEndpoint",
        "Join",
        "Leave",
        "DiscoverNew",
        "DiscoverDelete",
        "ProgramExternalConnectivity",
        "RevokeExternalConnectivity",
    ]


@dataclass(slots=True)
class _Empty(Model):
    pass


def _wire_names(model: type[Model]) -> list[str]:
    return [f.metadata["wire"] for f in dataclasses.fields(model)]  # type: ignore[arg-type]


def test_exact_wire_names() -> None:
    ep = {e.name: e for e in NetworkDriver.endpoints}
    assert _wire_names(ep["CreateNetwork"].request) == [  # type: ignore[arg-type]
        "NetworkID",
        "Options",
        "IPv4Data",
        "IPv6Data",
    ]
    assert _wire_names(EndpointInterface) == ["Address", "AddressIPv6", "MacAddress"]
    assert _wire_names(JoinResponse) == [
        "InterfaceName",
        "Gateway",
        "GatewayIPv6",
        "StaticRoutes",
        "DisableGatewayService",
    ]
    assert _wire_names(ep["Join"].request) == ["NetworkID", "EndpointID", "SandboxKey", "Options"]  # type: ignore[arg-type]
    assert _wire_names(ep["GetCapabilities"].response) == [  # type: ignore[arg-type]
        "Scope",
        "ConnectivityScope",
        "GwAllocChecker",
    ]
    assert _wire_names(GwAllocCheckResponse) == ["SkipIPv4", "SkipIPv6"]
    assert _wire_names(ep["DiscoverNew"].request) == ["DiscoveryType", "DiscoveryData"]  # type: ignore[arg-type]


def test_capabilities_from_the_class() -> None:
    class Global(Net):
        scope = "global"
        connectivity_scope = "global"

    class Checker(Net):
        def gw_alloc_check(self, req: GwAllocCheckRequest) -> GwAllocCheckResponse:
            return GwAllocCheckResponse(skip_ipv4=req.options.get("skip") == "4")

    with PluginClient(Global()) as client:
        assert client.call("NetworkDriver.GetCapabilities") == {
            "Scope": "global",
            "ConnectivityScope": "global",
        }
    with PluginClient(Checker()) as client:
        assert client.call("NetworkDriver.GetCapabilities") == {
            "Scope": "local",
            "GwAllocChecker": True,
        }
        assert client.call("NetworkDriver.GwAllocCheck", {"Options": {"skip": "4"}}) == {
            "SkipIPv4": True,
            "SkipIPv6": False,
        }


def test_a_scope_the_daemon_would_refuse_fails_at_class_definition() -> None:
    # The daemon logs the error and never registers the driver: say it at once.
    with pytest.raises(TypeError) as info:
        type("Bad", (Net,), {"scope": "host"})
    assert str(info.value) == "Bad.scope must be 'local' or 'global', not 'host'"
    with pytest.raises(TypeError) as info:
        type("Bad", (Net,), {"connectivity_scope": "Local"})
    assert str(info.value) == (
        "Bad.connectivity_scope must be 'local', 'global' or None, not 'Local'"
    )


def test_external_connectivity_when_implemented() -> None:
    seen: list[ProgramExternalConnectivityRequest] = []

    class External(Net):
        def program_external_connectivity(self, req: ProgramExternalConnectivityRequest) -> None:
            seen.append(req)

        async def revoke_external_connectivity(self, req: object) -> None:
            return None

    body = {
        "NetworkID": NET,
        "EndpointID": EP,
        "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80}]},
    }
    with PluginClient(External()) as client:
        assert client.call("NetworkDriver.ProgramExternalConnectivity", body) == {}
        ids = {"NetworkID": NET, "EndpointID": EP}
        assert client.call("NetworkDriver.RevokeExternalConnectivity", ids) == {}
    assert seen[0].options["com.docker.network.portmap"] == [{"Proto": 6, "Port": 80}]


# --- CreateEndpoint: only the fields that came empty ---------------------------------------


def endpoint_request(**iface: str) -> CreateEndpointRequest:
    return CreateEndpointRequest(NET, EP, EndpointInterface(**iface))


def test_respond_fills_only_empty_fields() -> None:
    req = endpoint_request(address="10.1.0.5/24", address_ipv6="", mac_address="")
    assert req.respond(mac_address="02:00:00:00:00:01").to_wire() == {
        "Interface": {"MacAddress": "02:00:00:00:00:01"}
    }
    # Equal to what the daemon has: left out (the daemon refuses any re-set).
    assert req.respond(address="10.1.0.5/24").to_wire() == {}
    assert req.respond().to_wire() == {}
    assert req.respond(address_ipv6="fd00::5/64").to_wire() == {
        "Interface": {"AddressIPv6": "fd00::5/64"}
    }


def test_respond_refuses_to_change_a_field_the_daemon_set() -> None:
    req = endpoint_request(address="10.1.0.5/24", mac_address="02:00:00:00:00:01")
    with pytest.raises(ValueError) as info:
        req.respond(address="10.1.0.6/24")
    assert str(info.value) == (
        "CreateEndpoint: the daemon set address to '10.1.0.5/24'; a driver may only fill in "
        "empty fields, not change it to '10.1.0.6/24'"
    )
    assert req.respond(mac_address="02:00:00:00:00:01".upper()).to_wire() == {}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: CreateEndpointResponse(EndpointInterface(address="10.1.0.5")),
            "CreateEndpointResponse address must be in CIDR form (like 10.1.0.5/24), "
            "got '10.1.0.5'",
        ),
        (
            lambda: JoinResponse(gateway="10.1.0.1/24"),
            "JoinResponse.gateway is not an IP address (a plain IP, without a prefix length): "
            "'10.1.0.1/24'",
        ),
        (
            lambda: StaticRoute("10.2.0.0/16"),
            "StaticRoute: a ROUTE_NEXT_HOP route needs next_hop",
        ),
        (
            lambda: StaticRoute("10.2.0.0/16", route_type=1, next_hop="10.1.0.1"),
            "StaticRoute: a ROUTE_CONNECTED route has no next_hop",
        ),
        (
            lambda: StaticRoute("10.2.0.0/16", route_type=2),
            "StaticRoute.route_type must be ROUTE_NEXT_HOP (0) or ROUTE_CONNECTED (1), not 2",
        ),
        (lambda: InterfaceName("veth0", ""), "InterfaceName needs both src_name and dst_prefix"),
        (
            lambda: RequestAddressResponse("10.1.0.5"),
            "RequestAddressResponse.address must be in CIDR form (like 10.1.0.5/24), "
            "got '10.1.0.5'",
        ),
        (
            lambda: RequestPoolResponse("p", "10.1.0.0"),
            "RequestPoolResponse.pool must be in CIDR form (like 10.1.0.5/24), got '10.1.0.0'",
        ),
    ],
)
def test_responses_refuse_forms_the_daemon_cannot_parse(make: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()  # type: ignore[operator]
    assert str(info.value) == message


def test_a_bad_answer_is_a_clean_error_for_the_daemon() -> None:
    class Sloppy(Net):
        def join(self, req: JoinRequest) -> JoinResponse:
            return JoinResponse(gateway="10.1.0.1/24")

    ids = {"NetworkID": NET, "EndpointID": EP}
    with PluginClient(Sloppy()) as client:
        reply = client.post("/NetworkDriver.Join", ids)
    assert (reply.status, reply.json) == (
        500,
        {"Err": "unexpected ValueError in the plugin (see its log)"},
    )


def test_requests_accept_null_and_absent_fields() -> None:
    driver = Net()
    with PluginClient(driver) as client:
        client.call("NetworkDriver.CreateNetwork", {"NetworkID": NET})
        client.call("NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP})
        reply = client.post("/NetworkDriver.CreateNetwork", {"Options": {}})
    assert (reply.status, reply.json) == (
        400,
        {"Err": "bad request: NetworkID: required field missing"},
    )
    created = driver.calls[0][1]
    assert isinstance(created, CreateNetworkRequest)
    assert (created.options, created.ipv4_data, created.driver_options) == ({}, [], {})
    endpoint = driver.calls[1][1]
    assert isinstance(endpoint, CreateEndpointRequest)
    assert endpoint.interface == EndpointInterface()


# --- extending a model ---------------------------------------------------------------------


@dataclass(slots=True)
class NewJoinRequest(JoinRequest):
    """A field a newer daemon sends that the SDK does not know."""

    priority: int = wire("GwPriority", 0)


def test_an_author_extends_a_request_model() -> None:
    seen: list[NewJoinRequest] = []

    class Newer(Net):
        def join(self, req: NewJoinRequest) -> JoinResponse:
            seen.append(req)
            return JoinResponse()

    body = {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x", "GwPriority": 7}
    with PluginClient(Newer()) as client:
        assert client.call("NetworkDriver.Join", body) == {
            "StaticRoutes": [],
            "DisableGatewayService": False,
        }
        reply = client.post("/NetworkDriver.Join", {**body, "GwPriority": "high"})
    assert seen[0].priority == 7 and seen[0].sandbox_key == "/x"
    assert (reply.status, reply.json) == (
        400,
        {"Err": "bad request: GwPriority: expected an integer, got string"},
    )


def test_an_annotation_naming_another_model_fails_at_start() -> None:
    class Confused(Net):
        def join(self, req: CreateNetworkRequest) -> JoinResponse:  # type: ignore[override]
            return JoinResponse()

    with pytest.raises(TypeError) as info:
        PluginClient(Confused())
    assert str(info.value) == (
        "NetworkDriver.Join: the method takes CreateNetworkRequest, which is not a subclass "
        "of JoinRequest (the model of this call)"
    )


# --- network and IPAM on one socket ---------------------------------------------------------


class Ipam(IpamDriver):
    def request_pool(self, req):  # type: ignore[no-untyped-def]
        return RequestPoolResponse("p1", req.pool or "10.7.0.0/24")

    def release_pool(self, req):  # type: ignore[no-untyped-def]
        return None

    def request_address(self, req):  # type: ignore[no-untyped-def]
        return RequestAddressResponse("10.7.0.2/24")

    def release_address(self, req):  # type: ignore[no-untyped-def]
        return None


class HostNet(Net):
    network = "host"
    linux_capabilities = ("CAP_NET_ADMIN",)


def test_one_plugin_serves_a_network_and_an_ipam_driver() -> None:
    with PluginClient(HostNet(), Ipam()) as client:
        assert client.call("Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}
        assert client.call("NetworkDriver.GetCapabilities") == {"Scope": "local"}
        pool = {"AddressSpace": "LocalDefault", "Pool": "", "SubPool": "", "V6": False}
        assert client.call("IpamDriver.RequestPool", pool) == {
            "PoolID": "p1",
            "Pool": "10.7.0.0/24",
            "Data": {},
        }
    reqs = requirements([HostNet, Ipam])
    assert reqs.interface_types == ("docker.networkdriver/1.0", "docker.ipamdriver/1.0")
    assert (reqs.network, reqs.linux_capabilities) == ("host", ("CAP_NET_ADMIN",))
