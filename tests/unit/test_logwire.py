"""The log entry codec (plugin/_logwire.py): the protocol's test vectors,
round trips, any field order, unknown fields, truncated input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin._logwire import (
    FrameError,
    LogEntry,
    PartialMetadata,
    decode_entry,
    decode_frames,
    encode_entries,
    encode_entry,
    terminate_lines,
    walk_frames,
)

VECTOR_1 = bytes.fromhex("0000001f0a067374646f757410959a97ece39fe7cb171a0b68656c6c6f20776f726c64")
ENTRY_1 = LogEntry("stdout", 1700000000123456789, b"hello world")
VECTOR_2 = bytes.fromhex("0000001a0a0673746465727210011a017820012a09080112036162631802")
ENTRY_2 = LogEntry("stderr", 1, b"x", True, PartialMetadata(True, "abc", 2))


def test_vectors_encode() -> None:
    assert encode_entry(ENTRY_1) == VECTOR_1
    assert encode_entry(ENTRY_2) == VECTOR_2
    assert encode_entries([ENTRY_1, ENTRY_2]) == VECTOR_1 + VECTOR_2


def test_vectors_decode() -> None:
    assert decode_frames(VECTOR_1 + VECTOR_2) == ([ENTRY_1, ENTRY_2], len(VECTOR_1 + VECTOR_2))
    assert walk_frames(VECTOR_1) == (len(VECTOR_1), 1, True)
    assert walk_frames(VECTOR_1 + VECTOR_2) == (len(VECTOR_1 + VECTOR_2), 2, False)


def test_time_as_datetime() -> None:
    assert ENTRY_1.time.isoformat() == "2023-11-14T22:13:20.123456+00:00"


def test_zero_values_are_left_out() -> None:
    assert encode_entry(LogEntry()) == b"\0\0\0\0"
    assert decode_entry(b"") == LogEntry()
    # An empty metadata message is still sent when present (a non-nil pointer in Go).
    assert encode_entry(LogEntry(partial_metadata=PartialMetadata())) == b"\0\0\0\x02\x2a\x00"


def test_negative_time_and_ordinal_take_ten_bytes() -> None:
    entry = LogEntry("stdout", -1, b"", True, PartialMetadata(False, "", -2))
    raw = encode_entry(entry)
    assert raw[4:23] == b"\x0a\x06stdout\x10" + b"\xff" * 9 + b"\x01"
    assert decode_frames(raw)[0] == [entry]


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire_type)
    if wire_type == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    attrs = _field(6, 2, _field(1, 2, b"key") + _field(2, 2, b"value"))  # Docker >= 29.5
    message = (
        _field(99, 0, _varint(300))
        + _field(1, 2, b"stdout")
        + _field(7, 1, b"12345678")
        + _field(2, 0, _varint(42))
        + _field(8, 5, b"1234")
        + attrs
        + _field(3, 2, b"line")
        + _field(5, 2, _field(9, 0, b"\x01") + _field(2, 2, b"id"))
    )
    assert decode_entry(message) == LogEntry("stdout", 42, b"line", False, PartialMetadata(id="id"))


def test_last_occurrence_wins() -> None:
    message = _field(3, 2, b"first") + _field(3, 2, b"second") + _field(2, 0, _varint(1))
    assert decode_entry(message) == LogEntry("", 1, b"second")


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (_field(3, 2, b"line")[:-1], "truncated line"),
        (b"\x10\xff\xff", "truncated varint"),
        (b"\x10" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
        (_field(1, 2, b"stdout")[:-2], "truncated source"),
        (_field(5, 2, b"\x12\x05ab"), "truncated partial_log_metadata.id"),
        (_field(9, 3, b""), "unsupported wire type 3"),
        (_field(9, 1, b"123"), "truncated field"),
        (b"\x00\x01", "field number 0"),
    ],
)
def test_malformed_messages(message: bytes, error: str) -> None:
    with pytest.raises(FrameError, match=error):
        decode_entry(message)


def test_a_frame_over_the_limit() -> None:
    with pytest.raises(FrameError, match=r"^frame of 100 bytes at offset 0 \(limit 99\)$"):
        decode_frames(b"\0\0\0\x64" + b"x" * 100, max_frame=99)
    with pytest.raises(FrameError, match=r"^frame of 100 bytes at offset 35 \(limit 99\)$"):
        walk_frames(VECTOR_1 + b"\0\0\0\x64", max_frame=99)


# --- properties ---------------------------------------------------------------------

METADATA = st.builds(
    PartialMetadata,
    st.booleans(),
    st.text(max_size=70),
    st.integers(-(2**31), 2**31 - 1),
)
ENTRIES = st.builds(
    LogEntry,
    st.sampled_from(["stdout", "stderr", ""]) | st.text(max_size=10),
    st.integers(-(2**63), 2**63 - 1) | st.integers(1_500_000_000 * 10**9, 2_000_000_000 * 10**9),
    st.binary(max_size=300),
    st.booleans(),
    st.none() | METADATA,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ENTRIES, max_size=8))
def test_round_trip(entries: list[LogEntry]) -> None:
    raw = encode_entries(entries)
    assert decode_frames(raw) == (entries, len(raw))
    end, count, whole = walk_frames(raw)
    assert (end, count) == (len(raw), len(entries))
    assert whole == all(not e.partial and e.partial_metadata is None for e in entries)


def _fields(entry: LogEntry) -> list[bytes]:
    """The entry's fields as separate encoded pieces."""
    out = []
    if entry.source:
        out.append(_field(1, 2, entry.source.encode()))
    if entry.time_nano:
        out.append(_field(2, 0, _varint(entry.time_nano)))
    if entry.line:
        out.append(_field(3, 2, entry.line))
    if entry.partial:
        out.append(_field(4, 0, b"\x01"))
    meta = entry.partial_metadata
    if meta is not None:
        inner = [
            _field(1, 0, b"\x01") if meta.last else b"",
            _field(2, 2, meta.id.encode()) if meta.id else b"",
            _field(3, 0, _varint(meta.ordinal)) if meta.ordinal else b"",
        ]
        out.append(_field(5, 2, b"".join(reversed(inner))))
    return out


@settings(max_examples=300, deadline=None)
@given(ENTRIES, st.randoms(use_true_random=False))
def test_any_field_order(entry: LogEntry, rnd: object) -> None:
    fields = _fields(entry)
    rnd.shuffle(fields)  # type: ignore[attr-defined]
    message = b"".join(fields)
    framed = len(message).to_bytes(4, "big") + message
    assert decode_entry(message) == entry
    assert decode_frames(framed)[0] == [entry]
    whole = not entry.partial and entry.partial_metadata is None
    assert walk_frames(framed) == (len(framed), 1, whole)


@settings(max_examples=200, deadline=None)
@given(st.lists(ENTRIES, min_size=1, max_size=4), st.data())
def test_truncated_input(entries: list[LogEntry], data: st.DataObject) -> None:
    raw = encode_entries(entries)
    cut = data.draw(st.integers(0, len(raw) - 1))
    decoded, end = decode_frames(raw[:cut])
    # Only whole frames are decoded; the rest waits for more bytes.
    assert decoded == entries[: len(decoded)]
    assert end == len(encode_entries(decoded))
    assert walk_frames(raw[:cut])[:2] == (end, len(decoded))
    # Continuing from there with the remaining bytes gives the rest.
    assert decode_frames(raw[end:])[0] == entries[len(decoded) :]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_is_refused_or_decoded_never_crashes(raw: bytes) -> None:
    try:
        entries, end = decode_frames(raw, max_frame=1000)
    except FrameError:
        with pytest.raises(FrameError):
            walk_frames(raw, max_frame=1000)
        return
    assert 0 <= end <= len(raw)
    assert walk_frames(raw, max_frame=1000)[:2] == (end, len(entries))


@settings(max_examples=300, deadline=None)
@given(st.lists(ENTRIES, max_size=8))
def test_terminated_lines(entries: list[LogEntry]) -> None:
    """What ReadLogs sends: a newline after each entry that ends a line."""
    expected = []
    for e in entries:
        ends = not e.partial or (e.partial_metadata is not None and e.partial_metadata.last)
        line = e.line + b"\n" if ends else e.line
        expected.append(LogEntry(e.source, e.time_nano, line, e.partial, e.partial_metadata))
    raw = terminate_lines(encode_entries(entries))
    assert decode_frames(raw) == (expected, len(raw))


def test_terminated_lines_of_the_daemons_layout() -> None:
    for n in (0, 1, 126, 127, 128, 300):
        entry = LogEntry("stdout", 1700000000123456789, b"y" * n)
        raw = terminate_lines(encode_entry(entry))
        assert raw == encode_entry(LogEntry("stdout", 1700000000123456789, b"y" * n + b"\n"))
    with pytest.raises(FrameError, match=r"^truncated frame at offset 0$"):
        terminate_lines(VECTOR_1[:-1])
