"""poolipam through the SDK, as the daemon calls it (plugin.testing.PluginClient)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from poolipam import PoolIpam
from poolipam.driver import PoolSettings

from plugin.__main__ import check_settings
from plugin.settings import SettingsError
from plugin.state import StateError
from plugin.testing import PluginClient

SPACE = "LocalDefault"
GATEWAY = {"RequestAddressType": "com.docker.network.gateway"}


class Daemon:
    """The calls the daemon makes, by what the user did."""

    def __init__(self, client: PluginClient) -> None:
        self.client = client

    def pool(self, pool: str = "", sub: str = "", v6: bool = False) -> dict[str, Any]:
        self.client.call("IpamDriver.GetDefaultAddressSpaces")
        body = {"AddressSpace": SPACE, "Pool": pool, "SubPool": sub, "Options": None, "V6": v6}
        return self.client.call("IpamDriver.RequestPool", body)  # type: ignore[no-any-return]

    def address(self, pool_id: str, address: str = "", options: Any = None) -> str:
        body = {"PoolID": pool_id, "Address": address, "Options": options}
        return self.client.call("IpamDriver.RequestAddress", body)["Address"]  # type: ignore[no-any-return]

    def fails(self, call: str, body: dict[str, Any]) -> str:
        reply = self.client.post(f"/IpamDriver.{call}", body)
        assert reply.status == 500, reply.body
        return reply.json["Err"]  # type: ignore[no-any-return]

    def release(self, pool_id: str, address: str) -> None:
        assert (
            self.client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address})
            == {}
        )

    def release_pool(self, pool_id: str) -> None:
        assert self.client.call("IpamDriver.ReleasePool", {"PoolID": pool_id}) == {}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def start(data: Path, **env: str) -> PoolIpam:
    return PoolIpam(str(data), PoolSettings.parse(env))


@pytest.fixture
def daemon(data: Path) -> Iterator[Daemon]:
    with PluginClient(start(data)) as client:
        yield Daemon(client)


def state(data: Path) -> dict[str, Any]:
    return json.loads((data / "state.json").read_text())  # type: ignore[no-any-return]


def test_a_network_without_a_subnet(daemon: Daemon, data: Path) -> None:
    assert daemon.pool() == {
        "PoolID": "LocalDefault/10.142.0.0/24",
        "Pool": "10.142.0.0/24",
        "Data": {},
    }
    pool_id = "LocalDefault/10.142.0.0/24"
    assert daemon.address(pool_id, options=GATEWAY) == "10.142.0.1/24"
    endpoint = {"com.docker.network.endpoint.name": "web"}
    assert daemon.address(pool_id, options=endpoint) == "10.142.0.2/24"
    assert state(data)["pools"][pool_id]["addresses"] == {
        "10.142.0.1": "gateway",
        "10.142.0.2": "web",
    }


def test_explicit_subnet_range_gateway_and_aux_addresses(daemon: Daemon, data: Path) -> None:
    # docker network create --subnet 10.9.0.0/24 --ip-range 10.9.0.128/25
    #   --gateway 10.9.0.1 --aux-address host=10.9.0.2
    pool = daemon.pool("10.9.0.0/24", "10.9.0.128/25")
    pool_id = "LocalDefault/10.9.0.0/24/10.9.0.128/25"
    assert pool == {"PoolID": pool_id, "Pool": "10.9.0.0/24", "Data": {}}
    assert daemon.address(pool_id, "10.9.0.1", GATEWAY) == "10.9.0.1/24"
    assert daemon.address(pool_id, "10.9.0.2") == "10.9.0.2/24"
    # Endpoints come from the range; --ip outside it but in the pool is honoured.
    assert daemon.address(pool_id) == "10.9.0.128/24"
    assert daemon.address(pool_id, "10.9.0.50") == "10.9.0.50/24"
    assert sorted(state(data)["pools"][pool_id]["addresses"]) == [
        "10.9.0.1",
        "10.9.0.128",
        "10.9.0.2",
        "10.9.0.50",
    ]


def test_a_gateway_without_an_address_is_the_first_free(daemon: Daemon) -> None:
    pool_id = daemon.pool("10.9.1.0/24")["PoolID"]
    assert daemon.address(pool_id, options=GATEWAY) == "10.9.1.1/24"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.9.2.0", "address 10.9.2.0 is the network or broadcast address of 10.9.2.0/24"),
        ("10.9.2.255", "address 10.9.2.255 is the network or broadcast address of 10.9.2.0/24"),
        ("10.9.3.4", "address 10.9.3.4 is not in pool 10.9.2.0/24"),
        ("10.9.2.1", "address 10.9.2.1 is already in use in pool 10.9.2.0/24"),
        ("10.9.2", "not an IP address: '10.9.2'"),
    ],
)
def test_exact_addresses_it_refuses(daemon: Daemon, address: str, message: str) -> None:
    pool_id = daemon.pool("10.9.2.0/24")["PoolID"]
    daemon.address(pool_id, "10.9.2.1")
    assert daemon.fails("RequestAddress", {"PoolID": pool_id, "Address": address}) == message


def test_pools_it_refuses(daemon: Daemon) -> None:
    daemon.pool("10.9.0.0/16")
    body = {"AddressSpace": SPACE, "Pool": "10.9.4.0/24"}
    assert daemon.fails("RequestPool", body) == (
        "pool 10.9.4.0/24 overlaps pool 10.9.0.0/16, which is in use (by another network?)"
    )
    assert daemon.fails("RequestPool", {"AddressSpace": SPACE, "SubPool": "10.1.0.0/24"}) == (
        "a sub-pool (10.1.0.0/24) needs a pool (--subnet) to be in"
    )
    body = {"AddressSpace": SPACE, "Pool": "10.8.0.0/24", "SubPool": "10.8.1.0/25"}
    assert (
        daemon.fails("RequestPool", body) == "sub-pool 10.8.1.0/25 is not inside pool 10.8.0.0/24"
    )
    assert daemon.fails("RequestPool", {"AddressSpace": SPACE, "Pool": "10.8.0.1/24"}) == (
        "invalid pool '10.8.0.1/24': 10.8.0.1/24 has host bits set"
    )
    assert daemon.fails("RequestAddress", {"PoolID": "LocalDefault/10.7.0.0/24"}) == (
        "no such pool: 'LocalDefault/10.7.0.0/24' (was it released?)"
    )


def test_an_overlap_is_answered_with_a_different_pool_each_time(daemon: Daemon) -> None:
    # The daemon keeps a pool that overlaps one of its networks and asks
    # again, releasing the rejected ones at the end.
    first = daemon.pool()["Pool"]
    second = daemon.pool()["Pool"]
    third = daemon.pool()["Pool"]
    assert (first, second, third) == ("10.142.0.0/24", "10.142.1.0/24", "10.142.2.0/24")
    daemon.release_pool("LocalDefault/10.142.0.0/24")
    assert daemon.pool()["Pool"] == "10.142.0.0/24"  # free again


def test_the_same_pool_is_counted_not_duplicated(daemon: Daemon, data: Path) -> None:
    pool_id = daemon.pool("10.9.5.0/24")["PoolID"]
    assert daemon.pool("10.9.5.0/24")["PoolID"] == pool_id
    assert state(data)["pools"][pool_id]["refs"] == 2
    daemon.release_pool(pool_id)
    assert state(data)["pools"][pool_id]["refs"] == 1
    daemon.release_pool(pool_id)
    assert state(data)["pools"] == {}


def test_releases_of_what_it_does_not_know_succeed(daemon: Daemon) -> None:
    # The first call after a restart may be a release.
    daemon.release("LocalDefault/10.1.0.0/24", "10.1.0.5")
    daemon.release_pool("LocalDefault/10.1.0.0/24")
    pool_id = daemon.pool("10.9.6.0/24")["PoolID"]
    daemon.release(pool_id, "10.9.6.77")
    assert daemon.fails("ReleaseAddress", {"PoolID": pool_id, "Address": "x"}) == (
        "not an IP address: 'x'"
    )


def test_a_released_address_is_handed_out_again(daemon: Daemon) -> None:
    pool_id = daemon.pool("10.9.7.0/24")["PoolID"]
    assert [daemon.address(pool_id) for _ in range(3)] == [
        "10.9.7.1/24",
        "10.9.7.2/24",
        "10.9.7.3/24",
    ]
    daemon.release(pool_id, "10.9.7.2")
    assert daemon.address(pool_id) == "10.9.7.2/24"


def test_an_exhausted_pool_says_so(daemon: Daemon) -> None:
    pool_id = daemon.pool("10.9.8.0/30")["PoolID"]
    assert [daemon.address(pool_id) for _ in range(2)] == ["10.9.8.1/30", "10.9.8.2/30"]
    assert daemon.fails("RequestAddress", {"PoolID": pool_id}) == (
        "pool 10.9.8.0/30 is exhausted: all 2 addresses are in use"
    )
    ranged = daemon.pool("10.9.9.0/24", "10.9.9.8/31")["PoolID"]
    daemon.address(ranged)
    daemon.address(ranged)
    assert daemon.fails("RequestAddress", {"PoolID": ranged}) == (
        "range 10.9.9.8/31 of pool 10.9.9.0/24 is exhausted: no free address left"
    )


def test_no_free_pool_left(data: Path) -> None:
    with PluginClient(start(data, POOLS="10.150.0.0/23", POOL_SIZE="24")) as client:
        daemon = Daemon(client)
        assert [daemon.pool()["Pool"] for _ in range(2)] == ["10.150.0.0/24", "10.150.1.0/24"]
        assert daemon.fails("RequestPool", {"AddressSpace": SPACE}) == (
            "no free /24 IPv4 pool left in 10.150.0.0/23 (2 in use): widen POOLS with docker "
            "plugin set, or remove unused networks"
        )


def test_ipv6_pools_and_addresses(daemon: Daemon) -> None:
    pool = daemon.pool(v6=True)
    assert pool == {"PoolID": "LocalDefault/fd42:d0c:1::/64", "Pool": "fd42:d0c:1::/64", "Data": {}}
    assert daemon.address(pool["PoolID"], options=GATEWAY) == "fd42:d0c:1::1/64"
    assert daemon.address(pool["PoolID"]) == "fd42:d0c:1::2/64"
    assert daemon.pool(v6=True)["Pool"] == "fd42:d0c:1:1::/64"


def test_a_restart_loses_nothing_and_never_hands_out_twice(data: Path) -> None:
    with PluginClient(start(data)) as client:
        daemon = Daemon(client)
        pool_id = daemon.pool()["PoolID"]
        given = [daemon.address(pool_id) for _ in range(3)]
    with PluginClient(start(data)) as client:  # the plugin restarted
        daemon = Daemon(client)
        after = daemon.address(pool_id)
        assert after not in given
        assert daemon.pool()["Pool"] == "10.142.1.0/24"  # the first is still held
        for address in given:
            daemon.release(pool_id, address.split("/")[0])
    assert sorted(state(data)["pools"][pool_id]["addresses"]) == ["10.142.0.4"]


def test_a_failed_write_hands_out_nothing(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = start(data)
    with PluginClient(driver) as client:
        daemon = Daemon(client)
        pool_id = daemon.pool("10.9.10.0/24")["PoolID"]

        def full(data: dict[str, Any]) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(driver.state, "save", full)
        assert daemon.fails("RequestAddress", {"PoolID": pool_id}) == (
            "cannot save the IPAM state (No space left on device); nothing was changed"
        )
        assert daemon.fails("RequestPool", {"AddressSpace": SPACE}) == (
            "cannot save the IPAM state (No space left on device); nothing was changed"
        )
        monkeypatch.undo()
        assert daemon.address(pool_id) == "10.9.10.1/24"
        assert daemon.pool()["Pool"] == "10.142.0.0/24"


def test_concurrent_requests_never_share_an_address(data: Path) -> None:
    driver = start(data)
    with PluginClient(driver) as client:
        pool_id = Daemon(client).pool("10.9.11.0/24")["PoolID"]
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        with PluginClient(driver) as client:
            try:
                for _ in range(5):
                    results.append(Daemon(client).address(pool_id))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 40 and len(set(results)) == 40
    assert len(state(data)["pools"][pool_id]["addresses"]) == 40


def _fix(name: str) -> str:
    return f"change it with docker plugin set PLUGIN {name}=VALUE"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"POOLS": "10.0.0.0/33"},
            'bad setting POOLS="10.0.0.0/33": not comma-separated IPv4 networks (CIDR, such as '
            f"10.142.0.0/16,10.143.0.0/16); {_fix('POOLS')}",
        ),
        (
            {"POOLS": "10.142.0.0/16,fd00::/48"},
            'bad setting POOLS="10.142.0.0/16,fd00::/48": not comma-separated IPv4 networks '
            f"(CIDR, such as 10.142.0.0/16,10.143.0.0/16); {_fix('POOLS')}",
        ),
        (
            {"POOLS": " , "},
            'bad setting POOLS=" , ": not comma-separated IPv4 networks (CIDR, such as '
            f"10.142.0.0/16,10.143.0.0/16); {_fix('POOLS')}",
        ),
        (
            {"POOL_SIZE": "big"},
            f'bad setting POOL_SIZE="big": not an integer from 1 to 32; {_fix("POOL_SIZE")}',
        ),
        (
            {"POOL_SIZE": "8"},
            "bad setting POOL_SIZE=8: pools of /8 do not fit in 10.142.0.0/16 (POOLS); "
            + _fix("POOL_SIZE"),
        ),
        (
            {"POOLS_V6": "fd42::/48", "POOL_SIZE_V6": "129"},
            f'bad setting POOL_SIZE_V6="129": not an integer from 1 to 128; {_fix("POOL_SIZE_V6")}',
        ),
    ],
)
def test_bad_settings_stop_the_start(env: dict[str, str], message: str) -> None:
    # What `python -m plugin` checks before it makes any driver: it prints
    # "plugin: cannot start: <message>" and exits 1.
    with pytest.raises(SettingsError) as info:
        check_settings([PoolIpam], env)
    assert str(info.value) == message


def test_every_bad_setting_is_named_at_once() -> None:
    env = {"POOLS": "10.1.0.0/16,10.2.0.0/20", "POOL_SIZE": "18", "POOL_SIZE_V6": "40"}
    with pytest.raises(SettingsError) as info:
        check_settings([PoolIpam], env)
    assert info.value.problems == [
        "bad setting POOL_SIZE=18: pools of /18 do not fit in 10.2.0.0/20 (POOLS); "
        + _fix("POOL_SIZE"),
        "bad setting POOL_SIZE_V6=40: pools of /40 do not fit in fd42:d0c:1::/48 (POOLS_V6); "
        + _fix("POOL_SIZE_V6"),
    ]


def test_the_settings_render_their_config_entries() -> None:
    assert [(e.name, e.value) for e in PoolIpam.settings.env()] == [  # type: ignore[union-attr]
        ("POOLS", "10.142.0.0/16"),
        ("POOL_SIZE", "24"),
        ("POOLS_V6", "fd42:d0c:1::/48"),
        ("POOL_SIZE_V6", "64"),
    ]
    config = PoolSettings.parse({"POOLS": " 10.1.0.0/16, 10.2.0.0/16 ", "POOL_SIZE": "20"})
    assert [str(n) for n in config.pools] == ["10.1.0.0/16", "10.2.0.0/16"]
    assert config.pool_size == 20


def test_a_damaged_state_file_stops_the_start_untouched(data: Path) -> None:
    data.mkdir()
    (data / "state.json").write_text('{"version": 1, "pools": {"p": {"pool": "x"}}}')
    with pytest.raises(StateError) as info:
        start(data)
    assert str(info.value) == (
        f"{data}/state.json: pool 'p': 'x' does not appear to be an IPv4 or IPv6 network; "
        "it was left untouched: repair or remove it"
    )
    (data / "state.json").write_text('{"version": 9}')
    with pytest.raises(StateError) as info:
        start(data)
    assert str(info.value) == (
        f"{data}/state.json: unsupported state version 9 (this plugin reads version 1); "
        "it was left untouched"
    )
    (data / ".state.json.abc.tmp").write_text("half a write")
    (data / "state.json").write_text('{"version": 1, "pools": {}}')
    start(data)
    assert sorted(p.name for p in data.iterdir()) == ["state.json"]
