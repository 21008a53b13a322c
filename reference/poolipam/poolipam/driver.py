"""poolipam: pools and addresses from ranges set per host, persisted.

Install, then name it with its full tagged name::

    docker plugin install --alias poolipam IMAGE POOLS=10.142.0.0/16 POOL_SIZE=24
    docker network create -d bridgenet:latest --ipam-driver poolipam:latest NAME
    docker network create ... --ipam-driver poolipam:latest \\
        --subnet 10.9.0.0/24 --ip-range 10.9.0.128/25 --gateway 10.9.0.1 NAME

A network without ``--subnet`` gets the first free ``/POOL_SIZE`` of
``POOLS`` (``/POOL_SIZE_V6`` of ``POOLS_V6`` for IPv6): typed settings
(``PoolSettings``), checked before the plugin starts; a bad value stops it
with a message naming the setting and its value. A requested pool,
sub-pool (``--ip-range``), gateway and exact address (``--ip``) are
honoured. Addresses are handed out lowest first, from the sub-pool when
there is one.

Every change is written to ``state.json`` (in the plugin's data directory,
``data.source`` on the host) before the daemon gets its answer, and the
file is replaced whole (``plugin.state``): a plugin or daemon restart loses
nothing, and an address is never handed out twice. One lock serializes the
changes, so concurrent requests are safe.

State (``version`` 1)::

    {"pools": {"<pool id>": {"pool": "10.142.3.0/24", "sub_pool": "",
                             "space": "LocalDefault", "v6": false,
                             "refs": 1, "addresses": {"10.142.3.1": "gateway"}}}}
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from plugin import Mount, PluginError, settings
from plugin.ipam import (
    IpamDriver,
    ReleaseAddressRequest,
    ReleasePoolRequest,
    RequestAddressRequest,
    RequestAddressResponse,
    RequestPoolRequest,
    RequestPoolResponse,
)
from plugin.state import StateFile

__all__ = ["DATA", "PoolIpam", "PoolSettings"]

log = logging.getLogger("poolipam")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DATA = Mount(
    "data",
    destination="/data",
    source="/var/lib/docker-poolipam",
    description="host directory holding state.json (docker plugin set PLUGIN data.source=/path)",
)


def ranges(version: int, default: str, description: str) -> settings.Setting[tuple[IPNetwork, ...]]:
    """A setting holding comma-separated CIDR ranges of one IP version."""

    def parse(text: str) -> tuple[IPNetwork, ...]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        nets = tuple(ipaddress.ip_network(part) for part in parts)  # ValueError when bad
        if not nets or any(net.version != version for net in nets):
            raise ValueError(text)
        return nets

    example = "10.142.0.0/16,10.143.0.0/16" if version == 4 else "fd42:d0c:1::/48"
    return settings.Setting(
        "ranges",
        parse,
        lambda nets: ",".join(map(str, nets)),
        f"comma-separated IPv{version} networks",
        f"CIDR, such as {example}",
        default,
        description,
        None,
        True,
    )


class PoolSettings(settings.Settings):
    """Where pools come from when a network names none (``docker plugin set``)."""

    pools = ranges(
        4,
        "10.142.0.0/16",
        "IPv4 ranges that pools are carved from when a network names none",
    )
    pool_size = settings.integer(
        24, "prefix length of the IPv4 pools carved from POOLS", minimum=1, maximum=32
    )
    pools_v6 = ranges(6, "fd42:d0c:1::/48", "IPv6 ranges that IPv6 pools are carved from")
    pool_size_v6 = settings.integer(
        64, "prefix length of the IPv6 pools carved from POOLS_V6", minimum=1, maximum=128
    )

    @classmethod
    def parse(cls, environ: Mapping[str, str]) -> PoolSettings:
        """Each setting by its type, then: every pool size fits in its ranges."""
        values = super().parse(environ)
        problems = [
            f"bad setting {size}={prefix}: pools of /{prefix} do not fit in {net} ({name}); "
            f"change it with docker plugin set PLUGIN {size}=VALUE"
            for name, size, nets, prefix in (
                ("POOLS", "POOL_SIZE", values.pools, values.pool_size),
                ("POOLS_V6", "POOL_SIZE_V6", values.pools_v6, values.pool_size_v6),
            )
            for net in nets
            if prefix < net.prefixlen
        ]
        if problems:
            raise settings.SettingsError(problems)
        return values


STATE_VERSION = 1
GATEWAY_LABEL = "gateway"


@dataclass
class _Pool:
    pool: IPNetwork
    sub_pool: IPNetwork | None
    space: str
    refs: int = 1
    #: Address -> what it is for ("gateway", an endpoint's name, or "").
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def v6(self) -> bool:
        return self.pool.version == 6

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": str(self.pool),
            "sub_pool": str(self.sub_pool) if self.sub_pool else "",
            "space": self.space,
            "v6": self.v6,
            "refs": self.refs,
            "addresses": dict(sorted(self.addresses.items())),
        }


class PoolIpam(IpamDriver):
    """Pools carved from per-host ranges; addresses lowest first."""

    mounts = (DATA,)
    settings = PoolSettings
    local_address_space = "LocalDefault"
    global_address_space = "GlobalDefault"

    def __init__(self, data_dir: str | None = None, config: PoolSettings | None = None) -> None:
        config = PoolSettings.from_env() if config is None else config
        self.ranges_v4, self.size_v4 = list(config.pools), config.pool_size
        self.ranges_v6, self.size_v6 = list(config.pools_v6), config.pool_size_v6
        self.state = StateFile(os.path.join(data_dir or DATA.destination, "state.json"), 1)
        self._lock = threading.Lock()
        self._pools: dict[str, _Pool] = self._load()
        log.info(
            "%d pools in %s; carving /%d from %s and /%d from %s",
            len(self._pools),
            self.state.path,
            self.size_v4,
            ", ".join(map(str, self.ranges_v4)),
            self.size_v6,
            ", ".join(map(str, self.ranges_v6)),
        )

    # --- pools ----------------------------------------------------------------------------

    def request_pool(self, req: RequestPoolRequest) -> RequestPoolResponse:
        space = req.address_space or self.local_address_space
        if req.sub_pool and not req.pool:
            raise PluginError(f"a sub-pool ({req.sub_pool}) needs a pool (--subnet) to be in")
        with self._lock:
            if req.pool:
                pool = _network(req.pool, "pool")
                sub = _network(req.sub_pool, "sub-pool") if req.sub_pool else None
                if sub is not None and (sub.version != pool.version or not sub.subnet_of(pool)):  # type: ignore[arg-type]
                    raise PluginError(f"sub-pool {sub} is not inside pool {pool}")
                pool_id = _pool_id(space, pool, sub)
                known = self._pools.get(pool_id)
                if known is not None:
                    # The same request again (a retry, or the daemon's replay): one more reference.
                    pools = {**self._pools, pool_id: _copy(known, refs=known.refs + 1)}
                else:
                    self._check_free(space, pool)
                    pools = {**self._pools, pool_id: _Pool(pool, sub, space)}
            else:
                pool = self._carve(space, req.v6)
                pool_id = _pool_id(space, pool, None)
                pools = {**self._pools, pool_id: _Pool(pool, None, space)}
            self._commit(pools)
            count = self._pools[pool_id].refs
        log.info("pool %s handed out (%d references)", pool_id, count)
        return RequestPoolResponse(pool_id, str(pool))

    def release_pool(self, req: ReleasePoolRequest) -> None:
        with self._lock:
            known = self._pools.get(req.pool_id)
            if known is None:
                # The first call after a restart may be a release: not an error.
                log.info("release of unknown pool %s: nothing to do", req.pool_id)
                return
            pools = dict(self._pools)
            if known.refs > 1:
                pools[req.pool_id] = _copy(known, refs=known.refs - 1)
            else:
                del pools[req.pool_id]
            self._commit(pools)
        log.info("pool %s released", req.pool_id)

    # --- addresses ---------------------------------------------------------------------------

    def request_address(self, req: RequestAddressRequest) -> RequestAddressResponse:
        label = (
            GATEWAY_LABEL
            if req.is_gateway
            else req.options.get("com.docker.network.endpoint.name", "")
        )
        with self._lock:
            known = self._pools.get(req.pool_id)
            if known is None:
                raise PluginError(f"no such pool: {req.pool_id!r} (was it released?)")
            address = self._exact(known, req.address) if req.address else self._free(known)
            addresses = {**known.addresses, str(address): label}
            self._commit({**self._pools, req.pool_id: _copy(known, addresses=addresses)})
        log.info("address %s of pool %s handed out (%s)", address, req.pool_id, label or "-")
        return RequestAddressResponse(f"{address}/{known.pool.prefixlen}")

    def release_address(self, req: ReleaseAddressRequest) -> None:
        with self._lock:
            known = self._pools.get(req.pool_id)
            try:
                address = str(ipaddress.ip_address(req.address.split("/")[0]))
            except ValueError:
                raise PluginError(f"not an IP address: {req.address!r}") from None
            if known is None or address not in known.addresses:
                log.info("release of unknown address %s in %s: nothing to do", address, req.pool_id)
                return
            addresses = {k: v for k, v in known.addresses.items() if k != address}
            self._commit({**self._pools, req.pool_id: _copy(known, addresses=addresses)})
        log.info("address %s of pool %s released", address, req.pool_id)

    # --- inside the lock -------------------------------------------------------------------

    def _check_free(self, space: str, pool: IPNetwork) -> None:
        for other in self._pools.values():
            if other.space == space and other.pool.overlaps(pool):
                raise PluginError(
                    f"pool {pool} overlaps pool {other.pool}, which is in use (by another network?)"
                )

    def _carve(self, space: str, v6: bool) -> IPNetwork:
        ranges, size = (self.ranges_v6, self.size_v6) if v6 else (self.ranges_v4, self.size_v4)
        taken = [p.pool for p in self._pools.values() if p.space == space and p.v6 == v6]
        for candidate in _subnets(ranges, size):
            # A pool still held is never handed out again, so the daemon,
            # which keeps a pool it finds overlapping and asks again, gets
            # a different one each time.
            if not any(candidate.overlaps(t) for t in taken):
                return candidate
        family = "IPv6" if v6 else "IPv4"
        where = ", ".join(map(str, ranges))
        raise PluginError(
            f"no free /{size} {family} pool left in {where} ({len(taken)} in use): widen POOLS"
            f"{'_V6' if v6 else ''} with docker plugin set, or remove unused networks"
        )

    def _exact(self, known: _Pool, text: str) -> IPAddress:
        try:
            address = ipaddress.ip_address(text.split("/")[0])
        except ValueError:
            raise PluginError(f"not an IP address: {text!r}") from None
        if address not in known.pool:
            raise PluginError(f"address {address} is not in pool {known.pool}")
        if address in _reserved(known.pool):
            raise PluginError(
                f"address {address} is the network or broadcast address of {known.pool}"
            )
        if str(address) in known.addresses:
            raise PluginError(f"address {address} is already in use in pool {known.pool}")
        return address

    def _free(self, known: _Pool) -> IPAddress:
        span = known.sub_pool or known.pool
        reserved = _reserved(known.pool)
        used = known.addresses
        for address in _hosts(span):
            if address not in reserved and str(address) not in used:
                return address
        raise PluginError(
            f"pool {span} is exhausted: all {len(used)} addresses are in use"
            if span is known.pool
            else f"range {span} of pool {known.pool} is exhausted: no free address left"
        )

    def _commit(self, pools: dict[str, _Pool]) -> None:
        """Write ``pools``, then make them current; nothing changes on failure."""
        try:
            self.state.save({"pools": {k: v.to_json() for k, v in sorted(pools.items())}})
        except OSError as exc:
            log.error("cannot write %s: %s", self.state.path, exc)
            raise PluginError(
                f"cannot save the IPAM state ({exc.strerror or exc}); nothing was changed"
            ) from None
        self._pools = pools

    def _load(self) -> dict[str, _Pool]:
        data = self.state.load()
        if data is None:
            return {}
        entries = data.get("pools")
        if not isinstance(entries, dict):
            raise self.state.corrupt('"pools" must be an object')
        pools: dict[str, _Pool] = {}
        for pool_id, entry in entries.items():
            try:
                pool = ipaddress.ip_network(entry["pool"])
                sub = ipaddress.ip_network(entry["sub_pool"]) if entry.get("sub_pool") else None
                refs = entry["refs"]
                addresses = entry["addresses"]
                if not isinstance(refs, int) or refs < 1 or not isinstance(addresses, dict):
                    raise ValueError("bad refs or addresses")
                for address in addresses:
                    if ipaddress.ip_address(address) not in pool:
                        raise ValueError(f"address {address} is outside its pool")
                pools[pool_id] = _Pool(pool, sub, str(entry["space"]), refs, dict(addresses))
            except (KeyError, TypeError, ValueError) as exc:
                raise self.state.corrupt(f"pool {pool_id!r}: {exc}") from None
        return pools


# --- helpers -----------------------------------------------------------------------------


def _copy(pool: _Pool, **changes: Any) -> _Pool:
    """A changed copy: what is current is never changed in place, so a
    failed write leaves memory as it was."""
    return dataclasses.replace(pool, **changes)


def _pool_id(space: str, pool: IPNetwork, sub: IPNetwork | None) -> str:
    return f"{space}/{pool}" + (f"/{sub}" if sub else "")


def _network(text: str, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise PluginError(f"invalid {what} {text!r}: {exc}") from None


def _reserved(pool: IPNetwork) -> set[IPAddress]:
    """The network address, and the broadcast address of IPv4 pools larger than /31."""
    if pool.version == 4 and pool.prefixlen < 31:
        return {pool.network_address, pool.broadcast_address}
    if pool.prefixlen < pool.max_prefixlen:
        return {pool.network_address}
    return set()


def _hosts(span: IPNetwork) -> Iterator[IPAddress]:
    make = ipaddress.IPv4Address if span.version == 4 else ipaddress.IPv6Address
    first = int(span.network_address)
    for offset in range(span.num_addresses):
        yield make(first + offset)


def _subnets(ranges: list[IPNetwork], size: int) -> Iterator[IPNetwork]:
    for r in ranges:
        yield from r.subnets(new_prefix=size)
