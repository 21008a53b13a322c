"""Read a JSON body the way Go's ``encoding/json`` decodes it into the daemon's types.

The Docker daemon decodes request bodies with Go's ``json.Decoder`` into its own
structs. ``json.loads`` sees something else in the same bytes, and a policy
that reads the body with it can be talked past:

* keys match struct fields case-insensitively (``privileged`` sets
  ``Privileged``; so do ``PRIVILEGED`` and, for a field with an ``s`` or a
  ``k``, keys spelled with U+017F (long s) or U+212A (the Kelvin sign)), and the
  *last* key that matches a field wins;
* ``null`` leaves a bool, string, number or struct field as it was, but makes
  a pointer, slice or map nil;
* an object decoded into a field that already holds a struct (or a non-nil
  pointer to one, or a map) is merged into it; an array decoded into a slice
  of structs merges element by element;
* only the first JSON value is read: whatever follows it is ignored;
* invalid UTF-8 and lone ``\\ud800``-style escapes become U+FFFD;
* a value of the wrong type is an error (the daemon refuses the request), but
  Go keeps decoding the rest first.

So a policy describes the part of the daemon's type it reads, as a ``Shape``,
and ``decode`` returns what the daemon's struct holds after decoding::

    MOUNT = Struct(("Type", STRING), ("Source", STRING))
    HOST_CONFIG = Struct(("Privileged", BOOL), ("Binds", Slice(STRING)), ("Mounts", Slice(MOUNT)))
    body = decode(raw, Struct(("HostConfig", Ptr(HOST_CONFIG))))
    body["HostConfig"]["Privileged"]      # True for {"HostConfig": {"privileged": true}}

Values are Python's: a struct is a dict holding every field of the shape (its
zero value when the body does not set it), a nil pointer, slice or map is
None, ``ANY`` (Go's ``interface{}``) gives plain JSON values with numbers as
float, exactly as Go would. Fields the shape does not name are skipped, as
unknown fields are by the daemon; a type error in one of them is not seen
here (the daemon refuses such a body anyway).

Errors: ``GoJSONError``, with ``kind`` ``"syntax"`` (nothing was decoded) or
``"type"`` (the first value of a wrong type, as Go reports its first
``UnmarshalTypeError``; the daemon refuses the request).
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANY",
    "BOOL",
    "FLOAT",
    "INT",
    "INT32",
    "STRING",
    "UINT32",
    "UINT64",
    "Embed",
    "GoJSONError",
    "Map",
    "Ptr",
    "Shape",
    "Slice",
    "Struct",
    "decode",
    "fold",
]


class GoJSONError(ValueError):
    """The daemon would refuse this body. ``kind`` is ``"syntax"`` or ``"type"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- shapes -------------------------------------------------------------------------------


class Shape:
    """The Go type of a value, as far as decoding it is concerned."""

    __slots__ = ()
    #: Go's name of the type, for error messages ("bool", "[]string").
    go: str = "?"

    def zero(self) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, eq=False, slots=True)
class _Scalar(Shape):
    kind: str  # "bool", "string", "int", "uint", "float", "any"
    go: str = "?"
    bits: int = 64

    def zero(self) -> Any:
        return {"bool": False, "string": "", "int": 0, "uint": 0, "float": 0.0}.get(self.kind)

    def __repr__(self) -> str:
        return self.go.upper() if self.kind != "any" else "ANY"


BOOL = _Scalar("bool", "bool")
STRING = _Scalar("string", "string")
INT = _Scalar("int", "int64")
INT32 = _Scalar("int", "int32", 32)
UINT32 = _Scalar("uint", "uint32", 32)
UINT64 = _Scalar("uint", "uint64")
FLOAT = _Scalar("float", "float64")
#: Go's ``interface{}``: objects become dicts (keys exact, last duplicate
#: wins), numbers float.
ANY = _Scalar("any", "interface {}")


@dataclass(frozen=True, eq=False, slots=True)
class Ptr(Shape):
    """A pointer: None when nil. Decoding into a non-nil pointer decodes into
    what it points at (so a struct behind it is merged into)."""

    elem: Shape

    @property
    def go(self) -> str:  # type: ignore[override]
        return "*" + self.elem.go

    def zero(self) -> Any:
        return None


@dataclass(frozen=True, eq=False, slots=True)
class Slice(Shape):
    """A slice: None when nil, else a list."""

    elem: Shape

    @property
    def go(self) -> str:  # type: ignore[override]
        return "[]" + self.elem.go

    def zero(self) -> Any:
        return None


@dataclass(frozen=True, eq=False, slots=True)
class Map(Shape):
    """A ``map[string]T``: None when nil, else a dict; keys are exact."""

    elem: Shape

    @property
    def go(self) -> str:  # type: ignore[override]
        return "map[string]" + self.elem.go

    def zero(self) -> Any:
        return None


@dataclass(frozen=True, slots=True)
class Embed:
    """An embedded (anonymous) struct field, whose fields are promoted into
    the outer struct, as ``*container.HostConfig`` is in the daemon's
    container-create body. ``label`` is the key it gets in decoded values."""

    label: str
    shape: Struct | Ptr


#: One field of a Struct: ``(name, shape)`` (the JSON name, as its tag or Go
#: name gives it) or ``(name, shape, True)`` for a name given by a json tag,
#: which wins a conflict among promoted fields of the same depth.
Field = tuple[str, Shape] | tuple[str, Shape, bool]


@dataclass(frozen=True, slots=True)
class _Leaf:
    name: str
    folded: str
    path: tuple[int, ...]  # indexes through embedded structs, then the field
    shape: Shape


class Struct(Shape):
    """A struct: the fields (in Go's order) the policy needs, and embedded
    structs. Decoded, it is a dict with every field and embed label."""

    __slots__ = ("_index", "_leaves", "entries", "name")

    def __init__(self, *entries: Field | Embed, name: str = "") -> None:
        self.entries = tuple(entries)
        self.name = name
        self._leaves: list[_Leaf] | None = None
        self._index: dict[str, _Leaf] = {}

    @property
    def go(self) -> str:  # type: ignore[override]
        return self.name or "struct"

    def zero(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for entry in self.entries:
            if isinstance(entry, Embed):
                out[entry.label] = entry.shape.zero()
            else:
                out[entry[0]] = entry[1].zero()
        return out

    def leaves(self) -> list[_Leaf]:
        """The fields JSON keys can reach, promoted ones included, resolved
        as Go's ``typeFields`` does: the shallowest field of a name wins, then
        a tagged one; two at the same depth hide each other."""
        if self._leaves is None:
            found: list[tuple[int, bool, _Leaf]] = []
            self._collect((), 0, found, set())
            by_name: dict[str, list[tuple[int, bool, _Leaf]]] = {}
            for item in found:
                by_name.setdefault(item[2].name, []).append(item)
            leaves = []
            for items in by_name.values():
                depth = min(d for d, _, _ in items)
                top = [i for i in items if i[0] == depth]
                if len(top) > 1:
                    top = [i for i in top if i[1]]
                if len(top) == 1:
                    leaves.append(top[0][2])
            leaves.sort(key=lambda leaf: leaf.path)
            self._leaves = leaves
            self._index = {leaf.name: leaf for leaf in leaves}
        return self._leaves

    def _collect(
        self,
        path: tuple[int, ...],
        depth: int,
        out: list[tuple[int, bool, _Leaf]],
        seen: set[int],
    ) -> None:
        if id(self) in seen:  # Go visits each embedded type once
            return
        seen = seen | {id(self)}
        for i, entry in enumerate(self.entries):
            if isinstance(entry, Embed):
                inner = entry.shape.elem if isinstance(entry.shape, Ptr) else entry.shape
                assert isinstance(inner, Struct), "Embed takes a Struct or a Ptr(Struct)"
                inner._collect((*path, i), depth + 1, out, seen)
            else:
                name, shape = entry[0], entry[1]
                tagged = len(entry) > 2 and bool(entry[2])
                out.append((depth, tagged, _Leaf(name, fold(name), (*path, i), shape)))

    def field(self, key: str) -> _Leaf | None:
        """The field a JSON key sets: an exact name first, else the first
        field (in Go's order) whose name equals the key case-insensitively."""
        leaves = self.leaves()
        exact = self._index.get(key)
        if exact is not None:
            return exact
        folded = fold(key)
        for leaf in leaves:
            if leaf.folded == folded:
                return leaf
        return None

    def __repr__(self) -> str:
        return f"Struct({self.name or ', '.join(_entry_name(e) for e in self.entries)})"


def _entry_name(entry: Field | Embed) -> str:
    return entry.label if isinstance(entry, Embed) else entry[0]


# The folding Go's bytes.EqualFold applies between a JSON key and an ASCII field
# name: ASCII letters regardless of case, plus the two non-ASCII runes whose
# simple case folding reaches an ASCII letter.
_FOLD = {i: i + 32 for i in range(ord("A"), ord("Z") + 1)} | {0x17F: ord("s"), 0x212A: ord("k")}


def fold(name: str) -> str:
    """The key a field name and a JSON key share when Go matches them
    case-insensitively (for the daemon's field names, all ASCII)."""
    return name.translate(_FOLD)


# --- parsing --------------------------------------------------------------------------------


def _one_replacement_per_byte(exc: UnicodeError) -> tuple[str, int]:
    # Go's utf8.DecodeRune yields one RuneError per invalid byte; Python's
    # "replace" handler may swallow a whole invalid sequence into one.
    assert isinstance(exc, UnicodeDecodeError)
    return "\ufffd", exc.start + 1


codecs.register_error("gojson.replace", _one_replacement_per_byte)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _Number(str):
    """A JSON number, kept as its literal text (Go converts it per target type)."""

    __slots__ = ()


class _GoSlice(list[Any]):
    """A decoded slice: a list, plus the elements of its backing array past
    its length (Go reuses them when a later array in the body is longer)."""

    __slots__ = ("tail",)

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self.tail: list[Any] = []


class _Pairs(list[tuple[str, Any]]):
    """A JSON object: its members in order, duplicates kept."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _pairs(items: list[tuple[str, Any]]) -> _Pairs:
    return _Pairs((_fix_text(k), v) for k, v in items)


def _fix_text(value: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", value) if not value.isascii() else value


def _fix(value: Any) -> Any:
    if type(value) is str:
        return _fix_text(value)
    if type(value) is list:
        return [_fix(v) for v in value]
    if type(value) is _Pairs:
        return _Pairs((k, _fix(v)) for k, v in value)
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_float=_Number,
    parse_int=_Number,
    parse_constant=_reject_constant,
    strict=True,
)
_SPACE = " \t\n\r"


def parse(body: bytes | str) -> Any:
    """The first JSON value of ``body`` as Go's ``json.Decoder`` reads it:
    objects as ordered member lists (duplicates kept), numbers as their text.
    GoJSONError("syntax") if that value is malformed."""
    text = body if isinstance(body, str) else body.decode("utf-8", "gojson.replace")
    start = len(text) - len(text.lstrip(_SPACE))
    if start == len(text):
        raise GoJSONError("syntax", "EOF: the body is empty")
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except RecursionError:
        raise GoJSONError("syntax", "the body is nested too deeply") from None
    except ValueError as exc:
        raise GoJSONError("syntax", f"invalid JSON: {exc}") from None
    return _fix(value)


# --- decoding -------------------------------------------------------------------------------


def decode(body: bytes | str, shape: Shape) -> Any:
    """What the daemon's value of type ``shape`` holds after Go decodes the
    first JSON value of ``body`` into it (starting from its zero value).

    GoJSONError on malformed JSON, or on a value of the wrong type for a
    field of ``shape`` (Go's first such error, after decoding the rest)."""
    return decode_value(parse(body), shape)


def decode_value(value: Any, shape: Shape, into: Any = None) -> Any:
    """Decode an already ``parse``-d value into ``into`` (default: the zero value)."""
    errors: list[str] = []
    current = shape.zero() if into is None else into
    try:
        result = _Decoder(errors).value(value, shape, current, "")
    except RecursionError:
        raise GoJSONError("syntax", "the body is nested too deeply") from None
    if errors:
        raise GoJSONError("type", errors[0])
    return result


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "bool"
    if isinstance(value, _Number):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Decoder:
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors

    def mismatch(self, value: Any, shape: Shape, where: str) -> None:
        what = _json_kind(value)
        if what == "number":
            what = f"number {value}"
        self.errors.append(f"{where or 'body'}: {what} where the daemon expects {shape.go}")

    def value(self, value: Any, shape: Shape, current: Any, where: str) -> Any:
        """The new value of a Go variable of ``shape`` holding ``current``."""
        if isinstance(shape, Ptr):
            if value is None:
                return None
            inner = shape.elem.zero() if current is None else current
            return self.value(value, shape.elem, inner, where)
        if value is None:
            # null: nil for pointers, slices, maps and interfaces; no change otherwise.
            if isinstance(shape, (Slice, Map)) or shape is ANY:
                return None
            return current
        if isinstance(shape, Struct):
            if type(value) is not _Pairs:
                self.mismatch(value, shape, where)
                return current
            return self.struct(value, shape, current, where)
        if isinstance(shape, Map):
            if type(value) is not _Pairs:
                self.mismatch(value, shape, where)
                return current
            out = {} if current is None else current
            for key, item in value:
                # Each element starts from its zero value: no merging in maps.
                out[key] = self.value(item, shape.elem, shape.elem.zero(), where)
            return out
        if isinstance(shape, Slice):
            if type(value) is not list:
                self.mismatch(value, shape, where)
                return current
            return self.slice(value, shape, current, where)
        assert isinstance(shape, _Scalar)
        return self.scalar(value, shape, current, where)

    def slice(self, items: list[Any], shape: Slice, current: Any, where: str) -> Any:
        """Go's array decoding, capacity included: element i is decoded into
        the slice's element i if its backing array has one (merging into a
        struct, even one left over past the length by an earlier, longer
        array), the array grows by half (at least to 4), and the length is
        cut to the new number of elements."""
        if current is None:
            backing: list[Any] = []
            length = 0
        else:
            backing = [*current, *current.tail]
            length = len(current)
        i = 0
        for item in items:
            if i >= len(backing):
                size = max(len(backing) + len(backing) // 2, 4)
                # A new backing array: the first `length` elements copied, the rest zero.
                backing = backing[:length] + [shape.elem.zero() for _ in range(size - length)]
            length = max(length, i + 1)
            backing[i] = self.value(item, shape.elem, backing[i], where)
            i += 1
        if i == 0:
            return _GoSlice()
        out = _GoSlice(backing[:i])
        out.tail = backing[i:]
        return out

    def struct(self, pairs: _Pairs, shape: Struct, current: dict[str, Any], where: str) -> Any:
        for key, item in pairs:
            leaf = shape.field(key)
            if leaf is None:
                continue  # unknown fields are ignored
            target = current
            entries: tuple[Field | Embed, ...] = shape.entries
            # Walk (allocating nil embedded pointers) to the struct holding the field.
            for step in leaf.path[:-1]:
                embed = entries[step]
                assert isinstance(embed, Embed)
                inner = target[embed.label]
                if inner is None:
                    inner = target[embed.label] = (
                        embed.shape.elem.zero() if isinstance(embed.shape, Ptr) else {}
                    )
                target = inner
                struct = embed.shape.elem if isinstance(embed.shape, Ptr) else embed.shape
                assert isinstance(struct, Struct)
                entries = struct.entries
            field_where = f"{where}.{leaf.name}" if where else leaf.name
            target[leaf.name] = self.value(item, leaf.shape, target[leaf.name], field_where)
        return current

    def scalar(self, value: Any, shape: _Scalar, current: Any, where: str) -> Any:
        kind = shape.kind
        if kind == "any":
            return self.plain(value, where)
        if kind == "bool":
            if value is True or value is False:
                return value
        elif kind == "string":
            if type(value) is str:
                return value
        elif isinstance(value, _Number):
            number = self.number(value, shape)
            if number is not None:
                return number
        self.mismatch(value, shape, where)
        return current

    def number(self, text: str, shape: _Scalar) -> int | float | None:
        if shape.kind == "float":
            number = float(text)
            return None if math.isinf(number) else number
        # strconv.ParseInt / ParseUint: digits only, no fraction or exponent.
        if not re.fullmatch(r"-?[0-9]+", text):
            return None
        n = int(text)
        if shape.kind == "int":
            limit = 1 << (shape.bits - 1)
            return n if -limit <= n < limit else None
        return n if 0 <= n < (1 << shape.bits) else None

    def plain(self, value: Any, where: str) -> Any:
        """A value decoded into ``interface{}``."""
        if type(value) is _Pairs:
            return {k: self.plain(v, where) for k, v in value}  # a later duplicate wins
        if type(value) is list:
            return [self.plain(v, where) for v in value]
        if isinstance(value, _Number):
            number = float(value)
            if math.isinf(number):
                self.mismatch(value, FLOAT, where)
                return None
            return number
        return value


def walk(value: Any, *path: str | int) -> Any:
    """``value[p0][p1]...``, or None as soon as a step meets a nil value."""
    for step in path:
        if value is None:
            return None
        value = value[step]
    return value


def each(values: Iterable[Any] | None) -> Iterable[Any]:
    """The elements of a decoded slice (a nil slice has none)."""
    return values or ()
