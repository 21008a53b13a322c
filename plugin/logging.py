"""Log drivers: ``docker.logdriver/1.0`` (``/LogDriver.*``).

Read top to bottom: wire constants, request/response models named after the
wire verb, the entries and their helpers, the driver base class, the
endpoint table.

For each container the daemon creates a FIFO and sends ``StartLogging`` with
its path; it then writes every line the container prints into it, framed
(a 4-byte big-endian length, then a protobuf ``LogEntry``). The SDK opens the
FIFO in ``StartLogging``, reads it on a thread of its own, decodes the
entries and hands them to the driver; ``StopLogging`` delivers what is still
in the FIFO, without waiting for an end that never comes while the daemon
holds it open, and answers within ``stop_timeout`` even when the driver is
stuck. A driver only writes what to do with an entry::

    class Printer(LogDriver):
        def on_entry(self, stream: LogStream, entry: LogEntry) -> None:
            print(stream.info.container_name, entry.source, entry.line)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import fcntl
import inspect
import logging
import os
import re
import select
import stat
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ._driver import Driver, Endpoint, optional
from ._logwire import (
    MAX_FRAME,
    FrameError,
    LogEntry,
    PartialMetadata,
    decode_frames,
    encode_entries,
    encode_entry,
    ends_line,
    terminate_lines,
    walk_frames,
)
from ._wire import Model, wire
from .errors import PluginError

__all__ = [
    "Capabilities",
    "CapabilitiesResponse",
    "FrameError",
    "Info",
    "LogBatch",
    "LogDriver",
    "LogEntry",
    "LogStream",
    "PartialMetadata",
    "ReadConfig",
    "ReadLogsRequest",
    "Reassembler",
    "StartLoggingRequest",
    "StopLoggingRequest",
    "decode_frames",
    "encode_entries",
    "encode_entry",
    "parse_time_ns",
]

IMPLEMENTS = "LogDriver"
CAPABILITY = "docker.logdriver/1.0"
#: Where the daemon puts a managed plugin's FIFOs (inside the plugin).
FIFO_DIR = "/run/docker/logging"
#: The daemon cuts lines longer than this into partial entries.
DAEMON_LINE_BUFFER = 16 * 1024
#: Default size cap of a line put back together by ``Reassembler``.
MAX_LINE = 1024 * 1024

log = logging.getLogger("plugin.logging")


# --- requests ---------------------------------------------------------------------


@dataclass(slots=True)
class Info(Model):
    """The container whose output is logged. ``config`` holds its
    ``--log-opt`` values, which the daemon does not validate for plugins:
    check them in ``on_start``."""

    config: dict[str, str] = wire("Config", factory=dict)
    container_id: str = wire("ContainerID", "")
    container_name: str = wire("ContainerName", "")
    container_entrypoint: str = wire("ContainerEntrypoint", "")
    container_args: list[str] = wire("ContainerArgs", factory=list)
    container_image_id: str = wire("ContainerImageID", "")
    container_image_name: str = wire("ContainerImageName", "")
    container_created: str = wire("ContainerCreated", "")
    container_env: list[str] = wire("ContainerEnv", factory=list)
    container_labels: dict[str, str] = wire("ContainerLabels", factory=dict)
    log_path: str = wire("LogPath", "")
    daemon_name: str = wire("DaemonName", "")


@dataclass(slots=True)
class StartLoggingRequest(Model):
    """A container starts (or ``docker logs`` reads a stopped one): ``file``
    is the FIFO to read, new for every call."""

    file: str = wire("File")
    info: Info = wire("Info", factory=Info)


@dataclass(slots=True)
class StopLoggingRequest(Model):
    """The container stopped (it may start again, with a new FIFO)."""

    file: str = wire("File")


@dataclass(slots=True)
class ReadConfig(Model):
    """What ``docker logs`` asks for. Times are RFC 3339 with nanoseconds;
    the zero time (``0001-01-01T00:00:00Z``) means no bound; ``tail`` -1
    means every line. Use ``since_ns`` and ``until_ns``."""

    since: str = wire("Since", "")
    until: str = wire("Until", "")
    tail: int = wire("Tail", -1)
    follow: bool = wire("Follow", False)

    @property
    def since_ns(self) -> int | None:
        """``since`` in Unix nanoseconds, None when unbounded."""
        return parse_time_ns(self.since)

    @property
    def until_ns(self) -> int | None:
        """``until`` in Unix nanoseconds, None when unbounded."""
        return parse_time_ns(self.until)

    def __post_init__(self) -> None:
        parse_time_ns(self.since)
        parse_time_ns(self.until)


@dataclass(slots=True)
class ReadLogsRequest(Model):
    """``docker logs``. There is no FIFO path: find the logs by
    ``info.container_id``."""

    info: Info = wire("Info", factory=Info)
    config: ReadConfig = wire("Config", factory=ReadConfig)


# --- responses --------------------------------------------------------------------


@dataclass(slots=True)
class Capabilities(Model):
    #: True when the driver serves ``docker logs`` (``read_logs``).
    read_logs: bool = wire("ReadLogs", False)


@dataclass(slots=True)
class CapabilitiesResponse(Model):
    # The daemon reads {"Cap": {...}}; the flat form of the docs is ignored.
    cap: Capabilities = wire("Cap", factory=Capabilities)


# --- time ---------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)\Z"
)


def parse_time_ns(text: str) -> int | None:
    """An RFC 3339 time (nanoseconds kept) as Unix nanoseconds; None for ""
    and for Go's zero time. ValueError for anything else."""
    if not text:
        return None
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if year == 1 and month == 1 and day == 1 and hour == minute == second == 0:
        return None  # time.Time{}: no bound
    zone = m.group(8)
    try:
        tz = (
            datetime.UTC
            if zone in ("Z", "z")
            else datetime.timezone(
                datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
                * (-1 if zone[0] == "-" else 1)
            )
        )
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r} ({exc})") from None
    seconds = int((moment - _EPOCH).total_seconds())
    fraction = (m.group(7) or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(fraction)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


# --- entries ------------------------------------------------------------------------


class LogBatch:
    """Entries read from a FIFO in one go, as framed bytes.

    Iterating decodes them (once). ``raw`` is the entries exactly as the
    daemon framed them, for a driver that stores or forwards them as they
    are; ``whole`` tells that none of them is a fragment of a longer line.
    ``read_logs`` may yield a batch too (e.g. ``LogBatch.from_frames`` of
    bytes it stored), which is sent as it is.
    """

    __slots__ = ("_entries", "count", "raw", "whole")

    def __init__(self, raw: bytes, count: int, whole: bool) -> None:
        self.raw = raw
        self.count = count
        self.whole = whole
        self._entries: list[LogEntry] | None = None

    @classmethod
    def from_frames(cls, raw: bytes) -> LogBatch:
        """A batch of framed entries; FrameError unless ``raw`` is exactly
        whole frames."""
        end, count, whole = walk_frames(raw)
        if end != len(raw):
            raise FrameError(f"{len(raw) - end} bytes after the last complete entry")
        return cls(raw, count, whole)

    @classmethod
    def take(cls, data: bytes) -> tuple[LogBatch, bytes]:
        """The complete frames at the start of ``data`` as a batch (maybe
        empty), and the bytes after them (an incomplete frame)."""
        end, count, whole = walk_frames(data)
        if end == len(data):
            return cls(data, count, whole), b""
        return cls(data[:end], count, whole), data[end:]

    def tail(self, n: int) -> LogBatch:
        """The last ``n`` entries."""
        if n >= self.count:
            return self
        if n <= 0:
            return LogBatch(b"", 0, True)
        starts = []
        p = 0
        raw = self.raw
        while p < len(raw):
            starts.append(p)
            p += 4 + int.from_bytes(raw[p : p + 4], "big")
        return LogBatch.from_frames(raw[starts[-n] :])

    @classmethod
    def of(cls, entries: Iterable[LogEntry]) -> LogBatch:
        entries = list(entries)
        batch = cls(
            encode_entries(entries),
            len(entries),
            not any(e.partial or e.partial_metadata is not None for e in entries),
        )
        batch._entries = entries
        return batch

    @property
    def entries(self) -> list[LogEntry]:
        if self._entries is None:
            self._entries = decode_frames(self.raw)[0]
        return self._entries

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"LogBatch({self.count} entries, {len(self.raw)} bytes)"


class Reassembler:
    """Puts lines the daemon cut into fragments back together.

    ``feed`` each entry in order and get back the complete lines (none, one
    or two). Fragments are joined per source (stdout and stderr
    interleave), grouped by their metadata's id; without metadata (some
    engines send ``partial`` alone) a partial entry continues until the next
    entry of its source that is not partial, which ends the line. A line
    that grows past ``max_line`` bytes is handed on in pieces of
    ``max_line``, each marked partial (the last piece ``last``), so memory
    stays bounded. ``flush`` returns lines still incomplete (at the end of a
    stream).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        #: Per source: [first entry, parts, size, id, pieces handed on].
        self._pending: dict[str, list[Any]] = {}

    def feed(self, entry: LogEntry) -> list[LogEntry]:
        out: list[LogEntry] = []
        pending = self._pending.get(entry.source)
        meta = entry.partial_metadata
        if not entry.partial and meta is None:
            if pending is None:
                return [entry]
            if pending[3] is None:  # no metadata: this entry ends the line
                self._add(pending, entry.line, out)
                out.append(self._finish(entry.source, pending, last=True))
                return out
            # The line with metadata never got its last fragment.
            out.append(self._finish(entry.source, pending, last=False))
            out.append(entry)
            return out
        ident = meta.id if meta is not None else None
        if pending is not None and pending[3] != ident:
            out.append(self._finish(entry.source, pending, last=False))
            pending = None
        if pending is None:
            pending = [entry, [], 0, ident, 0]
            self._pending[entry.source] = pending
        self._add(pending, entry.line, out)
        if meta is not None and meta.last:
            out.append(self._finish(entry.source, pending, last=True))
        return out

    def flush(self) -> list[LogEntry]:
        """The incomplete lines, ended as they are."""
        return [self._finish(source, p, last=False) for source, p in list(self._pending.items())]

    @property
    def pending_bytes(self) -> int:
        return sum(p[2] for p in self._pending.values())

    def _add(self, pending: list[Any], line: bytes, out: list[LogEntry]) -> None:
        pending[1].append(line)
        pending[2] += len(line)
        while pending[2] > self.max_line:
            data = b"".join(pending[1])
            piece, rest = data[: self.max_line], data[self.max_line :]
            pending[4] += 1
            first = pending[0]
            out.append(
                LogEntry(
                    first.source,
                    first.time_nano,
                    piece,
                    True,
                    PartialMetadata(False, pending[3] or "", pending[4]),
                )
            )
            pending[1] = [rest]
            pending[2] = len(rest)

    def _finish(self, source: str, pending: list[Any], last: bool) -> LogEntry:
        del self._pending[source]
        first: LogEntry = pending[0]
        line = b"".join(pending[1])
        if pending[4]:  # earlier pieces were handed on: this is the last one
            return LogEntry(
                source,
                first.time_nano,
                line,
                True,
                PartialMetadata(True, pending[3] or "", pending[4] + 1),
            )
        return LogEntry(source, first.time_nano, line)


# --- streams ------------------------------------------------------------------------

#: How much one read takes from a FIFO.
READ_SIZE = 1 << 20
#: The FIFO's buffer, asked for at StartLogging (Linux caps it at
#: /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_SIZE = 1 << 20


class LogStream:
    """One container's log FIFO, from ``StartLogging`` to ``StopLogging``.

    ``state`` is the driver's own (set it in ``on_start``). Counters:
    ``entries`` and ``bytes`` read, ``errors`` (entries a handler failed
    on, undecodable data). With ``consume``, iterate it: ``async for entry
    in stream`` ends after ``StopLogging``.
    """

    def __init__(self, file: str, info: Info) -> None:
        self.file = file
        self.info = info
        self.state: Any = None
        self.entries = 0
        self.bytes = 0
        self.errors = 0
        self.started = time.time()
        #: Read again after a restart of the plugin (``resume_logging``).
        self.resumed = False
        #: Set when ``StopLogging`` came: the FIFO is being drained.
        self.stopping = threading.Event()
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._fd = -1
        self._wake_r = -1
        self._wake_w = -1
        self._queue: asyncio.Queue[LogBatch | None] | None = None
        self._current: Iterator[LogEntry] = iter(())

    @property
    def container_id(self) -> str:
        return self.info.container_id

    def __repr__(self) -> str:
        return f"LogStream({self.info.container_name or self.container_id[:12]!s}, {self.file})"

    # --- consume(): async for entry in stream --------------------------------------

    def __aiter__(self) -> AsyncIterator[LogEntry]:
        return self

    async def __anext__(self) -> LogEntry:
        while True:
            for entry in self._current:
                return entry
            if self._queue is None:
                raise StopAsyncIteration
            batch = await self._queue.get()
            if batch is None:
                self._queue = None
                raise StopAsyncIteration
            self._current = iter(batch)

    # --- the FIFO ----------------------------------------------------------------

    def _open(self) -> None:
        try:
            # Non-blocking: the open never waits for a writer, and reads
            # return what is there. The daemon keeps the FIFO open for
            # writing as long as the container logs, so there is no EOF.
            fd = os.open(self.file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise PluginError(
                f"cannot open the log FIFO {self.file}: {exc.strerror or exc}"
            ) from None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise PluginError(f"cannot log to {self.file}: not a FIFO")
        # A larger pipe (the daemon leaves it at 64 KiB) lets the container
        # run ahead while this thread is busy, and each read take more.
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1

    def _batches(self, max_frame: int) -> Iterator[LogBatch]:
        """Batches of entries as they arrive, until ``_stop`` and the FIFO
        is empty, or until every writer closed it."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        buf = b""
        broken = False
        while True:
            # The flag is read before the FIFO: an empty read after the stop
            # was asked means drained. (Read after it, the stop could have
            # come with the last entries between the two.)
            stopping = self.stopping.is_set()
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                if stopping:
                    break  # drained: never wait for an EOF
                poller.poll()
                continue
            except OSError as exc:
                log.error("%r: reading the FIFO failed: %s", self, exc)
                self.errors += 1
                break
            if not chunk:
                break  # every writer closed it: the daemon is done
            self.bytes += len(chunk)
            if broken:
                continue  # keep the pipe flowing, the container must not block
            buf = buf + chunk if buf else chunk
            if self.resumed and self.entries == 0:
                start = _first_frame(buf)
                if start is None:
                    buf = buf[-64:]  # a start may straddle two reads
                    continue
                if start:
                    log.warning("%r: skipped %d bytes of an entry cut by the restart", self, start)
                    buf = buf[start:]
            try:
                end, count, whole = walk_frames(buf, 0, max_frame)
            except FrameError as exc:
                log.error("%r: undecodable log data, the rest is dropped: %s", self, exc)
                self.errors += 1
                broken = True
                good = buf[: exc.offset or 0]  # the entries before the bad one
                end, count, whole = walk_frames(good) if good else (0, 0, True)
                if count:
                    self.entries += count
                    yield LogBatch(good[:end], count, whole)
                continue
            if count:
                raw = buf if end == len(buf) else buf[:end]
                buf = buf[end:]
                self.entries += count
                yield LogBatch(raw, count, whole)
        if buf and not broken:
            log.warning("%r: %d bytes of an incomplete entry at the end, dropped", self, len(buf))


_FRAME_START = re.compile(rb"[\x00-\x01][\x00-\xff]{3}\x0a\x06(?:stdout|stderr)\x10", re.S)


def _first_frame(buf: bytes) -> int | None:
    """Where the first entry laid out as the daemon writes it starts, with
    the frame after it starting right where its length says (or the end)."""
    for m in _FRAME_START.finditer(buf):
        p = m.start()
        q = p + 4 + int.from_bytes(buf[p : p + 4], "big")
        if q >= len(buf) or _FRAME_START.match(buf, q) or q + 4 > len(buf):
            return p
    return None


# --- the driver ---------------------------------------------------------------------


class LogDriver(Driver):
    """Base class of a log driver.

    Implement one of, each plain or ``async``:

    * ``on_entry(stream, entry)``: called for every entry, in order;
    * ``on_batch(stream, batch)`` (plain): every batch read from the FIFO,
      for drivers that want the framed bytes (store them as they are);
    * ``async consume(stream)``: one task per container, iterating
      ``async for entry in stream``.

    Plain ones run on the stream's reader thread, ``async`` ones on the
    event loop; the next read waits for them, so a slow handler fills the
    FIFO and then blocks the container: a driver whose backend can be slow
    buffers (bounded) and drops, as the reference ``filelog`` shows.

    ``on_start(stream)`` checks ``stream.info.config`` (raise
    ``PluginError`` to refuse the container's start with that message) and
    sets ``stream.state``; ``on_stop(stream)`` runs after the last entry.
    ``read_logs(req)`` (optional) serves ``docker logs``: return an
    iterable or async iterable of ``LogEntry`` or ``LogBatch``, lines as
    they came from the FIFO (the SDK adds the newline the daemon prints
    after each line, not after a fragment of one); items that come slowly
    (``req.config.follow``) are flushed to the daemon one by one, and
    yielding ``None`` lets the SDK notice a reader that went away (the
    iterator is then closed). A plain iterator runs on its own thread.
    """

    implements: ClassVar[str] = IMPLEMENTS
    prefix: ClassVar[str] = IMPLEMENTS
    capability: ClassVar[str] = CAPABILITY
    #: Seconds ``StopLogging`` waits for the FIFO's last entries to be
    #: handled (and ``on_stop``) before it answers the daemon anyway; the
    #: daemon's ``docker stop`` waits for that answer.
    stop_timeout: ClassVar[float] = 5.0
    #: Entries longer than this are a broken stream (the daemon's are 16 KiB).
    max_frame: ClassVar[int] = MAX_FRAME

    # --- what a driver writes -----------------------------------------------------

    def on_start(self, stream: LogStream) -> Awaitable[None] | None:
        """Check the container's options; raise PluginError to refuse."""
        return None

    def on_entry(self, stream: LogStream, entry: LogEntry) -> Awaitable[None] | None:
        raise NotImplementedError

    def on_batch(self, stream: LogStream, batch: LogBatch) -> None:
        """Every batch read; by default, ``on_entry`` for each entry."""
        if self._entry_is_async:
            asyncio.run_coroutine_threadsafe(self._each_async(stream, batch), self._loop).result()
            return
        on_entry = self.on_entry
        for entry in batch:
            try:
                on_entry(stream, entry)
            except Exception:
                stream.errors += 1
                log.exception("%s.on_entry failed on %r", type(self).__name__, stream)

    async def consume(self, stream: LogStream) -> None:
        raise NotImplementedError

    def on_stop(self, stream: LogStream) -> Awaitable[None] | None:
        return None

    @optional
    def read_logs(
        self, req: ReadLogsRequest
    ) -> Iterable[LogEntry | LogBatch | None] | AsyncIterable[LogEntry | LogBatch | None]:
        raise NotImplementedError

    # --- the wire calls, served by the SDK ---------------------------------------------

    def capabilities(self) -> CapabilitiesResponse:
        return CapabilitiesResponse(Capabilities(self.handler_for(_READ_LOGS) is not None))

    async def start_logging(self, req: StartLoggingRequest) -> None:
        self._setup(asyncio.get_running_loop())
        stream = self._new_stream(req)
        stream._open()  # a missing FIFO fails before the driver sets anything up
        try:
            await self._run_hook(self.on_start, stream)
        except BaseException:
            stream._close()
            raise
        self._begin(stream)

    def resume_logging(self, req: StartLoggingRequest) -> LogStream:
        """Read a FIFO again after the plugin was restarted.

        The daemon does not know the plugin restarted: it keeps writing into
        the FIFO of each running container (which blocks the container once
        the FIFO is full) and sends ``StopLogging`` for it when the container
        stops. A driver that saved each ``StartLoggingRequest`` (``file`` and
        ``info``) resumes them when it is made; the reading starts again at
        the first whole entry (the killed process may have taken part of
        one). ``on_start`` runs again. PluginError when the FIFO is gone
        (the container stopped meanwhile). Plain drivers only: ``async``
        handlers need the event loop, which does not run yet.
        """
        self._setup(None)
        if (
            self._mode == "consume"
            or self._entry_is_async
            or inspect.iscoroutinefunction(self.on_start)
        ):
            raise TypeError(f"{type(self).__name__}: resume_logging needs plain handlers")
        stream = self._new_stream(req)
        stream.resumed = True
        stream._open()
        try:
            self.on_start(stream)
        except BaseException:
            stream._close()
            raise
        self._begin(stream)
        return stream

    def _new_stream(self, req: StartLoggingRequest) -> LogStream:
        if not req.file:
            raise PluginError("StartLogging needs the FIFO's path (File)")
        if req.file in self._streams:
            raise PluginError(f"already logging from {req.file}")
        return LogStream(req.file, req.info)

    def _begin(self, stream: LogStream) -> None:
        if self._mode == "consume":
            stream._queue = asyncio.Queue(maxsize=4)
            self._tasks[stream.file] = self._loop.create_task(self._consume(stream))
        self._streams[stream.file] = stream
        thread = threading.Thread(
            target=self._read, args=(stream,), name=f"log {stream.file[-12:]}", daemon=True
        )
        thread.start()

    async def stop_logging(self, req: StopLoggingRequest) -> None:
        self._setup(asyncio.get_running_loop())
        stream = self._streams.get(req.file)
        if stream is None:
            return  # never started here (e.g. before a restart of the plugin): nothing to do
        stream._stop()
        try:
            await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(stream.done)), self.stop_timeout
            )
        except TimeoutError:
            log.warning(
                "%r: the driver did not finish the last entries within %g s; answering "
                "StopLogging anyway (they are still being handled)",
                stream,
                self.stop_timeout,
            )

    # --- how it works ----------------------------------------------------------------

    _streams: dict[str, LogStream]
    _tasks: dict[str, asyncio.Task[None]]
    _mode: str
    _entry_is_async: bool
    _loop: asyncio.AbstractEventLoop

    def _setup(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is not None and getattr(self, "_loop", None) is None:
            self._loop = loop
        if getattr(self, "_streams", None) is not None:
            return
        cls = type(self)
        if cls.consume is not LogDriver.consume:
            if not inspect.iscoroutinefunction(cls.consume):
                raise TypeError(f"{cls.__name__}.consume must be async def")
            self._mode = "consume"
        elif cls.on_batch is not LogDriver.on_batch:
            self._mode = "batch"
        elif cls.on_entry is not LogDriver.on_entry:
            self._mode = "entry"
        else:
            raise TypeError(f"{cls.__name__} implements none of on_entry, on_batch, consume")
        self._entry_is_async = inspect.iscoroutinefunction(cls.on_entry)
        self._loop = loop  # type: ignore[assignment]
        self._streams = {}
        self._tasks = {}

    async def _run_hook(self, hook: Any, stream: LogStream) -> None:
        if inspect.iscoroutinefunction(hook):
            await hook(stream)
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, hook, stream)
            if inspect.isawaitable(result):
                await result

    async def _each_async(self, stream: LogStream, batch: LogBatch) -> None:
        for entry in batch:
            try:
                await self.on_entry(stream, entry)  # type: ignore[misc]
            except Exception:
                stream.errors += 1
                log.exception("%s.on_entry failed on %r", type(self).__name__, stream)

    async def _consume(self, stream: LogStream) -> None:
        try:
            await self.consume(stream)
        except Exception:
            stream.errors += 1
            log.exception("%s.consume failed on %r", type(self).__name__, stream)
        # Keep the reader going (and the container unblocked) if consume
        # returned early: drain what it did not take.
        while stream._queue is not None:
            if await stream._queue.get() is None:
                stream._queue = None

    def _read(self, stream: LogStream) -> None:
        """The stream's thread: read, decode, hand on; then on_stop."""
        loop = self._loop
        try:
            for batch in stream._batches(self.max_frame):
                if self._mode == "consume":
                    queue = stream._queue
                    assert queue is not None
                    asyncio.run_coroutine_threadsafe(queue.put(batch), loop).result()
                    continue
                try:
                    self.on_batch(stream, batch)
                except Exception:
                    stream.errors += 1
                    log.exception("%s.on_batch failed on %r", type(self).__name__, stream)
        finally:
            stream._close()
        try:
            if self._mode == "consume":
                queue = stream._queue
                if queue is not None:
                    asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()
                task = self._tasks.pop(stream.file)
                asyncio.run_coroutine_threadsafe(_wait(task), loop).result()
            if inspect.iscoroutinefunction(self.on_stop):
                asyncio.run_coroutine_threadsafe(self.on_stop(stream), loop).result()
            else:
                self.on_stop(stream)
        except Exception:
            log.exception("%s.on_stop failed on %r", type(self).__name__, stream)
        finally:
            self._streams.pop(stream.file, None)
            stream.done.set_result(None)


async def _wait(task: asyncio.Task[None]) -> None:
    await task


def encode_item(item: LogEntry | LogBatch | None) -> bytes:
    """What one item of ``read_logs`` is on the wire. The daemon prints
    each entry's line as it is: an entry that ends a line gets its newline
    (lines come from the FIFO without one)."""
    if isinstance(item, LogBatch):
        return terminate_lines(item.raw)
    if isinstance(item, LogEntry):
        if ends_line(item):
            item = LogEntry(
                item.source, item.time_nano, item.line + b"\n", item.partial, item.partial_metadata
            )
        return encode_entry(item)
    if item is None:
        return b""
    raise TypeError(f"read_logs yielded {type(item).__name__}, expected LogEntry or LogBatch")


_READ_LOGS = Endpoint("ReadLogs", ReadLogsRequest, None, stream=encode_item)

LogDriver.endpoints = (
    Endpoint("StartLogging", StartLoggingRequest, None),
    Endpoint("StopLogging", StopLoggingRequest, None),
    Endpoint("Capabilities", None, CapabilitiesResponse),
    _READ_LOGS,
)
