"""plugin.ipam: the IPAM driver type, as the daemon drives it."""

from __future__ import annotations

import dataclasses

import pytest

from plugin import PluginError
from plugin.ipam import (
    GATEWAY,
    IpamDriver,
    ReleaseAddressRequest,
    ReleasePoolRequest,
    RequestAddressRequest,
    RequestAddressResponse,
    RequestPoolRequest,
    RequestPoolResponse,
)
from plugin.testing import PluginClient


class Ipam(IpamDriver):
    """One pool, addresses counted up; remembers what it is told."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.next = 2

    def request_pool(self, req: RequestPoolRequest) -> RequestPoolResponse:
        self.calls.append(req)
        if req.options.get("fail"):
            raise PluginError("no pool for you")
        return RequestPoolResponse("pool-1", req.pool or "10.5.0.0/24", {GATEWAY: "10.5.0.1/24"})

    def release_pool(self, req: ReleasePoolRequest) -> None:
        self.calls.append(req)

    def request_address(self, req: RequestAddressRequest) -> RequestAddressResponse:
        self.calls.append(req)
        if req.address:
            return RequestAddressResponse(f"{req.address}/24")
        self.next += 1
        return RequestAddressResponse(f"10.5.0.{self.next}/24")

    async def release_address(self, req: ReleaseAddressRequest) -> None:
        self.calls.append(req)


def test_walk_through() -> None:
    driver = Ipam()
    with PluginClient(driver) as client:
        # Both are sent with an empty body.
        assert client.call("IpamDriver.GetCapabilities") == {
            "RequiresMACAddress": False,
            "RequiresRequestReplay": False,
        }
        assert client.call("IpamDriver.GetDefaultAddressSpaces") == {
            "LocalDefaultAddressSpace": "LocalDefault",
            "GlobalDefaultAddressSpace": "GlobalDefault",
        }
        pool = {
            "AddressSpace": "LocalDefault",
            "Pool": "10.5.0.0/24",
            "SubPool": "10.5.0.128/25",
            "Options": None,
            "V6": False,
        }
        assert client.call("IpamDriver.RequestPool", pool) == {
            "PoolID": "pool-1",
            "Pool": "10.5.0.0/24",
            "Data": {"com.docker.network.gateway": "10.5.0.1/24"},
        }
        req = driver.calls[-1]
        assert isinstance(req, RequestPoolRequest)
        assert (req.address_space, req.pool, req.sub_pool, req.options, req.v6) == (
            "LocalDefault",
            "10.5.0.0/24",
            "10.5.0.128/25",
            {},
            False,
        )
        gateway = {
            "PoolID": "pool-1",
            "Address": "",
            "Options": {"RequestAddressType": "com.docker.network.gateway"},
        }
        assert client.call("IpamDriver.RequestAddress", gateway) == {
            "Address": "10.5.0.3/24",
            "Data": {},
        }
        assert driver.calls[-1].is_gateway  # type: ignore[attr-defined]
        exact = {"PoolID": "pool-1", "Address": "10.5.0.77", "Options": None}
        assert client.call("IpamDriver.RequestAddress", exact) == {
            "Address": "10.5.0.77/24",
            "Data": {},
        }
        assert not driver.calls[-1].is_gateway  # type: ignore[attr-defined]
        released = {"PoolID": "pool-1", "Address": "10.5.0.77"}
        assert client.call("IpamDriver.ReleaseAddress", released) == {}
        assert client.call("IpamDriver.ReleasePool", {"PoolID": "pool-1"}) == {}
    assert [type(c).__name__ for c in driver.calls] == [
        "RequestPoolRequest",
        "RequestAddressRequest",
        "RequestAddressRequest",
        "ReleaseAddressRequest",
        "ReleasePoolRequest",
    ]


def test_an_error_is_never_a_200() -> None:
    # On 200 the daemon's IPAM client reads "Error", not "Err": a 200 with
    # "Err" would pass for success. Errors are HTTP 500 with "Err", which
    # every client reads.
    with PluginClient(Ipam()) as client:
        reply = client.post(
            "/IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Options": {"fail": "1"}}
        )
        bad = client.post("/IpamDriver.RequestAddress", {"Address": "10.5.0.9"})
    assert (reply.status, reply.json) == (500, {"Err": "no pool for you"})
    assert (bad.status, bad.json) == (400, {"Err": "bad request: PoolID: required field missing"})


def test_capabilities_and_address_spaces_from_the_class() -> None:
    class Replayed(Ipam):
        requires_mac_address = True
        requires_request_replay = True
        local_address_space = "site"
        global_address_space = "cluster"

    with PluginClient(Replayed()) as client:
        assert client.call("IpamDriver.GetCapabilities") == {
            "RequiresMACAddress": True,
            "RequiresRequestReplay": True,
        }
        assert client.call("IpamDriver.GetDefaultAddressSpaces") == {
            "LocalDefaultAddressSpace": "site",
            "GlobalDefaultAddressSpace": "cluster",
        }


def test_exact_wire_names() -> None:
    def names(model: type) -> list[str]:
        return [f.metadata["wire"] for f in dataclasses.fields(model)]

    assert names(RequestPoolRequest) == ["AddressSpace", "Pool", "SubPool", "Options", "V6"]
    assert names(RequestPoolResponse) == ["PoolID", "Pool", "Data"]
    assert names(RequestAddressRequest) == ["PoolID", "Address", "Options"]
    assert names(RequestAddressResponse) == ["Address", "Data"]
    assert names(ReleaseAddressRequest) == ["PoolID", "Address"]
    assert [e.name for e in IpamDriver.endpoints] == [
        "GetCapabilities",
        "GetDefaultAddressSpaces",
        "RequestPool",
        "ReleasePool",
        "RequestAddress",
        "ReleaseAddress",
    ]


def test_a_pool_gateway_in_data_must_be_cidr() -> None:
    with pytest.raises(ValueError) as info:
        RequestPoolResponse("p", "10.5.0.0/24", {GATEWAY: "10.5.0.1"})
    assert str(info.value) == (
        "RequestPoolResponse.data['com.docker.network.gateway'] must be in CIDR form "
        "(like 10.5.0.5/24), got '10.5.0.1'".replace("10.5.0.5/24", "10.1.0.5/24")
    )
    with pytest.raises(ValueError) as info:
        RequestPoolResponse("", "10.5.0.0/24")
    assert str(info.value) == "RequestPoolResponse.pool_id must not be empty"
    with pytest.raises(ValueError) as info:
        RequestAddressResponse("10.5.0.300/24")
    assert (
        str(info.value) == "RequestAddressResponse.address is not a CIDR address: '10.5.0.300/24'"
    )
