"""``python3 -m bench.logcodec``: the log entry codec, hand-written
(plugin/_logwire.py) against Google's protobuf package (its upb C
extension), in entries per second, interleaved rounds, median.

Measured on 200,000 entries shaped as the daemon sends them (source, a
current timestamp, a ~20-byte line):

- frames: find the entries of a buffer and whether any is a fragment of a
  longer line, what a driver storing them needs (hand: ``walk_frames``,
  no decoding; protobuf: parse each message);
- decode: typed entries (hand: ``decode_frames``; protobuf: parse, then
  copy the fields into a ``LogEntry``, what a driver's ``on_entry`` gets);
- encode: framed bytes from entries.

protobuf comes from ``--site`` (bench/run installs it there) or the
environment; without it only the hand codec is measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugin._logwire import (  # noqa: E402
    LogEntry,
    PartialMetadata,
    decode_frames,
    encode_entries,
    walk_frames,
)


def protobuf_classes() -> tuple[Any, str] | None:
    """The LogEntry message class built from its schema, without protoc."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from google.protobuf.internal import api_implementation
    except ImportError:
        return None
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="entry.proto", syntax="proto3")
    meta = proto.message_type.add(name="PartialLogEntryMetadata")
    meta.field.add(name="last", number=1, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    meta.field.add(name="id", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    meta.field.add(name="ordinal", number=3, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    entry = proto.message_type.add(name="LogEntry")
    entry.field.add(name="source", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry.field.add(name="time_nano", number=2, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    entry.field.add(name="line", number=3, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    entry.field.add(name="partial", number=4, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    entry.field.add(
        name="partial_log_metadata",
        number=5,
        type=f.TYPE_MESSAGE,
        type_name=".PartialLogEntryMetadata",
        label=f.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("LogEntry"))
    return cls, api_implementation.Type()


def protobuf_size() -> float:
    import google.protobuf

    root = Path(google.protobuf.__file__).parent.parent
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        total += sum(os.lstat(os.path.join(dirpath, n)).st_size for n in files)
    return total / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.logcodec", description=__doc__)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--site", help="a directory with protobuf (bench/run installs it)")
    args = parser.parse_args(argv)
    if args.site:
        sys.path.insert(0, args.site)
    n = args.entries
    t0 = 1_733_000_000_000_000_000
    entries = [
        LogEntry("stdout" if i % 2 else "stderr", t0 + i * 997, b"line %d of the output" % i)
        for i in range(n)
    ]
    raw = encode_entries(entries)
    pb = protobuf_classes()

    def hand_frames() -> None:
        assert walk_frames(raw)[:2] == (len(raw), n)

    def hand_decode() -> None:
        assert len(decode_frames(raw)[0]) == n

    def hand_encode() -> None:
        encode_entries(entries)

    cases: dict[str, Callable[[], None]] = {
        "hand frames": hand_frames,
        "hand decode": hand_decode,
        "hand encode": hand_encode,
    }
    if pb is not None:
        cls = pb[0]

        def messages() -> list[Any]:
            out = []
            p = 0
            size = len(raw)
            while p + 4 <= size:
                q = p + 4 + int.from_bytes(raw[p : p + 4], "big")
                m = cls()
                m.ParseFromString(raw[p + 4 : q])
                out.append(m)
                p = q
            return out

        def pb_frames() -> None:
            assert not any(m.partial for m in messages())

        def pb_decode() -> None:
            out = []
            for m in messages():
                meta = None
                if m.HasField("partial_log_metadata"):
                    pm = m.partial_log_metadata
                    meta = PartialMetadata(pm.last, pm.id, pm.ordinal)
                out.append(LogEntry(m.source, m.time_nano, m.line, m.partial, meta))
            assert len(out) == n

        def pb_encode() -> None:
            out = bytearray()
            for e in entries:
                data = cls(source=e.source, time_nano=e.time_nano, line=e.line).SerializeToString()
                out += len(data).to_bytes(4, "big")
                out += data
            assert bytes(out) == raw

        cases.update({"protobuf frames": pb_frames, "protobuf decode": pb_decode})
        cases["protobuf encode"] = pb_encode
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            rates[name].append(n / (time.perf_counter() - start))
    print(f"\nlog entry codec: {n} entries, median of {args.rounds} interleaved rounds")
    for name in cases:
        print(f"  {name:<16}{statistics.median(rates[name]) / 1e3:>8.0f}k entries/s")
    if pb is None:
        print("  protobuf not installed: only the hand codec measured")
        return 0
    print(f"  protobuf {pb[1]} backend; installed size {protobuf_size():.1f} MB")
    for what in ("frames", "decode", "encode"):
        ratio = statistics.median(rates[f"hand {what}"]) / statistics.median(
            rates[f"protobuf {what}"]
        )
        print(f"  hand/protobuf {what}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
