"""Hostile input against every endpoint of every plugin type the SDK serves.

Targets, built from what the SDK declares so that a new plugin type is fuzzed
as soon as it lands: every driver type (a ``Driver`` subclass in ``plugin.*``
with its own endpoint table) gets a plain and an async fake driver that answer
each call with a valid response, fail when asked (a body mentioning "fail"), or
crash with an exception whose text is a traceback full of paths (a body
mentioning "boom"); and every reference driver, which must never crash at all.

Each case is one HTTP request: bodies from hypothesis (random JSON, the right
shape with wrong types, nulls, huge numbers and strings, unicode, invalid
UTF-8, deep nesting) and a hand-written corpus (big bodies, malformed JSON,
unknown endpoints and methods). Every answer must be a JSON object, non-200
ones with a non-empty ``Err``; the status must fit the path and method; no
traceback or internal path may leak; the app must answer a normal call
afterwards. A smaller batch goes over a real ``python -m plugin`` socket as raw
bytes, malformed HTTP included, and the process must stay up.

The number of cases tried is printed in the run's summary (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import functools
import importlib
import json
import os
import pkgutil
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bridgenet import BridgeNetworks
from bridgenet.host import MemoryHost
from filelog.driver import FileLogs
from filesecrets.driver import FileSecrets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from localvol.driver import LocalVolumes
from metricsexport.driver import MetricsExport
from policyauthz.driver import PolicyAuthz
from poolipam import PoolIpam
from poolipam.driver import PoolSettings

import plugin
from plugin import Driver, Endpoint, PluginError, ipam, network
from plugin._logwire import LogEntry, decode_frames
from plugin._wire import MAX_BODY, Model
from plugin.bundle import load_project
from plugin.bundle._rootfs import load_drivers
from plugin.testing import PluginClient, Reply

from ..conftest import PYTHONPATH

if typing.TYPE_CHECKING:
    from ..conftest import Tally

ROOT = Path(__file__).resolve().parents[2]
#: What must never reach the daemon (unless the request itself said it).
LEAKS = ("Traceback", 'File "', "/work", "site-packages", "/root/", str(ROOT))
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one driver (and its state) per test, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --- the targets --------------------------------------------------------------------------


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _import_all(package: types.ModuleType, skip: tuple[str, ...] = ()) -> None:
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if not info.name.startswith(skip):
            importlib.import_module(info.name)


@functools.cache
def driver_types() -> list[type[Driver]]:
    """Every plugin type of the SDK: a Driver subclass with its own endpoint table
    (looked up once: every case makes its target from it)."""
    _import_all(plugin, skip=("plugin.bundle",))
    found = {
        cls
        for cls in _subclasses(Driver)
        if "endpoints" in cls.__dict__ and cls.__module__.startswith("plugin.")
    }
    return sorted(found, key=lambda cls: cls.__name__)


@functools.cache
def reference_drivers() -> list[type[Driver]]:
    """Every driver the reference projects (reference/*/plugin.toml) serve (read
    once: every case makes its target from it)."""
    found = {
        cls
        for toml in sorted(ROOT.glob("reference/*/plugin.toml"))
        for cls in load_drivers(load_project(toml))
    }
    return sorted(found, key=lambda cls: cls.__name__)


def _policyauthz(root: Path) -> Driver:
    """policyauthz with a policy that uses every rule and a user of its own."""
    policy = root / "policy"
    policy.mkdir(parents=True)
    (policy / "policy.yaml").write_text(
        "version: 1\ndefault: allow\nhost_mount_allow: [/srv]\nself: [policyauthz]\n"
        "rules: {exec: deny}\nusers: {boom: {default: deny}}\n"
    )
    return PolicyAuthz(str(policy), own_id="ab" * 32)


def _filesecrets(root: Path) -> Driver:
    """filesecrets with a secret named like the names the fuzz bodies use."""
    secrets = root / "secrets"
    (secrets / "db").mkdir(parents=True)
    for name in ("v1", "fuzz", "boom", "db/password"):
        (secrets / name).write_text("s3cret")
    return FileSecrets(str(secrets))


#: What the factory of a read-only reference driver writes in its directory.
FACTORY_FILES: dict[type[Driver], list[str]] = {PolicyAuthz: ["policy"], FileSecrets: ["secrets"]}

#: How each reference driver is made in a scratch directory (without mounts).
REFERENCE_FACTORIES: dict[type[Driver], Callable[[Path], Driver]] = {
    LocalVolumes: lambda root: LocalVolumes(str(root / "data"), str(root / "mnt"), bind=False),
    PolicyAuthz: _policyauthz,
    FileSecrets: _filesecrets,
    PoolIpam: lambda root: PoolIpam(str(root / "data"), PoolSettings.parse({})),
    BridgeNetworks: lambda root: BridgeNetworks(str(root / "data"), MemoryHost()),
    FileLogs: lambda root: FileLogs(str(root / "logs")),
    # Port 0: any free port on loopback, when a body starts it.
    MetricsExport: lambda root: MetricsExport("127.0.0.1", 0, str(root / "metrics.sock")),
}


#: Response models whose fields have a form of their own (CIDR, a plain IP):
#: a valid instance of each.
SAMPLES: dict[type[Model], Callable[[], Model]] = {
    ipam.RequestPoolResponse: lambda: ipam.RequestPoolResponse("pool-1", "10.9.0.0/24"),
    ipam.RequestAddressResponse: lambda: ipam.RequestAddressResponse("10.9.0.5/24"),
    network.JoinResponse: lambda: network.JoinResponse(
        network.InterfaceName("veth0", "eth"),
        gateway="10.9.0.1",
        static_routes=[network.StaticRoute("10.8.0.0/16", next_hop="10.9.0.1")],
    ),
    network.CreateEndpointResponse: lambda: network.CreateEndpointResponse(
        network.EndpointInterface(mac_address="02:42:0a:09:00:05")
    ),
}


def sample(model: type[Model]) -> Model:
    """A valid instance of a response model: every required field filled."""
    if model in SAMPLES:
        return SAMPLES[model]()
    hints = typing.get_type_hints(model)
    kwargs = {
        f.name: _sample_value(hints[f.name])
        for f in dataclasses.fields(model)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return model(**kwargs)


def _sample_value(tp: Any) -> Any:
    simple = {str: "fuzz", bool: False, int: 0, float: 0.0, bytes: b"", Any: None}
    if tp in simple:
        return simple[tp]
    if tp is datetime.datetime:
        return datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)
    if isinstance(tp, type) and issubclass(tp, Model):
        return sample(tp)
    origin = typing.get_origin(tp)
    if origin in (list, dict):
        return origin()
    if origin in (typing.Union, types.UnionType):
        return None
    raise TypeError(f"no sample for {tp!r}")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Model):
        for f in dataclasses.fields(value):  # type: ignore[arg-type]
            yield from _strings(getattr(value, f.name))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


CRASH = f'Traceback (most recent call last):\n  File "{ROOT}/plugin/x.py", line 1\nboom'


#: What a fake yields for a call answered with a stream (LogDriver.ReadLogs).
STREAMED = [LogEntry("stdout", 1, b"fuzz"), LogEntry("stderr", 2, b"")]


def _answer(endpoint: Endpoint, req: Any) -> Any:
    text = " ".join(_strings(req))
    if "boom" in text:
        raise RuntimeError(CRASH + " " + sys.prefix + "/site-packages")
    if "fail" in text:
        raise PluginError("failed as asked")
    if endpoint.stream is not None:
        return iter(STREAMED)
    return None if endpoint.response is None else sample(endpoint.response)


def fake_driver(kind: type[Driver], *, is_async: bool) -> Driver:
    """A driver of type ``kind`` implementing every call of its table."""
    namespace: dict[str, Any] = {}
    for endpoint in kind.endpoints:

        def make(endpoint: Endpoint = endpoint) -> Callable[..., Any]:
            if is_async:

                async def call_async(self: Any, req: Any = None) -> Any:
                    await asyncio.sleep(0)
                    return _answer(endpoint, req)

                return call_async

            def call(self: Any, req: Any = None) -> Any:
                return _answer(endpoint, req)

            return call

        namespace[endpoint.method] = make()
    prefix = "Async" if is_async else "Plain"
    cls = type(f"{prefix}Fuzz{kind.__name__}", (kind,), namespace)
    return typing.cast(Driver, cls())


@dataclass
class Target:
    """One app under fuzz, and what its answers must look like."""

    name: str
    drivers: tuple[Driver, ...]
    #: A reference driver: no crash ("unexpected ... (see its log)") is allowed.
    strict: bool
    root: Path | None = None

    def routes(self) -> dict[str, tuple[Driver, Endpoint]]:
        return {
            f"/{d.prefix}.{ep.name}": (d, ep)
            for d in self.drivers
            for ep in d.endpoints
            if d.handler_for(ep) is not None
        }


TARGETS = ["plain fakes", "async fakes", *(cls.__name__ for cls in reference_drivers())]


def make_target(name: str, root: Path) -> Target:
    if name in ("plain fakes", "async fakes"):
        drivers = tuple(fake_driver(k, is_async=name == "async fakes") for k in driver_types())
        return Target(name, drivers, strict=False)
    cls = next(c for c in reference_drivers() if c.__name__ == name)
    return Target(name, (REFERENCE_FACTORIES[cls](root),), strict=True, root=root)


# --- what every answer must be ------------------------------------------------------------


def expected_statuses(target: Target, method: str, path: str) -> set[int]:
    routes = target.routes()
    if path == "/Plugin.Activate" or path in routes:
        if method != "POST":
            return {405}
        return {200} if path == "/Plugin.Activate" else {200, 400, 500}
    return {404}


def check(target: Target, method: str, path: str, body: bytes, reply: Reply) -> None:
    sent = path + body.decode("utf-8", errors="replace")
    shown = f"{method} {path} {body[:200]!r} -> {reply.status} {reply.body[:300]!r}"
    assert reply.status in expected_statuses(target, method, path), shown
    route = target.routes().get(path)
    if reply.status == 200 and route is not None and route[1].stream is not None:
        # A stream of framed entries, not JSON.
        entries, end = decode_frames(reply.body)
        assert end == len(reply.body), shown
        if not target.strict:
            # Each line gets the newline the daemon prints.
            assert entries == [LogEntry(e.source, e.time_nano, e.line + b"\n") for e in STREAMED]
    else:
        try:
            answer = json.loads(reply.body)
        except ValueError:
            raise AssertionError(f"not JSON: {shown}") from None
        assert isinstance(answer, dict), shown
        if reply.status != 200:
            assert isinstance(answer.get("Err"), str) and answer["Err"].strip(), shown
            if target.strict:
                assert "(see its log)" not in answer["Err"], (
                    f"the reference driver crashed: {shown}"
                )
        elif route is not None:
            endpoint = route[1]
            if endpoint.response is None:
                assert answer == {}, shown
            else:
                endpoint.response.from_wire(answer)  # the daemon could decode it
    text = reply.body.decode("utf-8", errors="replace")
    for leak in LEAKS:
        if leak not in sent:
            assert leak not in text, f"{leak!r} leaked: {shown}"


def still_answers(client: PluginClient, target: Target) -> None:
    activate = client.post("/Plugin.Activate")
    assert activate.status == 200
    assert activate.json == {"Implements": [d.implements for d in target.drivers]}
    for path, (_, endpoint) in target.routes().items():
        if endpoint.request is None:
            assert client.post(path, {}).status == 200, path
            break


def consistent(target: Target, client: PluginClient) -> None:
    """A reference driver's memory, state file and disk agree, and nothing
    was written outside its directories."""
    if target.root is None:
        return
    if isinstance(target.drivers[0], PoolIpam):
        # What a restarted plugin would read is what the running one holds.
        assert os.listdir(target.root) == ["data"]
        assert sorted(os.listdir(target.root / "data")) == ["state.json"]
        again = PoolIpam(str(target.root / "data"), PoolSettings.parse({}))
        assert again._pools == target.drivers[0]._pools
        return
    if isinstance(target.drivers[0], FileLogs):
        # No FIFO exists: nothing was started, nothing written.
        assert os.listdir(target.root) in ([], ["logs"])
        assert not (target.root / "logs").exists() or os.listdir(target.root / "logs") == []
        return
    if isinstance(target.drivers[0], MetricsExport):
        # Serving or not, it stops serving when told.
        assert client.call("MetricsCollector.StopMetrics") == {}
        assert target.drivers[0].bound is None
        assert os.listdir(target.root) == []
        return
    if isinstance(target.drivers[0], BridgeNetworks):
        # The host holds exactly what the state says, and a restart changes nothing.
        driver = target.drivers[0]
        host = driver.host
        assert isinstance(host, MemoryHost)
        bridges = sorted(n["bridge"] for n in driver._networks.values())
        assert sorted(host.bridges) == bridges == sorted(host.rules)
        veths = sorted(
            e["veth"]
            for n in driver._networks.values()
            for e in n["endpoints"].values()
            if e["veth"]
        )
        assert sorted(host.veths) == veths
        before = (dict(host.bridges), dict(host.veths))
        again = BridgeNetworks(str(target.root / "data"), host)
        assert again._networks == driver._networks
        assert (host.bridges, host.veths) == before
        return
    if not isinstance(target.drivers[0], LocalVolumes):
        # The other reference drivers only read what their factory wrote.
        assert sorted(os.listdir(target.root)) == sorted(FACTORY_FILES[type(target.drivers[0])])
        return
    assert sorted(os.listdir(target.root)) in (["data"], ["data", "mnt"])
    data = target.root / "data"
    listed = [v["Name"] for v in client.call("VolumeDriver.List", {})["Volumes"]]
    state = json.loads((data / "state.json").read_text())
    assert sorted(state["volumes"]) == listed
    assert sorted(os.listdir(data / "volumes")) == listed
    assert os.listdir(data / "trash") == []
    assert sorted(os.listdir(data)) == ["state.json", "trash", "volumes"]


# --- generated requests --------------------------------------------------------------------

HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "/etc",
    "v1/../../x",
    "a\x00b",
    "-rf",
    "a\n",
    "\uff41",  # fullwidth a
    "v\u200b",  # a zero-width space
    "$(id)",
    "a" * 256,
    "x" * 100_000,
]
NAMES = st.one_of(
    st.sampled_from(["v1", "v2", "v3", "boom", "fail", "a" * 255, *HOSTILE_NAMES]),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,16}\Z"),
    st.text(max_size=20),
)
#: Strings in the forms network and IPAM calls carry (Docker IDs, addresses,
#: pools, pool IDs, MACs), those fresh() makes among them, so that bodies get
#: past the drivers' first checks to the work behind them.
FORMS = st.one_of(
    st.sampled_from(
        [
            "1" * 64,
            "a" * 64,
            "LocalDefault",
            "LocalDefault/10.9.0.0/24",
            "10.9.0.0/24",
            "10.9.0.128/25",
            "10.9.0.1",
            "10.9.0.5",
            "10.9.0.5/24",
            "10.9.0.1/24",
            "10.9.0.255",
            "fd00::/64",
            "fd00::5/64",
            "02:42:0a:09:00:05",
            "/var/run/docker/netns/x",
        ]
    ),
    st.from_regex(r"\A[0-9a-f]{64}\Z"),
    st.ip_addresses().map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 33)).map(lambda t: f"{t[0]}/{t[1]}"),
)
OPTION_VALUES = st.one_of(
    st.sampled_from(
        ["0", "1000", "0750", "7777", "-1", "4294967295", "", "0x10", "1e3", "9", "1400", "bn-x"]
    ),
    st.sampled_from(["com.docker.network.gateway", "c1"]),
    st.text(max_size=12),
)
OPTIONS = st.dictionaries(
    st.one_of(
        st.sampled_from(["uid", "gid", "mode", "size", "UID", "boom"]),
        st.sampled_from(["mtu", "bridge_name", "RequestAddressType"]),
        st.sampled_from([ipam.MAC_ADDRESS, "com.docker.network.endpoint.name"]),
        st.text(max_size=8),
    ),
    OPTION_VALUES,
    max_size=4,
)
#: Keys of the network calls' Options (any values: the driver options among them).
NETWORK_OPTIONS = st.sampled_from([network.GENERIC, network.ENABLE_IPV6, network.INTERNAL])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and Infinity too: not JSON, and Python's parser takes them
    st.text(max_size=40),
    NAMES,
)


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
        max_leaves=8,
    )


def typed(tp: Any, keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Values of the field's own type, hostile ones included."""
    if tp is str:
        return NAMES | FORMS
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers()
    if tp is float:
        return st.floats()
    if tp is bytes:
        return st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()) | st.text()
    if tp is datetime.datetime:
        return st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=30)
    if isinstance(tp, type) and issubclass(tp, Model):
        return shaped(tp, keys)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return st.none() | typed(inner[0], keys)
    if origin is list:
        return st.lists(typed(args[0], keys), max_size=4)
    if origin is dict:
        if args == (str, str):
            return OPTIONS
        values = OPTIONS | st.booleans() | json_values(keys)
        return st.dictionaries(NETWORK_OPTIONS | st.text(), values, max_size=4)
    return json_values(keys)


def shaped(
    model: type[Model], keys: st.SearchStrategy[str], *, loose: bool = False
) -> st.SearchStrategy[Any]:
    """An object with every wire key of the model, each of its own type (with
    hostile values); ``loose``: each key may be missing or of any type."""
    hints = typing.get_type_hints(model)
    fields = {
        f.metadata["wire"]: typed(hints[f.name], keys)
        for f in dataclasses.fields(model)  # type: ignore[arg-type]
    }
    if loose:
        objects = st.fixed_dictionaries(
            {}, optional={k: v | json_values(keys) for k, v in fields.items()}
        )
    else:
        objects = st.fixed_dictionaries(fields)
    extra = st.dictionaries(keys, json_values(keys), max_size=2)
    return st.tuples(objects, extra).map(lambda pair: {**pair[1], **pair[0]})


def _wire_keys(target: Target) -> st.SearchStrategy[str]:
    names: set[str] = set()
    for d in target.drivers:
        for ep in d.endpoints:
            for model in (ep.request, ep.response):
                if model is not None:
                    names.update(f.metadata["wire"] for f in dataclasses.fields(model))  # type: ignore[arg-type]
    # A target whose calls all have empty bodies (metrics) has no wire key.
    known = st.sampled_from(sorted(names)) if names else st.nothing()
    return known | st.text(max_size=10)


def _encode(value: Any, ascii_only: bool, newline: bytes) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", errors="surrogatepass") + newline


def _mutate(raw: bytes, at: int, patch: bytes, cut: int) -> bytes:
    at %= len(raw) or 1
    return raw[:at] + patch + raw[at + cut :]


def _deep(depth: int, brackets: tuple[str, str]) -> bytes:
    opener, closer = brackets
    return (opener * depth + "1" + closer * depth).encode()


def _weighted(strategy: st.SearchStrategy[Any], weight: int) -> list[st.SearchStrategy[Any]]:
    # one_of() drops repeated strategies: distinct (identity) copies count.
    return [strategy.map(lambda x: x) for _ in range(weight)]


#: Valid requests (on the state fresh() makes), per call: near_valid() changes
#: a few of their fields, so that fuzz cases reach the work behind a call's
#: checks (a random ID never names a network the driver has).
_IDS = {"NetworkID": "1" * 64, "EndpointID": "a" * 64}
_POOL_ID = "LocalDefault/10.9.0.0/24"
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "/NetworkDriver.CreateNetwork": [
        {
            "NetworkID": "2" * 64,
            "Options": {network.GENERIC: {"mtu": "1400"}, network.ENABLE_IPV6: True},
            "IPv4Data": [
                {"AddressSpace": "LocalDefault", "Pool": "10.8.0.0/24", "Gateway": "10.8.0.1/24"}
            ],
            "IPv6Data": [{"AddressSpace": "LocalDefault", "Pool": "fd00::/64"}],
        },
    ],
    "/NetworkDriver.DeleteNetwork": [{"NetworkID": "1" * 64}, {"NetworkID": "2" * 64}],
    "/NetworkDriver.CreateEndpoint": [
        {
            "NetworkID": "1" * 64,
            "EndpointID": "b" * 64,
            "Interface": {"Address": "10.9.0.6/24", "AddressIPv6": "", "MacAddress": ""},
        },
    ],
    "/NetworkDriver.DeleteEndpoint": [_IDS, {**_IDS, "EndpointID": "b" * 64}],
    "/NetworkDriver.Join": [
        {**_IDS, "SandboxKey": "/var/run/docker/netns/x"},
        {**_IDS, "EndpointID": "b" * 64, "SandboxKey": "/var/run/docker/netns/y"},
    ],
    "/NetworkDriver.Leave": [_IDS, {**_IDS, "EndpointID": "b" * 64}],
    "/NetworkDriver.EndpointOperInfo": [_IDS],
    "/NetworkDriver.AllocateNetwork": [{"NetworkID": "2" * 64, "Options": {"k": "v"}}],
    "/NetworkDriver.DiscoverNew": [{"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.2"}}],
    "/IpamDriver.RequestPool": [
        {"AddressSpace": "LocalDefault", "Pool": "", "SubPool": "", "V6": False},
        {"AddressSpace": "LocalDefault", "Pool": "", "V6": True},
        {"AddressSpace": "LocalDefault", "Pool": "10.8.0.0/24", "SubPool": "10.8.0.128/25"},
        {"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24"},
    ],
    "/IpamDriver.ReleasePool": [{"PoolID": _POOL_ID}],
    "/IpamDriver.RequestAddress": [
        {"PoolID": _POOL_ID, "Address": ""},
        {"PoolID": _POOL_ID, "Address": "10.9.0.9"},
        {"PoolID": _POOL_ID, "Options": {ipam.REQUEST_ADDRESS_TYPE: ipam.GATEWAY}},
    ],
    "/IpamDriver.ReleaseAddress": [
        {"PoolID": _POOL_ID, "Address": "10.9.0.1"},
        {"PoolID": _POOL_ID, "Address": "10.9.0.9"},
    ],
}
_DROP = object()


def near_valid(
    request: type[Model], examples: list[dict[str, Any]], keys: st.SearchStrategy[str]
) -> st.SearchStrategy[Any]:
    """One of ``examples`` as it is, or with a field (or several) replaced
    by a hostile value of its type, or left out."""
    hints = typing.get_type_hints(request)
    fields = {
        f.metadata["wire"]: typed(hints[f.name], keys) | st.just(_DROP)
        for f in dataclasses.fields(request)  # type: ignore[arg-type]
    }
    changes = st.one_of(
        _weighted(st.just({}), 3)
        + [st.fixed_dictionaries({key: value}) for key, value in fields.items()]
        + [st.fixed_dictionaries({}, optional=fields)]
    )

    def apply(pair: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        example, change = pair
        out = {**example, **change}
        return {k: v for k, v in out.items() if v is not _DROP}

    return st.tuples(st.sampled_from(examples), changes).map(apply)


def bodies(
    request: type[Model] | None, keys: st.SearchStrategy[str], path: str = ""
) -> st.SearchStrategy[bytes]:
    """Request bodies for an endpoint taking ``request``: mostly of its shape
    (with hostile values; near one of its EXAMPLES when it has some), else
    anything. Built once per endpoint: making strategies while drawing is
    what makes hypothesis slow."""
    anything = json_values(keys)
    variants = st.booleans(), st.sampled_from([b"", b"\n"])
    encoded = st.tuples(anything, *variants).map(lambda t: _encode(*t))
    branches = _weighted(encoded, 2)
    if request is not None:
        typed_ = st.tuples(shaped(request, keys), *variants).map(lambda t: _encode(*t))
        loose = st.tuples(shaped(request, keys, loose=True), *variants).map(lambda t: _encode(*t))
        branches = _weighted(typed_, 8) + _weighted(loose, 4) + branches
        if path in EXAMPLES:
            near = near_valid(request, EXAMPLES[path], keys)
            branches += _weighted(st.tuples(near, *variants).map(lambda t: _encode(*t)), 16)
        encoded = typed_ | encoded
    mutated = st.tuples(
        encoded, st.integers(0, 10**6), st.binary(max_size=4), st.integers(0, 4)
    ).map(lambda t: _mutate(*t))
    brackets = st.sampled_from([("[", "]"), ('{"Name":', "}"), ('{"Opts":', "}")])
    deep = st.tuples(st.integers(1, 5000), brackets).map(lambda t: _deep(*t))
    # Over Python's limit for parsing integers (4300 digits); kept as text,
    # since hypothesis itself cannot print such a number.
    bignum = st.tuples(keys, st.integers(4000, 6000)).map(
        lambda t: b'{"%s": %s}' % (t[0].encode(), b"9" * t[1])
    )
    branches += _weighted(st.binary(max_size=200), 2) + _weighted(mutated, 2) + [deep, bignum]
    return st.one_of(branches)


def other_requests(target: Target) -> st.SearchStrategy[tuple[str, str, bytes]]:
    """(method, path, body) for Activate, unknown paths and other methods."""
    routes = target.routes()
    anybody = bodies(None, _wire_keys(target))
    known = sorted(routes)
    unknown_path = st.one_of(
        st.sampled_from([p + "/" for p in known] + [p.lower() for p in known]),
        st.sampled_from(["/", "//", "/VolumeDriver.", "/Plugin.Deactivate", "/x" * 500]),
        st.text(st.characters(codec="utf-8"), max_size=40).map(lambda s: "/" + s),
    )
    unknown = st.tuples(st.sampled_from(["POST", "POST", "GET", "PUT"]), unknown_path, anybody)
    other_method = st.tuples(
        st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        st.sampled_from([*known, "/Plugin.Activate"]),
        anybody,
    )
    activate = anybody.map(lambda b: ("POST", "/Plugin.Activate", b))
    return st.one_of(activate, unknown, other_method)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # In memory when there is /dev/shm: localvol fsyncs every commit.
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="dpk-fuzz-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_every_type_and_reference_driver_is_a_target() -> None:
    kinds = driver_types()
    assert kinds, "no driver type found in plugin.*"
    assert {"VolumeDriver", "NetworkDriver", "IpamDriver"} <= {k.__name__ for k in kinds}
    # A new reference driver needs a way to be made here.
    assert set(reference_drivers()) == set(REFERENCE_FACTORIES)


@pytest.mark.parametrize("kind", driver_types(), ids=lambda k: k.__name__)
def test_the_fakes_answer_every_call(kind: type[Driver]) -> None:
    """Each fake answers a well-formed request with 200 and a response the
    daemon can decode, so the fuzz cases reach the success path too."""
    with PluginClient(fake_driver(kind, is_async=False)) as client:
        for endpoint in kind.endpoints:
            body = None
            if endpoint.request is not None:
                body = {
                    f.metadata["wire"]: "x"
                    for f in dataclasses.fields(endpoint.request)  # type: ignore[arg-type]
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                }
            reply = client.post(f"/{kind.prefix}.{endpoint.name}", body)
            assert reply.status == 200, (endpoint.name, reply.body)
            if endpoint.response is not None:
                endpoint.response.from_wire(reply.json)


def _endpoint_params() -> list[tuple[str, str]]:
    """(target, path) for every endpoint of every target."""
    params = []
    for kind in driver_types():
        for name in ("plain fakes", "async fakes"):
            params += [(name, f"/{kind.prefix}.{ep.name}") for ep in kind.endpoints]
    for cls in reference_drivers():
        params += [
            (cls.__name__, f"/{cls.prefix}.{ep.name}")
            for ep in cls.endpoints
            # An optional call a driver leaves out answers 404 (fuzzed with the paths).
            if not getattr(getattr(cls, ep.method), "__plugin_optional__", False)
        ]
    return params


SHARED_CHECKS = {"BridgeNetworks", "PoolIpam"}
FUZZ_NETWORK = {
    "NetworkID": "1" * 64,
    "Options": {"com.docker.network.generic": {"mtu": "1400"}},
    "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24"}],
}


def fresh(name: str, scratch: Path) -> Target:
    """A target in a directory of its own; a reference volume driver starts
    with volume v1 (mounted once) and v2, for calls on them to do real work."""
    target = make_target(name, Path(tempfile.mkdtemp(dir=scratch)))
    if isinstance(target.drivers[0], LocalVolumes):
        with PluginClient(*target.drivers) as client:
            client.call("VolumeDriver.Create", {"Name": "v1", "Opts": {"mode": "0700"}})
            client.call("VolumeDriver.Mount", {"Name": "v1", "ID": "a" * 64})
            client.call("VolumeDriver.Create", {"Name": "v2"})
    if isinstance(target.drivers[0], BridgeNetworks):
        with PluginClient(*target.drivers) as client:
            client.call("NetworkDriver.CreateNetwork", FUZZ_NETWORK)
            ids = {"NetworkID": "1" * 64, "EndpointID": "a" * 64}
            client.call(
                "NetworkDriver.CreateEndpoint", {**ids, "Interface": {"Address": "10.9.0.5/24"}}
            )
            client.call("NetworkDriver.Join", ids)
    if isinstance(target.drivers[0], PoolIpam):
        with PluginClient(*target.drivers) as client:
            pool = {"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24"}
            pool_id = client.call("IpamDriver.RequestPool", pool)["PoolID"]
            client.call("IpamDriver.RequestAddress", {"PoolID": pool_id})
    return target


def send_all(target: Target, requests: list[tuple[str, str, bytes]]) -> None:
    with PluginClient(*target.drivers) as client:
        for method, path, body in requests:
            check(target, method, path, body, client.post(path, body, method=method))
        still_answers(client, target)
        consistent(target, client)
    if target.root is not None:
        shutil.rmtree(target.root)


@pytest.mark.parametrize(("name", "path"), _endpoint_params())
def test_generated_bodies(name: str, path: str, scratch: Path, tally: Tally) -> None:
    shape = make_target(name, scratch / "shape")
    _, endpoint = shape.routes()[path]
    tried = 0

    # The fakes share their code but for plain/async: half as many each. The
    # network and IPAM reference drivers have many calls that share their
    # checks (IDs, then state): a third as many each keeps the suite's time.
    share = 2 if shape.root is None else 3 if name in SHARED_CHECKS else 1

    @settings(FUZZ, max_examples=FUZZ.max_examples // share)
    @given(body=bodies(endpoint.request, _wire_keys(shape), path))
    def run(body: bytes) -> None:
        nonlocal tried
        tried += 1
        send_all(fresh(name, scratch), [("POST", path, body)])

    try:
        run()
    finally:
        tally.add("fuzz cases tried", tried)


@pytest.mark.parametrize("name", TARGETS)
def test_generated_paths_and_methods(name: str, scratch: Path, tally: Tally) -> None:
    shape = make_target(name, scratch / "shape")
    tried = 0

    @FUZZ
    @given(request=other_requests(shape))
    def run(request: tuple[str, str, bytes]) -> None:
        nonlocal tried
        tried += 1
        send_all(fresh(name, scratch), [request])

    try:
        run()
    finally:
        tally.add("fuzz cases tried", tried)


@pytest.mark.parametrize("name", [cls.__name__ for cls in reference_drivers()])
def test_generated_sequences(name: str, scratch: Path, tally: Tally) -> None:
    """Several calls in a row on one reference driver, each to any of its
    endpoints with a body of that endpoint: what one call leaves behind (a
    network half-made, a pool released twice, an endpoint joined before it
    was created) must never make a later one crash, and the driver's
    memory, state file and host must still agree at the end."""
    shape = make_target(name, scratch / "shape")
    keys = _wire_keys(shape)
    per_path = {p: bodies(ep.request, keys, p) for p, (_, ep) in shape.routes().items()}
    step = st.sampled_from(sorted(per_path)).flatmap(
        lambda path: per_path[path].map(lambda body: ("POST", path, body))
    )
    tried = 0

    @settings(FUZZ, max_examples=FUZZ.max_examples // 4)
    @given(requests=st.lists(step, min_size=2, max_size=8))
    def run(requests: list[tuple[str, str, bytes]]) -> None:
        nonlocal tried
        tried += len(requests)
        send_all(fresh(name, scratch), requests)

    try:
        run()
    finally:
        tally.add("fuzz cases tried", tried)


# --- the hand-written corpus ---------------------------------------------------------------

HOSTILE_BODIES: list[bytes] = [
    b"",
    b" \n",
    b"{",
    b"}",
    b"null",
    b"[]",
    b'"text"',
    b"1",
    b"true",
    b"\xff\xfe{\x00}\x00",  # UTF-16
    b"\xef\xbb\xbf{}",  # a BOM
    b"\xc0\xaf",  # an overlong encoding of "/"
    b'{"Name": "\xff"}',
    b'{"Name": "\xed\xa0\x80"}',  # an encoded surrogate
    b'{"Name": "\\ud800"}',
    b'{"Name": "a\\u0000b"}',
    b'{"Name": "v1"}{"Name": "v2"}',
    b'{"Name": "v1", "Name": "v2"}',
    b'{"Name": NaN}',
    b'{"Name": Infinity}',
    b'{"Name": 1e999}',
    b'{"Name": -0}',
    b'{"Name": "v1", "Opts": {"uid": {"uid": {}}}}',
    b'{"Name": "v1", "Opts": []}',
    b'{"Name": "v1", "Opts": "uid=1"}',
    b'{"Name": "v1", "ID": 1}',
    b'{"Name": ["v1"]}',
    b'{"Name": {"$ne": ""}}',
    b'{"Name": "' + b"9" * 5000 + b'"}',
    b'{"Name": ' + b"9" * 5000 + b"}",
    b'{"Name": "v1", "Opts": {"mode": "' + b"7" * 100_000 + b'"}}',
    b'{"Name": "' + b"x" * 1_000_000 + b'"}',
    b'{"Name": "v1", "ID": "' + b"i" * 1_000_000 + b'"}',
    b'{"Name": "v1", "Opts": {' + b",".join(b'"k%d": "v"' % i for i in range(50_000)) + b"}}",
    b"[" * 100_000,
    b'{"Name":' * 100_000,
    b"[" * 5000 + b"]" * 5000,
    b'{"Name": "boom"}',
    b'{"Name": "fail"}',
    b'{"Name": "/work/site-packages/Traceback"}',
]
HOSTILE_PATHS = [
    "/",
    "//VolumeDriver.Create",
    "/VolumeDriver.Create/",
    "/volumedriver.create",
    "/VolumeDriver.Create%00",
    "/../VolumeDriver.Create",
    "/VolumeDriver.",
    "/VolumeDriver.__init__",
    "/Plugin.Activate/",
    "/" + "A" * 10_000,
]


@pytest.mark.parametrize("name", TARGETS)
def test_hostile_corpus(name: str, scratch: Path, tally: Tally) -> None:
    target = make_target(name, scratch)
    routes = sorted(target.routes())
    cases: list[tuple[str, str, bytes]] = []
    for path in [*routes, "/Plugin.Activate"]:
        cases += [("POST", path, body) for body in HOSTILE_BODIES]
        methods = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"]
        cases += [(method, path, b"{}") for method in methods]
    cases += [("POST", path, b"{}") for path in HOSTILE_PATHS]
    # Over the body limit (with its Content-Length, as the daemon sends), and at it.
    cases.append(("POST", routes[0], b" " * (MAX_BODY + 1)))
    cases.append(("POST", routes[0], b'{"Name": "v1"}' + b" " * (MAX_BODY - 14)))
    with PluginClient(*target.drivers) as client:
        for method, path, body in cases:
            check(target, method, path, body, client.post(path, body, method=method))
            still_answers(client, target)
        consistent(target, client)
    tally.add("fuzz cases tried", len(cases))


def test_over_the_limit_is_refused_before_it_is_read() -> None:
    with PluginClient(fake_driver(driver_types()[0], is_async=False)) as client:
        path = next(iter(make_target("plain fakes", Path("/")).routes()))
        reply = client.post(path, b" " * (MAX_BODY + 1))
    assert (reply.status, reply.json) == (
        400,
        {"Err": f"bad request: body too large ({MAX_BODY + 1} bytes, limit {MAX_BODY})"},
    )


# --- raw bytes on a real socket ------------------------------------------------------------


class SocketVolumes(LocalVolumes):
    """localvol for ``python -m plugin`` in these tests: its directories come
    from $FUZZ_ROOT, and nothing is mounted."""

    def __init__(self) -> None:
        root = os.environ["FUZZ_ROOT"]
        super().__init__(f"{root}/data", f"{root}/mnt", bind=False)


def _http(path: str, body: bytes, *headers: bytes, close: bool = True) -> bytes:
    # "Connection: close": the server answers and closes, nobody waits for a timeout.
    head = [f"POST {path} HTTP/1.1".encode(), b"Host: plugin.moby.localhost", *headers]
    if close:
        head.append(b"Connection: close")
    framed = (b"content-length", b"transfer-encoding")
    if not any(h.lower().startswith(framed) for h in headers):
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


#: Raw requests and the statuses answered to each, in order ([]: none, the
#: request never ends; 100 Continue first when it was asked for).
RAW_CASES: list[tuple[bytes, list[int]]] = [
    (b"GARBAGE\r\n\r\n", [400]),
    (b"\x00\x01\x02\x03\r\n\r\n", [400]),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", [400]),  # a TLS hello
    (b"PRI /VolumeDriver.List HTTP/2.0\r\n\r\n", []),  # HTTP/2's preface: waits for more
    (b"GET /\r\n", []),
    (b"HTTP/1.1 200 OK\r\n\r\n", [400]),
    (b"POST /VolumeDriver.List HTTP/9.9\r\n\r\n", [400]),
    (b"POST /VolumeDriver.L\xffist HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", [400]),
    (b"POST /VolumeDriver.List HTTP/1.1\r\nBad Header Line\r\n\r\n", [400]),
    (b"POST /VolumeDriver.List HTTP/1.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n", [200]),
    (_http("/VolumeDriver.Get", b"{}", b"Content-Length: abc"), [400]),
    (_http("/VolumeDriver.Get", b"{}", b"Content-Length: -1"), [400]),
    (_http("/VolumeDriver.Get", b"{}", b"Content-Length: 2", b"Content-Length: 3"), [400]),
    (_http("/VolumeDriver.Get", b"zz\r\n", b"Transfer-Encoding: chunked"), [400]),
    (_http("/VolumeDriver.Get", b'{"Name"', b"Content-Length: 100"), []),  # the body never ends
    (_http("/VolumeDriver.Get", b"", b"Content-Length: 20000000"), [400]),
    (_http("/VolumeDriver.Get", b'{"Name": \xff}'), [400]),
    (_http("/%2e%2e/VolumeDriver.Get", b"{}"), [404]),
    (_http("/VolumeDriver.Get", b"{}", b"Expect: 100-continue"), [100, 400]),
    (_http("/VolumeDriver.Get", b"{}", b"Connection: Upgrade", b"Upgrade: websocket"), [400]),
    (
        _http("/VolumeDriver.Create", b'{"Name": "r1"}', close=False)
        + _http("/VolumeDriver.Remove", b'{"Name": "r1"}'),
        [200, 200],
    ),
    (_http("/VolumeDriver.Create", b"[" * 100_000), [400]),
    (b"POST /VolumeDriver.Get HTTP/1.1\r\n", []),  # the headers never end
]


def raw_exchange(
    path: str, raw: bytes, wait: float = 1.0, half_close: bool = False, expect: int = 0
) -> bytes:
    """Send ``raw`` to the socket at ``path`` (then end our side, with
    ``half_close``) and read what comes back until the server closes, until
    ``expect`` whole responses are in (when not 0), or until ``wait``
    seconds pass without data."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait)
        sock.connect(path)
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close first (a body over the limit)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if expect and _whole_responses(b"".join(chunks)) >= expect:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def _whole_responses(answer: bytes) -> int:
    """How many responses with a Content-Length ``answer`` holds in full
    (a 1xx has no body)."""
    count = 0
    while answer.startswith(b"HTTP/1.1 "):
        head, sep, rest = answer.partition(b"\r\n\r\n")
        if not sep:
            break
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            break
        count += 1
        answer = rest[length:]
    return count


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    path: str
    root: Path

    def exchange(
        self, raw: bytes, wait: float = 1.0, half_close: bool = False, expect: int = 0
    ) -> bytes:
        return raw_exchange(self.path, raw, wait, half_close, expect)

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the plugin exited {self.proc.returncode}"
        answer = self.exchange(_http("/VolumeDriver.List", b"{}"), wait=10, expect=1)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["Volumes"] is not None


def parse_responses(answer: bytes) -> list[tuple[int, str, bytes]]:
    """(status, head, body) of each HTTP/1.1 response in ``answer``."""
    out = []
    while answer:
        assert answer.startswith(b"HTTP/1.1 "), f"not an HTTP response: {answer[:200]!r}"
        head, _, rest = answer.partition(b"\r\n\r\n")
        text = head.decode("latin-1")
        status = int(text.split()[1])
        # No Content-Length: the body ends when the connection does (a 1xx has none).
        length = 0 if status < 200 else len(rest)
        for line in text.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = int(value)
        out.append((status, text, rest[:length]))
        answer = rest[length:]
    return out


def check_raw(raw: bytes, answer: bytes, socket_path: str) -> None:
    """Whatever the server answers: HTTP, no leak; from the app, JSON with Err."""
    text = answer.decode("utf-8", errors="replace")
    sent = raw.decode("utf-8", errors="replace")
    for leak in (*LEAKS, socket_path):
        if leak not in sent:
            assert leak not in text, f"{leak!r} leaked: {answer[:300]!r}"
    for status, head, body in parse_responses(answer):
        if status < 200:
            continue  # 100 Continue, for a request that asked for it
        if "content-type: application/vnd.docker.plugins" in head.lower():
            data = json.loads(body)
            assert isinstance(data, dict)
            assert status == 200 or (isinstance(data.get("Err"), str) and data["Err"]), body
        else:
            # Unparseable HTTP never reaches the app: the server's own 4xx.
            assert 400 <= status < 500, head


@pytest.fixture
def served(scratch: Path) -> Iterator[Served]:
    sock_dir = tempfile.mkdtemp(prefix="dpk-", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(sock_dir, "f.sock")
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "FUZZ_ROOT": str(scratch)}
    env["LOG_LEVEL"] = "warning"
    with open(scratch / "plugin.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin", "--path", path, f"{__name__}:SocketVolumes"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(path):
            assert proc.poll() is None, (scratch / "plugin.log").read_text()
            assert time.monotonic() < deadline, "the plugin did not listen within 15 s"
            time.sleep(0.02)
        served = Served(proc, path, scratch)
        served.alive()
        yield served
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def big_raw_cases() -> list[tuple[bytes, list[int]]]:
    """Bodies that arrive in many pieces (the daemon's come in one)."""
    padded = b'{"Name": "big1"}' + b" " * (2 << 20)
    over = b'{"Name": "' + b"x" * (MAX_BODY + 10) + b'"}'
    return [
        (_http("/VolumeDriver.Create", padded), [200]),
        (
            _http(
                "/VolumeDriver.Create",
                _chunked(b'{"Name": "chunked1"}', 3),
                b"Transfer-Encoding: chunked",
            ),
            [200],
        ),
        (
            _http("/VolumeDriver.Create", _chunked(over, 1 << 20), b"Transfer-Encoding: chunked"),
            [400],
        ),
        (_http("/VolumeDriver.Create", over), [400]),
    ]


def test_raw_bytes_on_the_socket(served: Served, tally: Tally) -> None:
    cases = RAW_CASES + big_raw_cases()
    for raw, statuses in cases:
        # An answer is waited for up to 10 s; no answer is 1 s of silence.
        answer = served.exchange(raw, wait=10 if statuses else 1.0, expect=len(statuses))
        check_raw(raw, answer, served.path)
        assert [status for status, _, _ in parse_responses(answer)] == statuses, raw[:80]
        served.alive()
    listed = json.loads(served.exchange(_http("/VolumeDriver.List", b"{}")).split(b"\r\n\r\n")[1])
    assert [v["Name"] for v in listed["Volumes"]] == ["big1", "chunked1"]
    tally.add("fuzz cases tried", len(cases))
    tried = 0

    @settings(FUZZ, max_examples=60)
    @given(
        raw=st.one_of(
            st.binary(max_size=300),
            st.tuples(
                st.sampled_from(["/VolumeDriver.Create", "/VolumeDriver.Get"]), st.binary()
            ).map(lambda pair: _http(pair[0], pair[1])),
            st.binary(max_size=200).map(lambda b: b"POST /VolumeDriver.List HTTP/1.1\r\n" + b),
        )
    )
    def run(raw: bytes) -> None:
        nonlocal tried
        tried += 1
        check_raw(raw, served.exchange(raw, wait=0.5, half_close=True), served.path)
        served.alive()

    try:
        run()
    finally:
        tally.add("fuzz cases tried", tried)
    assert served.proc.poll() is None


def test_a_404_without_a_host_header_does_not_show_the_socket_path(served: Served) -> None:
    raw = b"POST /nope HTTP/1.0\r\n\r\n"
    answer = served.exchange(raw, wait=10)  # HTTP/1.0: the server closes after its answer
    check_raw(raw, answer, served.path)
    [(status, _, body)] = parse_responses(answer)
    assert (status, json.loads(body)) == (404, {"Err": "not implemented: /nope"})
