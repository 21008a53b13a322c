"""Log drivers (plugin/logging.py): the FIFO from StartLogging to
StopLogging, the ways a driver takes entries, Capabilities, ReadLogs as a
stream, and the reassembly of long lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin import PluginError
from plugin._logwire import decode_frames, encode_entries
from plugin.logging import (
    Info,
    LogBatch,
    LogDriver,
    LogEntry,
    LogStream,
    PartialMetadata,
    ReadConfig,
    ReadLogsRequest,
    Reassembler,
    StartLoggingRequest,
    parse_time_ns,
)
from plugin.testing import PluginClient

CID = "c" * 64
#: The Info the daemon sends (dockerd 20.10): nulls for empty lists and maps.
INFO = {
    "Config": {"max-size": "1m"},
    "ContainerID": CID,
    "ContainerName": "/web",
    "ContainerEntrypoint": "sh",
    "ContainerArgs": None,
    "ContainerImageID": "sha256:" + "a" * 64,
    "ContainerImageName": "busybox",
    "ContainerCreated": "2024-05-01T12:00:00.123456789Z",
    "ContainerEnv": None,
    "ContainerLabels": None,
    "LogPath": "",
    "DaemonName": "docker",
}
ZERO = "0001-01-01T00:00:00Z"
ALL = {"Since": ZERO, "Until": ZERO, "Tail": -1, "Follow": False}


def lines(n: int, source: str = "stdout", start: int = 0) -> list[LogEntry]:
    return [
        LogEntry(source, 1_700_000_000_000_000_000 + i, b"line %d" % i)
        for i in range(start, start + n)
    ]


class Fifo:
    """A FIFO held open for reading and writing, as the daemon holds it."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self.fd = os.open(path, os.O_RDWR)

    def write(self, entries: list[LogEntry]) -> None:
        data = encode_entries(entries)
        while data:
            data = data[os.write(self.fd, data[: 1 << 16]) :]

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Fifo]:
    f = Fifo(tmp_path / "fifo")
    yield f
    f.close()


def start(client: PluginClient, fifo: Fifo, config: dict[str, str] | None = None) -> Any:
    info = {**INFO, "Config": config}
    return client.call("LogDriver.StartLogging", {"File": fifo.path, "Info": info})


def stop(client: PluginClient, fifo: Fifo) -> Any:
    return client.call("LogDriver.StopLogging", {"File": fifo.path})


class Collect(LogDriver):
    """Keeps every entry, and what on_start and on_stop saw."""

    def __init__(self) -> None:
        self.got: list[LogEntry] = []
        self.threads: set[str] = set()
        self.stopped: list[tuple[str, int]] = []

    def on_start(self, stream: LogStream) -> None:
        if stream.info.config.get("bad"):
            raise PluginError(f"invalid log opt bad={stream.info.config['bad']!r}")
        stream.state = "mine"

    def on_entry(self, stream: LogStream, entry: LogEntry) -> None:
        assert stream.state == "mine"
        self.threads.add(threading.current_thread().name)
        self.got.append(entry)

    def on_stop(self, stream: LogStream) -> None:
        self.stopped.append((stream.info.container_name, stream.entries))


class Reader(Collect):
    def read_logs(self, req: ReadLogsRequest) -> Iterator[LogEntry]:
        yield from ()


# --- models ------------------------------------------------------------------------


def test_info_decodes_the_daemons_nulls() -> None:
    info = Info.from_wire(INFO)
    assert info.container_id == CID
    assert info.container_args == [] and info.container_env == [] and info.container_labels == {}
    assert Info.from_wire({**INFO, "Config": None}).config == {}


def test_read_config_times_keep_nanoseconds() -> None:
    config = ReadConfig.from_wire(
        {"Since": "2024-05-01T12:00:00.123456789Z", "Until": ZERO, "Tail": 10, "Follow": True}
    )
    assert config.since_ns == 1714564800123456789
    assert config.until_ns is None
    assert (config.tail, config.follow) == (10, True)
    assert parse_time_ns("2024-05-01T14:00:00.5+02:00") == 1714564800500000000
    assert parse_time_ns("") is None


def test_a_bad_time_is_a_bad_request() -> None:
    with PluginClient(Reader()) as client:
        reply = client.post(
            "/LogDriver.ReadLogs", {"Info": INFO, "Config": {**ALL, "Since": "yesterday"}}
        )
    assert (reply.status, reply.json) == (
        400,
        {"Err": "bad request: Config: not an RFC 3339 time: 'yesterday'"},
    )


def test_capabilities_in_the_daemons_shape() -> None:
    with PluginClient(Collect()) as client:
        assert client.call("LogDriver.Capabilities") == {"Cap": {"ReadLogs": False}}
        assert client.post("/LogDriver.ReadLogs", {"Info": INFO, "Config": ALL}).status == 404
    with PluginClient(Reader()) as client:
        assert client.call("LogDriver.Capabilities") == {"Cap": {"ReadLogs": True}}


def test_activate_names_the_log_driver() -> None:
    with PluginClient(Collect()) as client:
        assert client.call("Plugin.Activate") == {"Implements": ["LogDriver"]}


# --- the FIFO -------------------------------------------------------------------------


def test_entries_reach_on_entry_in_order_off_the_event_loop(fifo: Fifo) -> None:
    driver = Collect()
    sent = lines(5000) + lines(5000, "stderr", 5000)
    with PluginClient(driver) as client:
        assert start(client, fifo) == {}
        fifo.write(sent)
        assert stop(client, fifo) == {}
    assert driver.got == sent
    assert driver.stopped == [("/web", 10000)]
    assert driver.threads and all(name.startswith("log ") for name in driver.threads)


def test_stop_drains_what_is_buffered_without_waiting_for_eof(fifo: Fifo) -> None:
    """The daemon still holds the FIFO open when it sends StopLogging."""
    driver = Collect()
    with PluginClient(driver) as client:
        start(client, fifo)
        fifo.write(lines(300))
        t0 = time.monotonic()
        stop(client, fifo)
        assert time.monotonic() - t0 < 2
    assert len(driver.got) == 300


def test_stop_answers_within_its_deadline_when_the_driver_is_stuck(fifo: Fifo) -> None:
    release = threading.Event()

    class Stuck(Collect):
        stop_timeout = 0.3

        def on_entry(self, stream: LogStream, entry: LogEntry) -> None:
            release.wait(30)
            super().on_entry(stream, entry)

    driver = Stuck()
    with PluginClient(driver) as client:
        start(client, fifo)
        fifo.write(lines(3))
        t0 = time.monotonic()
        assert stop(client, fifo) == {}
        assert 0.3 <= time.monotonic() - t0 < 2
        release.set()
        deadline = time.monotonic() + 10
        while not driver.stopped and time.monotonic() < deadline:
            time.sleep(0.01)
    # The entries were still handled, after the answer.
    assert len(driver.got) == 3
    assert driver.stopped == [("/web", 3)]


def test_on_start_refuses_with_the_drivers_message(fifo: Fifo) -> None:
    driver = Collect()
    with PluginClient(driver) as client:
        reply = client.post(
            "/LogDriver.StartLogging", {"File": fifo.path, "Info": {**INFO, "Config": {"bad": "x"}}}
        )
        assert (reply.status, reply.json) == (500, {"Err": "invalid log opt bad='x'"})
        # Nothing reads the FIFO: StopLogging knows no such stream.
        assert stop(client, fifo) == {}
    assert driver.stopped == []
    # The FIFO was closed again: this process holds only the test's descriptor.
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir used is gone
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert held.count(fifo.path) == 1


def test_a_missing_fifo(tmp_path: Path) -> None:
    started: list[LogStream] = []

    class Watch(Collect):
        def on_start(self, stream: LogStream) -> None:
            started.append(stream)

    with PluginClient(Watch()) as client:
        path = str(tmp_path / "gone")
        reply = client.post("/LogDriver.StartLogging", {"File": path, "Info": INFO})
    assert (reply.status, reply.json) == (
        500,
        {"Err": f"cannot open the log FIFO {path}: No such file or directory"},
    )
    assert started == []  # the driver set nothing up for it


def test_not_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with PluginClient(Collect()) as client:
        reply = client.post("/LogDriver.StartLogging", {"File": str(path), "Info": INFO})
    assert (reply.status, reply.json) == (500, {"Err": f"cannot log to {path}: not a FIFO"})


def test_the_same_fifo_twice(fifo: Fifo) -> None:
    with PluginClient(Collect()) as client:
        start(client, fifo)
        reply = client.post("/LogDriver.StartLogging", {"File": fifo.path, "Info": INFO})
        assert (reply.status, reply.json) == (500, {"Err": f"already logging from {fifo.path}"})
        stop(client, fifo)


def test_a_driver_without_a_handler(fifo: Fifo) -> None:
    class Nothing(LogDriver):
        pass

    with PluginClient(Nothing()) as client:
        reply = client.post("/LogDriver.StartLogging", {"File": fifo.path, "Info": INFO})
    assert reply.status == 500
    assert reply.json == {"Err": "unexpected TypeError in the plugin (see its log)"}


def test_async_on_entry_runs_on_the_loop(fifo: Fifo) -> None:
    got: list[LogEntry] = []
    loops: set[int] = set()

    class Async(LogDriver):
        async def on_entry(self, stream: LogStream, entry: LogEntry) -> None:
            loops.add(id(asyncio.get_running_loop()))
            got.append(entry)

    with PluginClient(Async()) as client:
        start(client, fifo)
        fifo.write(lines(500))
        stop(client, fifo)
    assert got == lines(500) and len(loops) == 1


def test_on_batch_gets_the_framed_bytes(fifo: Fifo) -> None:
    raws: list[bytes] = []

    class Raw(LogDriver):
        def on_batch(self, stream: LogStream, batch: LogBatch) -> None:
            assert batch.whole and len(batch) == len(batch.entries)
            raws.append(batch.raw)

    with PluginClient(Raw()) as client:
        start(client, fifo)
        fifo.write(lines(2000))
        stop(client, fifo)
    assert b"".join(raws) == encode_entries(lines(2000))


def test_consume_iterates_the_stream(fifo: Fifo) -> None:
    got: list[LogEntry] = []
    ended: list[bool] = []

    class Iterating(LogDriver):
        async def consume(self, stream: LogStream) -> None:
            async for entry in stream:
                got.append(entry)
            ended.append(True)

    with PluginClient(Iterating()) as client:
        start(client, fifo)
        fifo.write(lines(3000))
        stop(client, fifo)
    assert got == lines(3000) and ended == [True]


def test_a_failing_handler_does_not_stop_the_stream(fifo: Fifo) -> None:
    class Picky(Collect):
        def on_entry(self, stream: LogStream, entry: LogEntry) -> None:
            if entry.line.endswith(b"3"):
                raise RuntimeError("no threes")
            super().on_entry(stream, entry)

    driver = Picky()
    with PluginClient(driver) as client:
        start(client, fifo)
        fifo.write(lines(20))
        stop(client, fifo)
    assert [e.line for e in driver.got] == [b"line %d" % i for i in range(20) if i % 10 != 3]


def test_undecodable_data_is_read_and_dropped(fifo: Fifo) -> None:
    driver = Collect()
    with PluginClient(driver) as client:
        start(client, fifo)
        fifo.write(lines(2))
        os.write(fifo.fd, b"\xff\xff\xff\xff garbage")
        fifo.write(lines(2))
        stop(client, fifo)
    assert driver.got == lines(2)


def test_the_writer_closing_ends_the_stream(tmp_path: Path) -> None:
    driver = Collect()
    os.mkfifo(tmp_path / "f")
    path = str(tmp_path / "f")
    holder = os.open(path, os.O_RDWR)
    with PluginClient(driver) as client:
        client.call("LogDriver.StartLogging", {"File": path, "Info": INFO})
        writer = os.open(path, os.O_WRONLY)
        os.close(holder)
        os.write(writer, encode_entries(lines(7)))
        os.close(writer)  # EOF: every writer gone
        deadline = time.monotonic() + 10
        while not driver.stopped and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.call("LogDriver.StopLogging", {"File": path}) == {}
    assert driver.got == lines(7) and driver.stopped == [("/web", 7)]


# --- ReadLogs -------------------------------------------------------------------------


def unterminated(entries: list[LogEntry]) -> list[LogEntry]:
    """ReadLogs' entries as they came from the FIFO: every entry that ends a
    line has its newline, which is taken off."""
    out = []
    for e in entries:
        if not e.partial or (e.partial_metadata is not None and e.partial_metadata.last):
            assert e.line.endswith(b"\n"), e
            e = LogEntry(e.source, e.time_nano, e.line[:-1], e.partial, e.partial_metadata)
        out.append(e)
    return out


def read(client: PluginClient, **config: Any) -> tuple[int, list[LogEntry] | Any]:
    reply = client.post("/LogDriver.ReadLogs", {"Info": INFO, "Config": {**ALL, **config}})
    if reply.status != 200:
        return reply.status, reply.json
    entries, end = decode_frames(reply.body)
    assert end == len(reply.body)
    return reply.status, unterminated(entries)


def test_read_logs_from_a_generator_on_its_own_thread() -> None:
    threads: list[str] = []

    class Gen(Collect):
        def read_logs(self, req: ReadLogsRequest) -> Iterator[LogEntry | LogBatch | None]:
            threads.append(threading.current_thread().name)
            assert req.info.container_id == CID and req.config.tail == 5
            yield LogEntry("stdout", 1, b"one")
            yield None  # a heartbeat sends nothing
            yield LogBatch.of(lines(3))

    with PluginClient(Gen()) as client:
        assert read(client, Tail=5) == (200, [LogEntry("stdout", 1, b"one"), *lines(3)])
    assert threads == ["LogDriver.ReadLogs"]


def test_read_logs_from_an_async_generator() -> None:
    class AGen(Collect):
        async def read_logs(self, req: ReadLogsRequest) -> AsyncIterator[LogEntry]:
            for entry in lines(50_000):
                yield entry

    with PluginClient(AGen()) as client:
        assert read(client) == (200, lines(50_000))


def test_read_logs_errors_before_the_first_entry_are_json() -> None:
    class NoSuch(Collect):
        def read_logs(self, req: ReadLogsRequest) -> Iterator[LogEntry]:
            raise PluginError(f"no logs for {req.info.container_id[:12]}")
            yield  # a generator

    class Wrong(Collect):
        def read_logs(self, req: ReadLogsRequest) -> Iterator[Any]:
            yield "text"

    with PluginClient(NoSuch()) as client:
        assert read(client) == (500, {"Err": "no logs for cccccccccccc"})
    with PluginClient(Wrong()) as client:
        assert read(client) == (500, {"Err": "unexpected TypeError in the plugin (see its log)"})


def test_an_error_after_the_first_entry_ends_the_stream() -> None:
    class Half(Collect):
        def read_logs(self, req: ReadLogsRequest) -> Iterator[LogEntry]:
            yield from lines(2)
            raise OSError("disk gone")

    with PluginClient(Half()) as client:
        assert read(client) == (200, lines(2))


def test_a_follow_stream_is_flushed_per_entry_and_closed_when_the_reader_leaves() -> None:
    """Driven through the ASGI app directly, with a daemon that reads two
    entries and hangs up."""
    more = threading.Event()
    closed = threading.Event()

    class Follow(Collect):
        def read_logs(self, req: ReadLogsRequest) -> Iterator[LogEntry | None]:
            assert req.config.follow
            try:
                yield LogEntry("stdout", 1, b"first")
                more.wait(10)
                yield LogEntry("stdout", 2, b"second")
                while True:
                    time.sleep(0.01)
                    yield None
            finally:
                closed.set()

    client = PluginClient(Follow())
    body = b'{"Info": {"ContainerID": "%s"}, "Config": {"Follow": true, "Tail": -1}}' % CID.encode()
    messages: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not messages:
            messages.append({})
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    bodies: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
            assert not any(k == b"content-length" for k, _ in message["headers"])
        elif message["body"]:
            bodies.append(message["body"])
            if len(bodies) == 1:
                more.set()  # the first entry came alone, before the second existed
            else:
                gone.set()

    scope = {"type": "http", "method": "POST", "path": "/LogDriver.ReadLogs", "headers": []}

    async def run() -> None:
        await asyncio.wait_for(client.app(scope, receive, send), 10)

    client._loop.run_until_complete(run())
    client.close()
    assert [unterminated(decode_frames(b)[0]) for b in bodies] == [
        [LogEntry("stdout", 1, b"first")],
        [LogEntry("stdout", 2, b"second")],
    ]
    assert closed.wait(5)


# --- long lines -----------------------------------------------------------------------


def fragments(line: bytes, size: int, ident: str | None, source: str = "stdout") -> list[LogEntry]:
    parts = [line[i : i + size] for i in range(0, len(line), size)]
    out = []
    for n, part in enumerate(parts, 1):
        meta = None if ident is None else PartialMetadata(n == len(parts), ident, n)
        out.append(LogEntry(source, 7, part, True, meta))
    return out


def feed(r: Reassembler, entries: list[LogEntry]) -> list[LogEntry]:
    return [line for e in entries for line in r.feed(e)]


def test_fragments_with_metadata_make_one_line() -> None:
    line = bytes(range(256)) * 400  # 100 KiB
    r = Reassembler()
    assert feed(r, fragments(line, 16384, "a" * 64)) == [LogEntry("stdout", 7, line)]
    assert r.flush() == [] and r.pending_bytes == 0


def test_stdout_and_stderr_fragments_interleave() -> None:
    out, err = fragments(b"o" * 40, 16, "1"), fragments(b"e" * 40, 16, "2", "stderr")
    mixed = [out[0], err[0], out[1], err[1], LogEntry("stderr", 8, b"x"), err[2], out[2]]
    assert feed(Reassembler(), mixed) == [
        LogEntry("stderr", 7, b"e" * 32),  # cut short by a whole stderr entry
        LogEntry("stderr", 8, b"x"),
        LogEntry("stderr", 7, b"e" * 8),
        LogEntry("stdout", 7, b"o" * 40),
    ]


def test_fragments_without_metadata_end_at_the_next_whole_entry() -> None:
    """Some engines send partial=true with no metadata; the last piece of
    the line then comes as an ordinary entry."""
    pieces = [LogEntry("stdout", 7, b"a" * 10, True), LogEntry("stdout", 7, b"b" * 10, True)]
    r = Reassembler()
    assert feed(r, [*pieces, LogEntry("stdout", 9, b"end"), LogEntry("stdout", 10, b"next")]) == [
        LogEntry("stdout", 7, b"a" * 10 + b"b" * 10 + b"end"),
        LogEntry("stdout", 10, b"next"),
    ]


def test_a_line_that_never_got_its_last_fragment() -> None:
    r = Reassembler()
    cut = fragments(b"z" * 30, 10, "id1")[:2]
    assert feed(r, [*cut, LogEntry("stdout", 9, b"after")]) == [
        LogEntry("stdout", 7, b"z" * 20),
        LogEntry("stdout", 9, b"after"),
    ]
    assert feed(r, fragments(b"y" * 30, 10, "id2")[:2]) == []
    assert r.pending_bytes == 20
    assert r.flush() == [LogEntry("stdout", 7, b"y" * 20)]


def test_a_new_id_ends_the_line_before_it() -> None:
    r = Reassembler()
    first = fragments(b"1" * 20, 10, "one")[:1]
    second = fragments(b"2" * 20, 10, "two")
    assert feed(r, first + second) == [
        LogEntry("stdout", 7, b"1" * 10),
        LogEntry("stdout", 7, b"2" * 20),
    ]


def test_a_line_over_the_cap_is_handed_on_in_pieces() -> None:
    r = Reassembler(max_line=25)
    out = feed(r, fragments(b"q" * 60, 10, "big"))
    assert out == [
        LogEntry("stdout", 7, b"q" * 25, True, PartialMetadata(False, "big", 1)),
        LogEntry("stdout", 7, b"q" * 25, True, PartialMetadata(False, "big", 2)),
        LogEntry("stdout", 7, b"q" * 10, True, PartialMetadata(True, "big", 3)),
    ]
    assert r.pending_bytes == 0
    with pytest.raises(ValueError, match=r"^max_line must be at least 1$"):
        Reassembler(0)


def test_the_fifo_is_enlarged(fifo: Fifo) -> None:
    import fcntl

    with PluginClient(Collect()) as client:
        start(client, fifo)
        assert fcntl.fcntl(fifo.fd, fcntl.F_GETPIPE_SZ) == 1 << 20
        stop(client, fifo)


def test_read_logs_ends_each_line_with_a_newline() -> None:
    """The daemon prints each entry's line as it is; fragments of a long
    line stay without one, so the output joins them."""
    sent = [
        LogEntry("stdout", 1, b"short"),
        LogEntry("stdout", 2, b"x" * 300),
        LogEntry("stderr", 3, b"part1", True, PartialMetadata(False, "i", 1)),
        LogEntry("stderr", 3, b"part2", True, PartialMetadata(True, "i", 2)),
        LogEntry("stdout", 4, b"cut", True),  # no metadata: the line goes on
        LogEntry("stdout", 4, b"", True, PartialMetadata()),
    ]

    class Both(Collect):
        def read_logs(self, req: ReadLogsRequest) -> Iterator[LogEntry | LogBatch]:
            yield from sent
            yield LogBatch.of(sent)

    with PluginClient(Both()) as client:
        reply = client.post("/LogDriver.ReadLogs", {"Info": INFO, "Config": ALL})
    got = [(e.source, e.line) for e in decode_frames(reply.body)[0]]
    expected = [
        ("stdout", b"short\n"),
        ("stdout", b"x" * 300 + b"\n"),
        ("stderr", b"part1"),
        ("stderr", b"part2\n"),
        ("stdout", b"cut"),
        ("stdout", b""),
    ]
    assert got == expected * 2


# --- after a restart of the plugin ------------------------------------------------------


def test_resume_reads_a_fifo_again_from_its_first_whole_entry(fifo: Fifo) -> None:
    """The killed plugin may have taken part of an entry: the rest of it is
    skipped, then every entry the daemon wrote meanwhile is read."""
    cut = encode_entries(lines(1, start=99))[7:]
    os.write(fifo.fd, cut)
    fifo.write(lines(50))
    driver = Collect()
    stream = driver.resume_logging(StartLoggingRequest.from_wire({"File": fifo.path, "Info": INFO}))
    assert stream.resumed and stream.state == "mine"  # on_start ran again
    fifo.write(lines(50, start=50))
    with PluginClient(driver) as client:
        assert stop(client, fifo) == {}
    assert driver.got == lines(100)
    assert driver.stopped == [("/web", 100)]


def test_resume_of_a_fifo_that_is_gone(tmp_path: Path) -> None:
    path = str(tmp_path / "gone")
    with pytest.raises(PluginError) as err:
        Collect().resume_logging(StartLoggingRequest.from_wire({"File": path, "Info": INFO}))
    assert str(err.value) == f"cannot open the log FIFO {path}: No such file or directory"


def test_resume_needs_plain_handlers(fifo: Fifo) -> None:
    class Async(LogDriver):
        async def on_entry(self, stream: LogStream, entry: LogEntry) -> None:
            pass

    with pytest.raises(TypeError, match=r"^Async: resume_logging needs plain handlers$"):
        Async().resume_logging(StartLoggingRequest.from_wire({"File": fifo.path, "Info": INFO}))


def test_first_frame() -> None:
    from plugin.logging import _first_frame

    whole = encode_entries(lines(3))
    assert _first_frame(whole) == 0
    assert _first_frame(whole[5:]) == len(encode_entries(lines(1))) - 5
    assert _first_frame(b"\x00\x00\x00\x05garbage") is None


# --- over a real socket ----------------------------------------------------------------


class Streaming(LogDriver):
    """For ``python -m plugin``: ReadLogs yields one entry, then waits for
    the file $STREAM_GO before the second: a chunked answer whose first
    entry must reach the reader alone."""

    def on_entry(self, stream: LogStream, entry: LogEntry) -> None:
        pass

    def read_logs(self, req: ReadLogsRequest) -> Iterator[LogEntry | None]:
        yield LogEntry("stdout", 1, b"first")
        go = Path(os.environ["STREAM_GO"])
        while not go.exists():
            time.sleep(0.01)
            yield None
        yield LogEntry("stderr", 2, b"second")


def test_read_logs_is_chunked_and_flushed_on_the_socket(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import tempfile

    sock_dir = tempfile.mkdtemp(prefix="dpk-", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(sock_dir, "s.sock")
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "STREAM_GO": str(go), "LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin", "--path", path, f"{__name__}:Streaming"], cwd=root, env=env
    )
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(path):
            assert proc.poll() is None and time.monotonic() < deadline, "the plugin did not listen"
            time.sleep(0.02)
        body = b'{"Info": {"ContainerID": "c"}, "Config": {"Follow": true, "Tail": -1}}\n'
        request = (
            b"POST /LogDriver.ReadLogs HTTP/1.1\r\nHost: plugin.moby.localhost\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(path)
            conn.sendall(request)
            received = b""
            first = encode_entries([LogEntry("stdout", 1, b"first\n")])
            while first not in received:
                chunk = conn.recv(65536)
                assert chunk, f"closed early: {received!r}"
                received += chunk
            head = received.split(b"\r\n\r\n", 1)[0].lower()
            assert head.startswith(b"http/1.1 200 ") and b"transfer-encoding: chunked" in head
            go.touch()  # only now does the second entry exist
            while not received.endswith(b"0\r\n\r\n"):
                chunk = conn.recv(65536)
                assert chunk, f"closed early: {received!r}"
                received += chunk
        payload, rest = b"", received.split(b"\r\n\r\n", 1)[1]
        while True:  # the chunked body
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            payload, rest = payload + rest[:n], rest[n + 2 :]
        assert decode_frames(payload)[0] == [
            LogEntry("stdout", 1, b"first\n"),
            LogEntry("stderr", 2, b"second\n"),
        ]
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_entries_written_just_before_stop_are_never_lost(tmp_path: Path) -> None:
    """The daemon writes the last entries, then sends StopLogging at once:
    a reader that found the FIFO empty, then saw the stop, must still read
    them (this lost them about once in 13 rounds when the stop flag was
    read after the FIFO)."""
    driver = Collect()
    with PluginClient(driver) as client:
        for i in range(100):
            fifo = Fifo(tmp_path / f"f{i}")
            start(client, fifo)
            fifo.write(lines(1, start=i))
            stop(client, fifo)
            fifo.close()
    assert driver.got == lines(100)
