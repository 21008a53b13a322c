"""The wire layer: models <-> the daemon's JSON (plugin/_wire.py)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass
from typing import Any

import pytest

from plugin import BadRequest
from plugin._wire import MAX_BODY, Model, compile_model, decode_body, encode, wire
from plugin.volume import (
    CapabilitiesResponse,
    CreateRequest,
    GetResponse,
    ListResponse,
    MountRequest,
    MountResponse,
    Volume,
)

UTC = datetime.UTC


@dataclass(slots=True)
class Lists(Model):
    """Maps, lists and optionals without defaults: null and absence still decode."""

    options: dict[str, str] = wire("Options")
    names: list[str] = wire("Names")
    nested: dict[str, list[str]] = wire("Nested")
    maybe: str | None = wire("Maybe")


@dataclass(slots=True)
class Blob(Model):
    data: bytes = wire("Data")
    at: datetime.datetime | None = wire("At", None)


@dataclass(slots=True)
class Port(Model):
    number: int = wire("Number")

    def __post_init__(self) -> None:
        if not 0 < self.number < 65536:
            raise ValueError(f"port {self.number} out of range")


def bad(body: bytes, model: type[Model] = CreateRequest) -> str:
    with pytest.raises(BadRequest) as info:
        decode_body(body, model)
    assert info.value.status == 400
    return info.value.message


def test_exact_wire_names() -> None:
    req = decode_body(b'{"Name":"v","Opts":{"uid":"1000"}}\n', CreateRequest)
    assert req == CreateRequest(name="v", options={"uid": "1000"})
    assert req.to_wire() == {"Name": "v", "Opts": {"uid": "1000"}}
    mount = decode_body(b'{"Name":"v","ID":"' + b"a" * 64 + b'"}', MountRequest)
    assert mount == MountRequest("v", "a" * 64)
    assert mount.to_wire() == {"Name": "v", "ID": "a" * 64}


def test_unknown_keys_are_ignored() -> None:
    body = b'{"Name":"v","Opts":null,"Future":{"x":[1,2]},"name":"other"}'
    assert decode_body(body, CreateRequest) == CreateRequest("v", {})


def test_null_reads_as_empty_for_every_map_and_list() -> None:
    body = b'{"Options":null,"Names":null,"Nested":{"a":null,"b":["x"]},"Maybe":null}'
    assert decode_body(body, Lists) == Lists({}, [], {"a": [], "b": ["x"]}, None)
    assert decode_body(b"{}", Lists) == Lists({}, [], {}, None)
    assert decode_body(b'{"Name":"v","Opts":null}', CreateRequest) == CreateRequest("v", {})
    assert ListResponse.from_wire({"Volumes": None}) == ListResponse([])


def test_empty_body_reads_as_an_empty_object() -> None:
    assert decode_body(b"", Lists) == Lists({}, [], {}, None)
    assert decode_body(b" \n", Lists) == Lists({}, [], {}, None)
    # A required field cannot come from an empty body: the daemon sends one when
    # it retries a call across a plugin restart (seen on dockerd 20.10).
    assert bad(b"") == (
        "bad request: Name: required field missing (the body was empty, as the daemon sends "
        "it when it retries a call the plugin did not answer, e.g. across a plugin restart: "
        "try again)"
    )


def test_body_without_a_model_is_not_parsed() -> None:
    assert decode_body(b"not json at all", None) is None


def test_encode_always_gives_an_object() -> None:
    assert encode(None) == b"{}"
    assert encode({}) == b"{}"
    assert encode(ListResponse()) == b'{"Volumes":[]}'
    assert encode(CapabilitiesResponse()) == b'{"Capabilities":{"Scope":"local"}}'


def test_none_fields_are_left_out() -> None:
    assert json.loads(encode(GetResponse(Volume("v")))) == {"Volume": {"Name": "v"}}
    volume = Volume("v", "/mnt/v", None, {"size": 1})
    assert volume.to_wire() == {"Name": "v", "Mountpoint": "/mnt/v", "Status": {"size": 1}}
    assert "CreatedAt" not in volume.to_wire()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "2024-05-01T12:00:00Z"),
        (
            datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
            "2024-05-01T12:00:00.123456Z",
        ),
        (
            datetime.datetime(
                2024, 5, 1, 14, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            "2024-05-01T12:00:00Z",
        ),
        # Naive times are taken as UTC.
        (datetime.datetime(2024, 5, 1, 12, 0), "2024-05-01T12:00:00Z"),
    ],
)
def test_datetimes_are_rfc3339_with_z(value: datetime.datetime, text: str) -> None:
    assert Volume("v", created_at=value).to_wire() == {"Name": "v", "CreatedAt": text}


def test_datetimes_inside_free_form_maps_are_encoded_too() -> None:
    at = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert json.loads(encode({"Status": {"at": at, "list": [at]}})) == {
        "Status": {"at": "2024-05-01T12:00:00Z", "list": ["2024-05-01T12:00:00Z"]}
    }


def test_go_times_decode() -> None:
    # Go sends nanoseconds; Python keeps microseconds.
    blob = decode_body(b'{"Data":"","At":"2024-05-01T12:00:00.123456789Z"}', Blob)
    assert blob == Blob(b"", datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC))
    assert bad(b'{"Data":"","At":""}', Blob) == "bad request: At: expected an RFC 3339 time, got ''"


def test_bytes_are_base64() -> None:
    assert decode_body(b'{"Data":"aGVsbG8="}', Blob) == Blob(b"hello")
    assert Blob(b"hello").to_wire() == {"Data": "aGVsbG8="}
    assert bad(b'{"Data":"not base64!"}', Blob) == (
        "bad request: Data: expected base64 data, got string"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"Name":"v","Opts":{"uid":1000}}',
            "bad request: Opts.uid: expected a string, got number",
        ),
        (b'{"Name":7}', "bad request: Name: expected a string, got number"),
        (b'{"Name":true}', "bad request: Name: expected a string, got boolean"),
        (b'{"Name":"v","Opts":[]}', "bad request: Opts: expected an object, got array"),
        (b'{"Name":null}', "bad request: Name: required field missing"),
        (b'{"Opts":{}}', "bad request: Name: required field missing"),
        (b"[]", "bad request: body must be a JSON object, got array"),
        (b'"v"', "bad request: body must be a JSON object, got string"),
        (b"null", "bad request: body must be a JSON object, got null"),
        (
            b'{"Name":',
            "bad request: body is not valid JSON (Expecting value: line 1 column 9 (char 8))",
        ),
        (b'{"Name":"\xff"}', "bad request: body is not valid UTF-8"),
        (
            b'{"Name":"v","Opts":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "bad request: body is nested too deeply",
        ),
    ],
)
def test_bad_bodies_name_the_field(body: bytes, message: str) -> None:
    assert bad(body) == message


def test_huge_integers_are_a_bad_request() -> None:
    assert bad(b'{"Name":' + b"1" * 5000 + b"}").startswith(
        "bad request: body is not valid JSON (Exceeds the limit (4300 digits)"
    )


def test_nested_paths_in_messages() -> None:
    body = {"Volumes": [{"Name": "a"}, {"Name": "b", "Status": []}]}
    with pytest.raises(BadRequest) as info:
        ListResponse.from_wire(body)
    assert info.value.message == "bad request: Volumes[1].Status: expected an object, got array"


def test_a_models_own_check_is_a_bad_request() -> None:
    assert decode_body(b'{"Number":80}', Port) == Port(80)
    assert bad(b'{"Number":0}', Port) == "bad request: body: port 0 out of range"
    assert bad(b'{"Number":1.5}', Port) == "bad request: Number: expected an integer, got number"


def test_mount_response_refuses_an_empty_mountpoint() -> None:
    # The daemon would resolve "" to the plugin's whole rootfs.
    with pytest.raises(ValueError, match="must not be empty"):
        MountResponse("")


def test_responses_are_valid_json_whatever_the_strings() -> None:
    # A lone surrogate (from a "\ud800" escape in a request) is escaped, not an error.
    assert json.loads(encode(MountResponse("/mnt/\ud800"))) == {"Mountpoint": "/mnt/\ud800"}
    assert encode(MountResponse("/mnt/é")) == '{"Mountpoint":"/mnt/é"}'.encode()
    with pytest.raises(ValueError, match="Out of range float"):
        encode({"Status": {"ratio": float("nan")}})


def test_model_fields_need_wire_names() -> None:
    @dataclass
    class Unnamed(Model):
        name: str = dataclasses.field(default="")

    with pytest.raises(TypeError, match=r"Unnamed\.name has no wire name"):
        compile_model(Unnamed)


def test_unsupported_field_types_fail_at_compile_time() -> None:
    @dataclass
    class Odd(Model):
        pair: tuple[int, int] = wire("Pair")

    with pytest.raises(TypeError, match="unsupported field type"):
        compile_model(Odd)


def test_roundtrip_keeps_free_form_values() -> None:
    status: dict[str, Any] = {"n": 1, "f": 1.5, "b": False, "l": [None, "x"], "o": {"k": "v"}}
    volume = Volume("v", status=status)
    assert Volume.from_wire(json.loads(encode(volume))) == volume


def test_max_body_is_16_mib() -> None:
    assert MAX_BODY == 16 * 1024 * 1024
