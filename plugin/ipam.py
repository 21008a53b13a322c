"""IPAM drivers: ``docker.ipamdriver/1.0`` (``/IpamDriver.*``).

Read top to bottom: wire constants, request/response models named after the
wire verb, the driver base class, the endpoint table.

Users name the driver with its full tagged name:
``docker network create --ipam-driver acme/myipam:latest --subnet ...``
(the daemon does not add ``:latest`` for network and IPAM drivers: the
short name fails with ``invalid ipam driver: "acme/myipam"``).

The order of calls:

* Network create: ``GetDefaultAddressSpaces``, ``RequestPool`` (per family),
  ``RequestAddress`` for the gateway (``RequestAddressRequest.is_gateway``)
  unless the pool's answer carried one in ``Data``
  (``com.docker.network.gateway``), then one per ``--aux-address``.
* Each endpoint: ``RequestAddress`` (with the endpoint's name, and its MAC
  when ``requires_mac_address``); its removal: ``ReleaseAddress``.
* Network removal: ``ReleaseAddress`` for the gateway and aux addresses,
  then ``ReleasePool``.

Rules the daemon relies on:

* Address forms: requests carry *plain* IPs (``RequestAddress.Address``,
  ``ReleaseAddress.Address``) and CIDR pools; answers carry CIDR: a pool
  ``10.1.0.0/24`` and an address *with the pool's prefix length*
  ``10.1.0.5/24``. The response models refuse anything else.
* ``RequestPool`` for the same pool must return the same ``PoolID``; keep a
  reference count per pool. When the daemon picked no pool itself it checks
  the answer for overlap with its other networks and, on overlap, keeps
  that pool and asks again: hand out a *different* pool each time.
* ``ReleaseAddress`` / ``ReleasePool`` should accept what they do not know
  (the first call after a restart may be a release).
* Errors: ``raise PluginError("...")``. The SDK answers HTTP 500 with
  ``{"Err": ...}``, which the daemon reads for IPAM as for every type. (On
  HTTP 200 the IPAM client reads ``"Error"``, not ``"Err"``, so a 200
  carrying ``"Err"`` would pass for success: the SDK never sends one.)
"""

from __future__ import annotations

import ipaddress
from abc import abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import ClassVar

from ._driver import Driver, Endpoint
from ._wire import Model, wire

__all__ = [
    "GATEWAY",
    "MAC_ADDRESS",
    "REQUEST_ADDRESS_TYPE",
    "AddressSpacesResponse",
    "CapabilitiesResponse",
    "IpamDriver",
    "ReleaseAddressRequest",
    "ReleasePoolRequest",
    "RequestAddressRequest",
    "RequestAddressResponse",
    "RequestPoolRequest",
    "RequestPoolResponse",
]

IMPLEMENTS = "IpamDriver"
CAPABILITY = "docker.ipamdriver/1.0"

#: ``RequestAddressRequest.options[REQUEST_ADDRESS_TYPE] == GATEWAY`` for the
#: network's gateway; also the key of ``RequestPoolResponse.data`` that hands
#: the daemon a gateway (CIDR) it then does not request.
REQUEST_ADDRESS_TYPE = "RequestAddressType"
GATEWAY = "com.docker.network.gateway"
#: The endpoint's MAC in ``RequestAddressRequest.options`` (with
#: ``requires_mac_address``).
MAC_ADDRESS = "com.docker.network.endpoint.macaddress"


# --- requests ---------------------------------------------------------------------------


@dataclass(slots=True)
class RequestPoolRequest(Model):
    """``pool`` empty: choose one (of family ``v6``); ``sub_pool``: hand out
    addresses only from this range of ``pool`` (``--ip-range``)."""

    address_space: str = wire("AddressSpace", "")
    pool: str = wire("Pool", "")
    sub_pool: str = wire("SubPool", "")
    #: The user's ``--ipam-opt key=value`` options.
    options: dict[str, str] = wire("Options", factory=dict)
    v6: bool = wire("V6", False)


@dataclass(slots=True)
class ReleasePoolRequest(Model):
    pool_id: str = wire("PoolID")


@dataclass(slots=True)
class RequestAddressRequest(Model):
    """``address`` empty: any free address; else exactly that one (a plain
    IP) or an error."""

    pool_id: str = wire("PoolID")
    address: str = wire("Address", "")
    options: dict[str, str] = wire("Options", factory=dict)

    @property
    def is_gateway(self) -> bool:
        """The network's gateway (the daemon says so in the options)."""
        return self.options.get(REQUEST_ADDRESS_TYPE) == GATEWAY


@dataclass(slots=True)
class ReleaseAddressRequest(Model):
    pool_id: str = wire("PoolID")
    #: A plain IP.
    address: str = wire("Address", "")


# --- responses ----------------------------------------------------------------------------


@dataclass(slots=True)
class CapabilitiesResponse(Model):
    #: The daemon passes each endpoint's MAC in RequestAddress's options.
    requires_mac_address: bool = wire("RequiresMACAddress", False)
    #: At start the daemon replays RequestPool and the gateways' RequestAddress
    #: of its local networks, for a driver that keeps no state.
    requires_request_replay: bool = wire("RequiresRequestReplay", False)


@dataclass(slots=True)
class AddressSpacesResponse(Model):
    local_default_address_space: str = wire("LocalDefaultAddressSpace")
    global_default_address_space: str = wire("GlobalDefaultAddressSpace")


@dataclass(slots=True)
class RequestPoolResponse(Model):
    pool_id: str = wire("PoolID")
    #: A CIDR network (``10.1.0.0/24``).
    pool: str = wire("Pool")
    data: dict[str, str] = wire("Data", factory=dict)

    def __post_init__(self) -> None:
        if not self.pool_id:
            raise ValueError("RequestPoolResponse.pool_id must not be empty")
        _check_cidr("RequestPoolResponse.pool", self.pool)
        gateway = self.data.get(GATEWAY)
        if gateway is not None:
            _check_cidr(f"RequestPoolResponse.data[{GATEWAY!r}]", gateway)


@dataclass(slots=True)
class RequestAddressResponse(Model):
    #: With the pool's prefix length (``10.1.0.5/24``).
    address: str = wire("Address")
    data: dict[str, str] = wire("Data", factory=dict)

    def __post_init__(self) -> None:
        _check_cidr("RequestAddressResponse.address", self.address)


# --- the driver ---------------------------------------------------------------------------


class IpamDriver(Driver):
    """Base class of an IPAM driver.

    Implement ``request_pool``, ``release_pool``, ``request_address`` and
    ``release_address``, each plain or ``async`` (plain ones run in a thread
    pool and may block). ``get_capabilities`` and
    ``get_default_address_spaces`` answer from the class attributes. One
    plugin may serve an IPAM driver next to a network driver on one socket
    (``serve(MyNetwork(), MyIpam(), socket=...)``).
    """

    implements: ClassVar[str] = IMPLEMENTS
    prefix: ClassVar[str] = IMPLEMENTS
    capability: ClassVar[str] = CAPABILITY
    requires_mac_address: ClassVar[bool] = False
    requires_request_replay: ClassVar[bool] = False
    #: Names of the default address spaces (opaque to the daemon, which
    #: passes one back in every RequestPool).
    local_address_space: ClassVar[str] = "LocalDefault"
    global_address_space: ClassVar[str] = "GlobalDefault"

    @abstractmethod
    def request_pool(
        self, req: RequestPoolRequest
    ) -> RequestPoolResponse | Awaitable[RequestPoolResponse]: ...

    @abstractmethod
    def release_pool(self, req: ReleasePoolRequest) -> Awaitable[None] | None: ...

    @abstractmethod
    def request_address(
        self, req: RequestAddressRequest
    ) -> RequestAddressResponse | Awaitable[RequestAddressResponse]: ...

    @abstractmethod
    def release_address(self, req: ReleaseAddressRequest) -> Awaitable[None] | None: ...

    def get_capabilities(self) -> CapabilitiesResponse | Awaitable[CapabilitiesResponse]:
        return CapabilitiesResponse(self.requires_mac_address, self.requires_request_replay)

    def get_default_address_spaces(
        self,
    ) -> AddressSpacesResponse | Awaitable[AddressSpacesResponse]:
        return AddressSpacesResponse(self.local_address_space, self.global_address_space)


# No call has a deadline of its own (the daemon's client timeout applies).
IpamDriver.endpoints = (
    Endpoint("GetCapabilities", None, CapabilitiesResponse),
    Endpoint("GetDefaultAddressSpaces", None, AddressSpacesResponse),
    Endpoint("RequestPool", RequestPoolRequest, RequestPoolResponse),
    Endpoint("ReleasePool", ReleasePoolRequest, None),
    Endpoint("RequestAddress", RequestAddressRequest, RequestAddressResponse),
    Endpoint("ReleaseAddress", ReleaseAddressRequest, None),
)


def _check_cidr(what: str, value: str) -> None:
    if "/" not in value:
        raise ValueError(f"{what} must be in CIDR form (like 10.1.0.5/24), got {value!r}")
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{what} is not a CIDR address: {value!r}") from None
