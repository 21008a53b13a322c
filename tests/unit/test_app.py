"""The generic handler, driven in-process with plugin.testing (plugin/_app.py)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from plugin import BadRequest, Driver, Endpoint, PluginError, method_name
from plugin._driver import optional
from plugin._wire import Model, wire
from plugin.testing import PluginCallError, PluginClient, Reply
from plugin.volume import (
    CreateRequest,
    GetRequest,
    GetResponse,
    ListResponse,
    MountRequest,
    MountResponse,
    PathRequest,
    PathResponse,
    RemoveRequest,
    UnmountRequest,
    Volume,
    VolumeDriver,
)

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
GENERIC = "unexpected {} in the plugin (see its log)"


class Memory(VolumeDriver):
    """A whole volume driver in a dict: what the walk-through drives."""

    def __init__(self) -> None:
        self.volumes: dict[str, dict[str, str]] = {}
        self.mounted: dict[str, set[str]] = {}

    def create(self, req: CreateRequest) -> None:
        if req.name in self.volumes:
            raise PluginError(f"volume {req.name!r} exists")
        self.volumes[req.name] = req.options

    def remove(self, req: RemoveRequest) -> None:
        self._known(req.name)
        if self.mounted.get(req.name):
            raise PluginError(f"volume {req.name!r} is in use")
        del self.volumes[req.name]

    async def mount(self, req: MountRequest) -> MountResponse:
        self._known(req.name)
        self.mounted.setdefault(req.name, set()).add(req.id)
        return MountResponse(f"/mnt/volumes/{req.name}")

    def unmount(self, req: UnmountRequest) -> None:
        self.mounted.get(req.name, set()).discard(req.id)

    def path(self, req: PathRequest) -> PathResponse:
        self._known(req.name)
        if self.mounted.get(req.name):
            return PathResponse(f"/mnt/volumes/{req.name}")
        return PathResponse()

    def get(self, req: GetRequest) -> GetResponse:
        self._known(req.name)
        return GetResponse(self._volume(req.name))

    def list(self) -> ListResponse:
        return ListResponse([self._volume(name) for name in sorted(self.volumes)])

    def _known(self, name: str) -> None:
        if name not in self.volumes:
            raise PluginError(f"no such volume: {name!r}")

    def _volume(self, name: str) -> Volume:
        status: dict[str, Any] = {"options": self.volumes[name]}
        mountpoint = f"/mnt/volumes/{name}" if self.mounted.get(name) else None
        return Volume(name, mountpoint, T0, status)


class Stub(VolumeDriver):
    """Every call answers something trivial; tests override one method."""

    def create(self, req: CreateRequest) -> None:
        pass

    def remove(self, req: RemoveRequest) -> None:
        pass

    def mount(self, req: MountRequest) -> MountResponse | Awaitable[MountResponse]:
        return MountResponse("/mnt/" + req.name)

    def unmount(self, req: UnmountRequest) -> None:
        pass

    def path(self, req: PathRequest) -> PathResponse:
        return PathResponse()

    def get(self, req: GetRequest) -> GetResponse:
        return GetResponse(Volume(req.name))

    def list(self) -> ListResponse:
        return ListResponse()


# A made-up plugin type with its own endpoint table, to exercise what volume
# does not have: an optional call without a default, and requests without body.


@dataclass(slots=True)
class PingRequest(Model):
    text: str = wire("Text")


@dataclass(slots=True)
class PingResponse(Model):
    text: str = wire("Text")


class EchoDriver(Driver):
    implements: ClassVar[str] = "EchoDriver"
    prefix: ClassVar[str] = "EchoDriver"
    capability: ClassVar[str] = "docker.echodriver/1.0"

    def ping(self, req: PingRequest) -> PingResponse:
        return PingResponse(req.text)

    @optional
    def get_capabilities(self) -> PingResponse:
        raise AssertionError("never called: optional without a default")

    @optional
    async def program_external_connectivity(self, req: PingRequest) -> None:
        raise AssertionError("never called: optional without a default")


EchoDriver.endpoints = (
    Endpoint("Ping", PingRequest, PingResponse),
    Endpoint("GetCapabilities", None, PingResponse),
    Endpoint("ProgramExternalConnectivity", PingRequest, None),
)


def reply_of(driver: Driver, path: str, body: Any = None, method: str = "POST") -> Reply:
    with PluginClient(driver) as client:
        return client.post(path, body, method=method)


def test_volume_walk_through() -> None:
    driver = Memory()
    with PluginClient(driver) as client:

        def call(verb: str, body: Any = None) -> tuple[int, Any]:
            reply = client.post(f"/VolumeDriver.{verb}", body)
            assert reply.headers["content-type"] == "application/vnd.docker.plugins.v1.1+json"
            return reply.status, reply.json

        assert call("Capabilities", {}) == (200, {"Capabilities": {"Scope": "local"}})
        assert call("List", {}) == (200, {"Volumes": []})
        # The daemon's create flow: Get must fail for an unknown name.
        assert call("Get", {"Name": "v1"}) == (500, {"Err": "no such volume: 'v1'"})
        assert call("Create", {"Name": "v1", "Opts": None}) == (200, {})
        assert call("Create", {"Name": "v2", "Opts": {"size": "1G"}}) == (200, {})
        assert call("Create", {"Name": "v1", "Opts": None}) == (500, {"Err": "volume 'v1' exists"})
        assert call("Get", {"Name": "v1"}) == (
            200,
            {
                "Volume": {
                    "Name": "v1",
                    "CreatedAt": "2024-05-01T12:00:00Z",
                    "Status": {"options": {}},
                }
            },
        )
        assert call("Path", {"Name": "v1"}) == (200, {"Mountpoint": ""})
        assert call("Mount", {"Name": "v1", "ID": "a" * 64}) == (
            200,
            {"Mountpoint": "/mnt/volumes/v1"},
        )
        assert call("Path", {"Name": "v1"}) == (200, {"Mountpoint": "/mnt/volumes/v1"})
        assert call("List", {}) == (
            200,
            {
                "Volumes": [
                    {
                        "Name": "v1",
                        "Mountpoint": "/mnt/volumes/v1",
                        "CreatedAt": "2024-05-01T12:00:00Z",
                        "Status": {"options": {}},
                    },
                    {
                        "Name": "v2",
                        "CreatedAt": "2024-05-01T12:00:00Z",
                        "Status": {"options": {"size": "1G"}},
                    },
                ]
            },
        )
        assert call("Remove", {"Name": "v1"}) == (500, {"Err": "volume 'v1' is in use"})
        assert call("Unmount", {"Name": "v1", "ID": "a" * 64}) == (200, {})
        assert call("Remove", {"Name": "v1"}) == (200, {})
        assert call("Get", {"Name": "v1"}) == (500, {"Err": "no such volume: 'v1'"})
        assert call("Mount", {"Name": "v1", "ID": "b" * 64}) == (
            500,
            {"Err": "no such volume: 'v1'"},
        )
        assert call("Activate") == (404, {"Err": "not implemented: /VolumeDriver.Activate"})
        activate = client.post("/Plugin.Activate")
        assert (activate.status, activate.json) == (200, {"Implements": ["VolumeDriver"]})
    assert driver.volumes == {"v2": {"size": "1G"}}


def test_plugin_client_as_its_docstring_shows() -> None:
    with PluginClient(Memory()) as client:
        assert client.call("VolumeDriver.Create", {"Name": "v1"}) == {}
        reply = client.post("/VolumeDriver.Get", {"Name": "nope"})
        assert reply.status == 500 and "no such volume" in reply.json["Err"]
        # Bodies may be dicts, strings or bytes; paths with or without "/".
        assert client.call("/VolumeDriver.Path", '{"Name":"v1"}') == {"Mountpoint": ""}
        assert client.call("VolumeDriver.List", b"{}\n") == {
            "Volumes": [
                {"Name": "v1", "CreatedAt": "2024-05-01T12:00:00Z", "Status": {"options": {}}}
            ]
        }
        with pytest.raises(PluginCallError) as info:
            client.call("VolumeDriver.Remove", {"Name": "nope"})
        assert str(info.value) == (
            'VolumeDriver.Remove answered 500: {"Err":"no such volume: \'nope\'"}'
        )
        assert info.value.reply.json == {"Err": "no such volume: 'nope'"}


def test_plain_methods_run_off_the_event_loop_async_ones_on_it() -> None:
    seen: dict[str, int] = {}

    class Threads(Stub):
        def get(self, req: GetRequest) -> GetResponse:
            seen["plain"] = threading.get_ident()
            return GetResponse(Volume(req.name))

        async def mount(self, req: MountRequest) -> MountResponse:
            asyncio.get_running_loop()  # raises outside a loop
            seen["async"] = threading.get_ident()
            return MountResponse("/m")

    with PluginClient(Threads()) as client:
        # PluginClient runs its event loop in the calling thread.
        assert client.call("VolumeDriver.Get", {"Name": "v"}) == {"Volume": {"Name": "v"}}
        assert client.call("VolumeDriver.Mount", {"Name": "v", "ID": "x"}) == {"Mountpoint": "/m"}
    assert seen["async"] == threading.get_ident()
    assert seen["plain"] != threading.get_ident()


def test_a_plain_method_returning_an_awaitable_is_awaited() -> None:
    class Wrapped(Stub):
        def mount(self, req: MountRequest) -> Any:
            async def later() -> MountResponse:
                return MountResponse("/later")

            return later()

    reply = reply_of(Wrapped(), "/VolumeDriver.Mount", {"Name": "v", "ID": "x"})
    assert (reply.status, reply.json) == (200, {"Mountpoint": "/later"})


def test_capabilities_default_and_scope() -> None:
    class Global(Stub):
        scope = "global"

    reply = reply_of(Stub(), "/VolumeDriver.Capabilities", {})
    assert (reply.status, reply.json) == (200, {"Capabilities": {"Scope": "local"}})
    reply = reply_of(Global(), "/VolumeDriver.Capabilities", {})
    assert (reply.status, reply.json) == (200, {"Capabilities": {"Scope": "global"}})


def test_optional_calls_not_overridden_answer_404() -> None:
    with PluginClient(EchoDriver()) as client:
        assert client.call("EchoDriver.Ping", {"Text": "hi"}) == {"Text": "hi"}
        for verb in ("GetCapabilities", "ProgramExternalConnectivity"):
            reply = client.post(f"/EchoDriver.{verb}", {"Text": "x"})
            assert (reply.status, reply.json) == (
                404,
                {"Err": f"not implemented: /EchoDriver.{verb}"},
            )


def test_optional_calls_overridden_are_served() -> None:
    calls: list[str] = []

    class Full(EchoDriver):
        def get_capabilities(self) -> PingResponse:
            return PingResponse("caps")

        async def program_external_connectivity(self, req: PingRequest) -> None:
            calls.append(req.text)

    with PluginClient(Full()) as client:
        # The daemon sends GetCapabilities with an empty body.
        assert client.call("EchoDriver.GetCapabilities") == {"Text": "caps"}
        assert client.call("EchoDriver.ProgramExternalConnectivity", {"Text": "x"}) == {}
    assert calls == ["x"]


def test_activate_lists_every_driver_served() -> None:
    with PluginClient(Stub(), EchoDriver()) as client:
        assert client.call("Plugin.Activate") == {"Implements": ["VolumeDriver", "EchoDriver"]}
        assert client.call("EchoDriver.Ping", {"Text": "a"}) == {"Text": "a"}
        assert client.call("VolumeDriver.List", {}) == {"Volumes": []}


@pytest.mark.parametrize(
    ("wire_name", "method"),
    [
        ("Create", "create"),
        ("GetCapabilities", "get_capabilities"),
        ("EndpointOperInfo", "endpoint_oper_info"),
        ("RequestAddress", "request_address"),
        ("ProgramExternalConnectivity", "program_external_connectivity"),
        ("GetDefaultAddressSpaces", "get_default_address_spaces"),
        # Edge cases, decided: "IPv4" stays one word, a lone capital is a word.
        ("IPv4Data", "ipv4_data"),
        ("GetIPv6Data", "get_ipv6_data"),
        ("NetworkID", "network_id"),
        ("AuthZReq", "auth_z_req"),
    ],
)
def test_method_names_follow_one_rule(wire_name: str, method: str) -> None:
    assert method_name(wire_name) == method
    assert Endpoint(wire_name, None, None).method == method


def test_plugin_error_is_500_with_its_message() -> None:
    class Failing(Stub):
        async def mount(self, req: MountRequest) -> MountResponse:
            raise PluginError(f"cannot mount {req.name}: disk on fire")

    reply = reply_of(Failing(), "/VolumeDriver.Mount", {"Name": "v", "ID": "x"})
    assert (reply.status, reply.json) == (500, {"Err": "cannot mount v: disk on fire"})


def test_a_driver_may_answer_400_itself() -> None:
    class Picky(Stub):
        def create(self, req: CreateRequest) -> None:
            raise BadRequest(f"unknown option: {', '.join(req.options)}")

    reply = reply_of(Picky(), "/VolumeDriver.Create", {"Name": "v", "Opts": {"colour": "red"}})
    assert (reply.status, reply.json) == (400, {"Err": "unknown option: colour"})


def test_bad_requests_are_400_naming_the_field() -> None:
    with PluginClient(Stub()) as client:
        for body, message in [
            ({"Name": "v", "Opts": {"uid": 1000}}, "Opts.uid: expected a string, got number"),
            ({"Opts": {}}, "Name: required field missing"),
            (
                None,
                "Name: required field missing (the body was empty, as the daemon sends it when "
                "it retries a call the plugin did not answer, e.g. across a plugin restart: "
                "try again)",
            ),
            ("[]", "body must be a JSON object, got array"),
            (
                "{",
                "body is not valid JSON (Expecting property name enclosed in double quotes: "
                "line 1 column 2 (char 1))",
            ),
            (b'{"Name":"\xc3\x28"}', "body is not valid UTF-8"),
            (
                '{"Name":"v","Opts":' + "[" * 50_000 + "]" * 50_000 + "}",
                "body is nested too deeply",
            ),
        ]:
            reply = client.post("/VolumeDriver.Create", body)
            assert (reply.status, reply.json) == (400, {"Err": f"bad request: {message}"})


def test_huge_bodies_are_400() -> None:
    body = b'{"Name":"' + b"x" * (16 * 1024 * 1024) + b'"}'
    reply = reply_of(Stub(), "/VolumeDriver.Create", body)
    assert (reply.status, reply.json) == (
        400,
        {"Err": f"bad request: body too large ({len(body)} bytes, limit 16777216)"},
    )


def test_unexpected_exceptions_are_logged_and_answered_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Buggy(Stub):
        def get(self, req: GetRequest) -> GetResponse:
            open("/nonexistent/secret/path/state.json")  # noqa: SIM115
            raise AssertionError("unreachable")

    with caplog.at_level(logging.ERROR, logger="plugin"):
        reply = reply_of(Buggy(), "/VolumeDriver.Get", {"Name": "v"})
    assert (reply.status, reply.json) == (500, {"Err": GENERIC.format("FileNotFoundError")})
    assert "/nonexistent" not in reply.body.decode()
    [record] = caplog.records
    assert record.getMessage() == "VolumeDriver.Get failed"
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is FileNotFoundError
    assert "Traceback" in caplog.text and "/nonexistent/secret/path/state.json" in caplog.text


def test_async_exceptions_too(caplog: pytest.LogCaptureFixture) -> None:
    class Buggy(Stub):
        async def mount(self, req: MountRequest) -> MountResponse:
            mounted: dict[str, MountResponse] = {}
            return mounted[req.name]

    reply = reply_of(Buggy(), "/VolumeDriver.Mount", {"Name": "v", "ID": "x"})
    assert (reply.status, reply.json) == (500, {"Err": GENERIC.format("KeyError")})
    assert "KeyError: 'v'" in caplog.text


@pytest.mark.parametrize(
    ("verb", "body", "returns", "expected"),
    [
        (
            "Mount",
            {"Name": "v", "ID": "x"},
            {"Mountpoint": "/m"},
            "returned dict, expected MountResponse",
        ),
        ("Mount", {"Name": "v", "ID": "x"}, None, "returned NoneType, expected MountResponse"),
        ("Get", {"Name": "v"}, Volume("v"), "returned Volume, expected GetResponse"),
        ("Create", {"Name": "v"}, "ok", "returned str, expected None"),
        (
            "Path",
            {"Name": "v"},
            MountResponse("/m"),
            "returned MountResponse, expected PathResponse",
        ),
    ],
)
def test_a_wrong_return_type_is_500(
    caplog: pytest.LogCaptureFixture, verb: str, body: Any, returns: Any, expected: str
) -> None:
    class Wrong(Stub):
        pass

    setattr(Wrong, method_name(verb), lambda self, req: returns)
    reply = reply_of(Wrong(), f"/VolumeDriver.{verb}", body)
    assert (reply.status, reply.json) == (500, {"Err": GENERIC.format("TypeError")})
    assert f"TypeError: VolumeDriver.{verb} {expected}" in caplog.text


def test_an_unencodable_result_is_500(caplog: pytest.LogCaptureFixture) -> None:
    class Odd(Stub):
        def get(self, req: GetRequest) -> GetResponse:
            return GetResponse(Volume(req.name, status={"when": {1, 2}}))

    reply = reply_of(Odd(), "/VolumeDriver.Get", {"Name": "v"})
    assert (reply.status, reply.json) == (500, {"Err": GENERIC.format("TypeError")})
    assert "Object of type set is not JSON serializable" in caplog.text


def test_none_stands_for_a_response_without_required_fields() -> None:
    class Lazy(Stub):
        def list(self) -> ListResponse:
            return None  # type: ignore[return-value]

        def path(self, req: PathRequest) -> PathResponse:
            return None  # type: ignore[return-value]

    with PluginClient(Lazy()) as client:
        assert client.call("VolumeDriver.List", {}) == {"Volumes": []}
        assert client.call("VolumeDriver.Path", {"Name": "v"}) == {"Mountpoint": ""}


def test_unknown_endpoints_are_404_json() -> None:
    with PluginClient(Stub()) as client:
        for path in (
            "/VolumeDriver.Frobnicate",
            "/NetworkDriver.CreateNetwork",
            "/",
            "/VolumeDriver.Create/",
        ):
            reply = client.post(path, {})
            assert (reply.status, reply.json) == (404, {"Err": f"not implemented: {path}"})


def test_other_methods_are_405_json() -> None:
    with PluginClient(Stub()) as client:
        for method in ("GET", "PUT", "DELETE"):
            for path in ("/VolumeDriver.List", "/Plugin.Activate"):
                reply = client.post(path, method=method)
                assert (reply.status, reply.json) == (
                    405,
                    {"Err": f"method {method} not allowed: plugin endpoints answer POST only"},
                )


def test_calls_without_arguments_ignore_the_body() -> None:
    # The daemon sends "{}" to List and Capabilities, nothing to Activate.
    with PluginClient(Stub()) as client:
        bodies: list[Any] = [None, {}, "", "garbage"]
        for body in bodies:
            assert client.call("VolumeDriver.List", body) == {"Volumes": []}
            assert client.call("Plugin.Activate", body) == {"Implements": ["VolumeDriver"]}


def test_make_app_refuses_misuse() -> None:
    with pytest.raises(TypeError, match="is not a driver instance"):
        PluginClient(Stub)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"two drivers of the same type \(VolumeDriver\)"):
        PluginClient(Stub(), Memory())
    with pytest.raises(ValueError, match="at least one driver"):
        PluginClient()

    class Shadowed(Stub):
        path = "/srv"  # type: ignore[assignment]

    with pytest.raises(
        TypeError, match=r"Shadowed.path must be a method: it serves VolumeDriver.Path"
    ):
        PluginClient(Shadowed())


def test_plugin_error_message_is_always_a_string() -> None:
    class Numeric(Stub):
        def remove(self, req: RemoveRequest) -> None:
            raise PluginError(42)  # type: ignore[arg-type]

    reply = reply_of(Numeric(), "/VolumeDriver.Remove", {"Name": "v"})
    assert (reply.status, reply.json) == (500, {"Err": "42"})


class _Slow(Memory):
    """Create blocks its thread until released; Mount outlives its deadline
    on the event loop (the loop's timers fire in order of their time)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def call_timeout(self, endpoint: Endpoint) -> float | None:
        return 0.2 if endpoint.name in ("Create", "Mount") else None

    def create(self, req: CreateRequest) -> None:
        if not self.release.wait(30):
            raise AssertionError("never released")
        super().create(req)

    async def mount(self, req: MountRequest) -> MountResponse:
        await asyncio.sleep(0.5)
        return MountResponse("/mnt/x")


def test_a_call_running_past_its_deadline_is_answered_with_a_timeout() -> None:
    driver = _Slow()
    with PluginClient(driver) as client:
        reply = client.post("/VolumeDriver.Create", {"Name": "v"})
        assert (reply.status, reply.json) == (
            500,
            {
                "Err": "timed out after 0.2 s in the plugin (the daemon stops waiting at 120 s); "
                "the operation may still finish: check its result before retrying"
            },
        )
        # Answered while the call was still blocked.
        assert "v" not in driver.volumes
        reply = client.post("/VolumeDriver.Mount", {"Name": "v", "ID": "a"})
        assert reply.status == 500 and "stops waiting at 120 s" in reply.json["Err"]
        # The thread was not stopped: released, the create completes in the background.
        driver.release.set()
        deadline = time.monotonic() + 10
        while "v" not in driver.volumes:
            assert time.monotonic() < deadline, "the create did not complete"
            time.sleep(0.01)
        assert client.call("/VolumeDriver.Get", {"Name": "v"})["Volume"]["Name"] == "v"


def test_volume_deadlines_follow_the_daemon() -> None:
    deadlines = {e.name: e.deadline for e in VolumeDriver.endpoints}
    assert deadlines == {
        "Create": 120, "Remove": 60, "Mount": 120, "Unmount": 60,
        "Path": 60, "Get": 60, "List": 60, "Capabilities": 60,
    }  # fmt: skip
    driver = Memory()
    assert [driver.call_timeout(e) for e in VolumeDriver.endpoints[:3]] == [115, 55, 115]
