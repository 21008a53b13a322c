"""The wire layer: typed request/response models <-> the daemon's JSON.

Models are dataclasses whose fields carry their exact wire name (``wire("ID")``),
because the daemon's names are not one casing rule (``ID``, ``Opts``,
``IPv4Data``, ``RequestUri``). Decoding is lenient the way the daemon needs:
unknown keys are ignored, ``null`` is accepted for every map and list (Go sends
nil maps as ``null``), and an empty body reads as ``{}``. Wrong types are
refused with an error that names the field. Encoding leaves out fields that are
``None`` so that optional values (``CreatedAt``) are absent rather than empty;
``datetime`` is sent as RFC 3339 (``...Z``) and ``bytes`` as base64, as Go does.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, Union

from .errors import BadRequest

__all__ = ["Model", "compile_model", "decode_body", "encode", "wire"]

M = TypeVar("M", bound="Model")
_Decoder = Callable[[Any, str], Any]

# Bodies larger than this are refused before they are parsed. Authorization
# requests can carry a container-create body; the daemon itself stops
# forwarding bodies at 1-4 MiB, so 16 MiB is generous.
MAX_BODY = 16 * 1024 * 1024


def wire(
    name: str,
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """Declare a model field with its exact wire name.

    ``default`` or ``factory`` make the field optional on decode.
    """
    return dataclasses.field(default=default, default_factory=factory, metadata={"wire": name})


class Model:
    """Base of every request and response model (subclasses are dataclasses)."""

    __slots__ = ()
    _codec: ClassVar[_Codec | None] = None

    @classmethod
    def from_wire(cls: type[M], data: Any, path: str = "") -> M:
        """Decode ``data`` (a parsed JSON object); raise BadRequest naming the field."""
        return typing.cast(M, _codec(cls).decode(data, path))

    def to_wire(self) -> dict[str, Any]:
        """Encode to a JSON-ready dict with wire names; ``None`` fields left out."""
        return _codec(type(self)).encode(self)


def compile_model(cls: type[Model]) -> None:
    """Check and compile ``cls`` (and the models it nests) ahead of use."""
    _codec(cls)


def decode_body(body: bytes, model: type[M] | None) -> M | None:
    """Parse a request body for ``model`` (``None``: the body is ignored)."""
    if model is None:
        return None
    if not body.strip():
        try:
            return model.from_wire({})
        except BadRequest as exc:
            # Seen on dockerd 20.10: a call the plugin did not answer (it was
            # killed) is retried on the restarted plugin without its body.
            raise BadRequest(f"{exc.message} ({_EMPTY})") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("bad request: body is not valid UTF-8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise BadRequest("bad request: body is nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError, and also an integer of more than 4300 digits.
        raise BadRequest(f"bad request: body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest(f"bad request: body must be a JSON object, got {_json_type(data)}")
    return model.from_wire(data)


_EMPTY = (
    "the body was empty, as the daemon sends it when it retries a call the plugin did not "
    "answer, e.g. across a plugin restart: try again"
)


def encode(value: Model | Mapping[str, Any] | None) -> bytes:
    """Serialize a response; ``None`` becomes ``{}`` (the daemon needs a body)."""
    if value is None:
        return b"{}"
    data = value.to_wire() if isinstance(value, Model) else _to_json(dict(value))
    text = _ENCODER.encode(data)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. echoed from a "\ud800" in a request): escape it.
        return _ASCII_ENCODER.encode(data).encode("ascii")


# Made once: json.dumps() with any non-default argument builds an encoder per
# call. allow_nan=False: NaN is not JSON and would fail the daemon's decoder.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


# --- codecs ----------------------------------------------------------------------


class _Field:
    __slots__ = ("attr", "decode", "missing", "wire")

    def __init__(
        self, attr: str, wire: str, decode: _Decoder, missing: Callable[[], Any] | None
    ) -> None:
        self.attr = attr
        self.wire = wire
        self.decode = decode
        #: Makes the value of an absent or null key; None when the field is required.
        self.missing = missing


class _Codec:
    def __init__(self, cls: type[Model]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        hints = typing.get_type_hints(cls)
        self.cls: type[Model] = cls
        self.fields: list[_Field] = []
        for f in dataclasses.fields(cls):
            wire_name = f.metadata.get("wire")
            if wire_name is None:
                raise TypeError(f"{cls.__name__}.{f.name} has no wire name (use wire(...))")
            tp = hints[f.name]
            self.fields.append(_Field(f.name, wire_name, _decoder(tp), _missing(f, tp)))

    def decode(self, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            where = path or "body"
            raise BadRequest(f"bad request: {where}: expected an object, got {_json_type(data)}")
        kwargs: dict[str, Any] = {}
        for f in self.fields:
            value = data.get(f.wire)
            if value is None:
                # Go sends nil maps and slices as null: null reads like an absent key.
                if f.missing is None:
                    where = f"{path}.{f.wire}" if path else f.wire
                    raise BadRequest(f"bad request: {where}: required field missing")
                kwargs[f.attr] = f.missing()
            else:
                kwargs[f.attr] = f.decode(value, f"{path}.{f.wire}" if path else f.wire)
        try:
            return self.cls(**kwargs)
        except ValueError as exc:  # a model's own check (__post_init__)
            raise BadRequest(f"bad request: {path or 'body'}: {exc}") from None

    def encode(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.fields:
            value = getattr(obj, f.attr)
            if value is not None:
                out[f.wire] = _to_json(value)
        return out


def _missing(f: dataclasses.Field[Any], tp: Any) -> Callable[[], Any] | None:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    if f.default is not dataclasses.MISSING:
        default = f.default
        return lambda: default
    # Even without a default, a map or list may be null (Go's nil) and an
    # optional value may be absent.
    origin = typing.get_origin(tp)
    if origin in (dict, list):
        return typing.cast(Callable[[], Any], origin)
    if origin in (Union, types.UnionType) and type(None) in typing.get_args(tp):
        return lambda: None
    return None


def _codec(cls: type[Model]) -> _Codec:
    codec = cls.__dict__.get("_codec")
    if codec is None:
        codec = _Codec(cls)
        type.__setattr__(cls, "_codec", codec)
    return codec


def _to_json(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_wire()
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime.datetime):
        return _rfc3339(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _rfc3339(value: datetime.datetime) -> str:
    # The daemon decodes time fields with Go's RFC 3339 parser; naive times are UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    text = value.astimezone(datetime.UTC).isoformat()
    return text.replace("+00:00", "Z")


_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _decode_time(value: Any, path: str) -> datetime.datetime:
    if type(value) is str:
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
    raise BadRequest(f"bad request: {path}: expected an RFC 3339 time, got {value!r:.40}")


def _decode_bytes(value: Any, path: str) -> bytes:
    if type(value) is str:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise BadRequest(f"bad request: {path}: expected base64 data, got {_json_type(value)}")


def _expect(kind: str, ok: Callable[[Any], bool]) -> _Decoder:
    def decode(value: Any, path: str) -> Any:
        if ok(value):
            return value
        raise BadRequest(f"bad request: {path}: expected {kind}, got {_json_type(value)}")

    return decode


def _decoder(tp: Any) -> _Decoder:
    if tp is Any:
        return lambda value, path: value
    if tp is str:
        return _expect("a string", lambda v: type(v) is str)
    if tp is bool:
        return _expect("a boolean", lambda v: type(v) is bool)
    if tp is int:
        return _expect("an integer", lambda v: type(v) is int)
    if tp is float:
        number = _expect("a number", lambda v: type(v) in (int, float))
        return lambda value, path: float(number(value, path))
    if tp is datetime.datetime:
        return _decode_time
    if tp is bytes:
        return _decode_bytes
    if isinstance(tp, type) and issubclass(tp, Model):
        _codec(tp)  # compiled now: a bad model fails at start-up, not mid-request
        return lambda value, path: tp.from_wire(value, path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union type {tp!r}")
        decode_inner = _decoder(inner[0])
        return lambda value, path: None if value is None else decode_inner(value, path)
    if origin is list:
        item = _decoder(args[0])

        def decode_list(value: Any, path: str) -> Any:
            if value is None:
                return []
            if type(value) is not list:
                raise BadRequest(f"bad request: {path}: expected an array, got {_json_type(value)}")
            return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

        return decode_list
    if origin is dict:
        item = _decoder(args[1])

        def decode_dict(value: Any, path: str) -> Any:
            if value is None:
                return {}
            if type(value) is not dict:
                kind = _json_type(value)
                raise BadRequest(f"bad request: {path}: expected an object, got {kind}")
            return {k: item(v, f"{path}.{k}") for k, v in value.items()}

        return decode_dict
    raise TypeError(f"unsupported field type {tp!r}")
