"""filelog: the reference log driver. Each container's log is kept in files
on the host, rotated by size and count and compressed, and ``docker logs``
reads them back (``--tail``, ``--since``, ``--until``, ``--follow``;
``--timestamps`` is the daemon's).

Install it, then log with it::

    docker plugin install --alias filelog IMAGE logs.source=/srv/logs
    docker run --log-driver filelog --log-opt max-size=10m --log-opt max-file=3 IMAGE

Options (``--log-opt``; the defaults per host with ``docker plugin set``,
``FileLogSettings``):

============== ======================= =====================================
option         host default (env)      meaning
============== ======================= =====================================
max-size       ``MAX_SIZE=20m``        size of a file before it is rotated
max-file       ``MAX_FILE=5``          files kept, the current one included
compress       ``COMPRESS=true``       gzip the rotated files
buffer-size    ``BUFFER_SIZE=8m``      log held in memory while the disk is
                                       slow; when it is full, new lines are
                                       dropped and counted, and the
                                       container never waits
============== ======================= =====================================

Lines longer than the daemon's 16 KiB buffer arrive in fragments: they are
joined before they are stored (up to ``MAX_LINE``, 1 MiB; a longer line is
stored in pieces of that size). The counters of each container
(``received``, ``written``, ``dropped``) are in ``<container>/counters.json``
and in the plugin's log when its stream stops.

The FIFOs being read are listed in ``streams.json``: a restarted plugin
(killed, or restarted by the daemon) reads them again, since the daemon,
which knows nothing of the restart, goes on writing into them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from plugin import Mount, PluginError, settings
from plugin.logging import (
    Info,
    LogBatch,
    LogDriver,
    LogEntry,
    LogStream,
    ReadLogsRequest,
    Reassembler,
    StartLoggingRequest,
)

from .options import Options
from .store import ContainerLog, read_batches

__all__ = ["LOGS", "FileLogSettings", "FileLogs"]

log = logging.getLogger("filelog")

LOGS = Mount(
    "logs",
    destination="/logs",
    source="/var/lib/docker-filelog",
    description="host directory holding the containers' logs (docker plugin set PLUGIN "
    "logs.source=/path)",
)


class FileLogSettings(settings.Settings):
    """The per-host defaults of the options (``docker plugin set``)."""

    max_size = settings.size("20m", "default max-size: a file is rotated at this size")
    max_file = settings.integer(
        5, "default max-file: files kept per container, the current one too", minimum=1, maximum=100
    )
    compress = settings.boolean(True, "default compress: gzip the rotated files")
    buffer_size = settings.size(
        "8m", "default buffer-size: log held in memory while the disk is slow"
    )


#: Test hook: when set (not in config.json), a file ``<logs>/pause-writes``
#: holds every write while it exists, standing for a disk that hangs.
PAUSE_ENV = "FILELOG_TEST_PAUSE"
MAX_LINE = 1 << 20
#: How long ``docker logs`` waits for lines already received to reach the disk.
SYNC_WAIT = 5.0

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


class FileLogs(LogDriver):
    """Container logs in rotated, compressed files (see the module's doc).

    ``FileLogs()`` keeps them in the plugin's ``/logs``; tests pass
    ``root`` and ``defaults``.
    """

    mounts = (LOGS,)
    settings = FileLogSettings

    def __init__(self, root: str | None = None, defaults: Options | None = None) -> None:
        self.root = Path(root or LOGS.destination)
        self.defaults = defaults or _host_defaults(FileLogSettings.from_env())
        self.pause_file = (
            self.root / "pause-writes" if os.environ.get(PAUSE_ENV, "") not in ("", "0") else None
        )
        self._logs: dict[str, ContainerLog] = {}
        self._lock = threading.Lock()
        self._resume()

    def _log(self, container_id: str, create: bool) -> ContainerLog | None:
        if not _CONTAINER_ID.fullmatch(container_id):
            raise PluginError(
                f"invalid container ID {container_id[:80]!r}: expected 64 hexadecimal digits"
            )
        with self._lock:
            found = self._logs.get(container_id)
            if found is None:
                directory = self.root / container_id
                if not create and not directory.is_dir():
                    return None
                try:
                    found = ContainerLog(directory, self.defaults, self.pause_file)
                except OSError as exc:
                    raise PluginError(f"cannot keep the log in {directory}: {exc}") from None
                self._logs[container_id] = found
            return found

    # --- the streams of running containers, across a restart of the plugin -----------

    @property
    def _streams_file(self) -> Path:
        return self.root / "streams.json"

    def _saved_streams(self) -> dict[str, Any]:
        try:
            saved = json.loads(self._streams_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s: unreadable, streams not resumed: %s", self._streams_file, exc)
            return {}
        return saved if isinstance(saved, dict) else {}

    def _save_streams(self, change: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            saved = self._saved_streams()
            change(saved)
            tmp = self._streams_file.with_name(f"streams.json.{threading.get_ident()}.tmp")
            try:
                tmp.write_text(json.dumps(saved))
                tmp.rename(self._streams_file)
            except OSError as exc:
                log.error("%s: cannot save the running streams: %s", self._streams_file, exc)

    def _resume(self) -> None:
        """Read again the FIFOs of the containers that were logging when the
        plugin stopped (killed, or restarted by the daemon)."""
        resumed = 0
        gone: list[str] = []
        for file, info in self._saved_streams().items():
            try:
                self.resume_logging(StartLoggingRequest(file, Info.from_wire(info)))
                resumed += 1
            except (PluginError, ValueError) as exc:
                log.info("not resumed: %s", exc)
                gone.append(file)
        if gone:

            def forget(saved: dict[str, Any]) -> None:
                for file in gone:
                    saved.pop(file, None)

            self._save_streams(forget)
        if resumed:
            log.info("resumed %d container log(s)", resumed)

    # --- writing ----------------------------------------------------------------------

    def on_start(self, stream: LogStream) -> None:
        try:
            options = self.defaults.with_options(stream.info.config)
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        store = self._log(stream.container_id, create=True)
        assert store is not None
        store.attach(options)
        stream.state = _State(store, Reassembler(MAX_LINE))
        info = stream.info.to_wire()
        self._save_streams(lambda saved: saved.__setitem__(stream.file, info))

    def on_batch(self, stream: LogStream, batch: LogBatch) -> None:
        state: _State = stream.state
        if batch.whole and not state.lines.pending_bytes:
            state.store.offer(batch.raw, batch.count)  # as the daemon framed them
            return
        whole: list[LogEntry] = []
        for entry in batch:
            whole += state.lines.feed(entry)
        if whole:
            state.store.offer(LogBatch.of(whole).raw, len(whole))

    def on_stop(self, stream: LogStream) -> None:
        state: _State = stream.state
        rest = state.lines.flush()
        if rest:
            state.store.offer(LogBatch.of(rest).raw, len(rest))
        state.store.detach()
        self._save_streams(lambda saved: saved.pop(stream.file, None))
        # Answer StopLogging once the lines are on disk, unless the disk
        # hangs (nothing written for a second): docker stop waits for it.
        state.store.wait_writer(self.stop_timeout, stalled=1.0)
        log.info(
            "%s stopped: %d entries read, %s",
            stream,
            stream.entries,
            ", ".join(f"{k} {v}" for k, v in state.store.counters().items()),
        )

    # --- reading ----------------------------------------------------------------------

    def read_logs(self, req: ReadLogsRequest) -> Iterator[LogBatch | None]:
        store = self._log(req.info.container_id, create=False)
        if store is None:
            return
        config = req.config
        since, until = config.since_ns, config.until_ns
        if not store.sync(SYNC_WAIT):
            log.warning("%s: docker logs without the lines still waiting for the disk", store.dir)
        files, size, generation = store.snapshot()
        try:
            batches = _stored(files, size) if config.tail < 0 else _tail(files, size, config.tail)
            for batch in batches:
                kept, ended = _between(batch, since, until)
                if kept.count:
                    yield kept
                if ended:
                    return
            if config.follow:
                current = files[-1]
                current.seek(size)  # what was there at the snapshot has been sent
                yield from self._follow(store, current, generation, until)
        finally:
            for f in files:
                f.close()

    def _follow(
        self, store: ContainerLog, current: IO[bytes], generation: int, until: int | None
    ) -> Iterator[LogBatch | None]:
        """What is appended from now on, until the container stops."""
        opened: list[IO[bytes]] = []
        carry = b""
        # After a rotation (or the last write), the file is read once more
        # to its end before moving on: what was written just before counts.
        last_read: str | None = None
        try:
            while True:
                chunk = current.read(1 << 20)
                if chunk:
                    batch, carry = LogBatch.take(carry + chunk if carry else chunk)
                    kept, ended = _between(batch, None, until)
                    if kept.count:
                        yield kept
                    if ended:
                        return
                    continue
                if last_read == "rotated":
                    current, generation = store.open_current()
                    opened.append(current)
                    carry = b""
                    last_read = None
                    continue
                if last_read == "ended":
                    return
                with store.cond:
                    rotated = store.generation != generation
                    live = store.live
                    if not rotated and live:
                        store.cond.wait(1.0)
                if rotated:
                    last_read = "rotated"
                elif not live:
                    last_read = "ended"
                else:
                    yield None  # lets the SDK notice a reader that went away
        finally:
            for f in opened:
                f.close()


class _State:
    __slots__ = ("lines", "store")

    def __init__(self, store: ContainerLog, lines: Reassembler) -> None:
        self.store = store
        self.lines = lines


def _host_defaults(values: FileLogSettings) -> Options:
    """The settings as options, held to the same minimums."""
    given = {
        "max-size": str(values.max_size),
        "max-file": str(values.max_file),
        "compress": str(values.compress).lower(),
        "buffer-size": str(values.buffer_size),
    }
    try:
        return Options().with_options(given)
    except ValueError as exc:
        # A ValueError: python -m plugin prints it as one line in the daemon's log.
        setting = str(exc).split("=", 1)[0].rsplit(" ", 1)[-1].replace("-", "_").upper()
        raise ValueError(
            f"bad setting {setting}: {exc}; change it with docker plugin set PLUGIN {setting}=VALUE"
        ) from None


def _stored(files: list[IO[bytes]], current_size: int) -> Iterator[LogBatch]:
    for f in files[:-1]:
        yield from read_batches(f)
    yield from read_batches(files[-1], current_size)


def _tail(files: list[IO[bytes]], current_size: int, n: int) -> Iterator[LogBatch]:
    """The last ``n`` entries, reading files from the newest back only as
    far as needed (the current file is read, up to ``current_size``, first)."""
    picked: list[LogBatch] = []
    for i in range(len(files) - 1, -1, -1):
        if n <= 0:
            break
        data = files[i].read(current_size) if i == len(files) - 1 else files[i].read()
        part = LogBatch.take(data)[0].tail(n)
        picked.append(part)
        n -= part.count
    yield from reversed(picked)


def _between(batch: LogBatch, since: int | None, until: int | None) -> tuple[LogBatch, bool]:
    """The entries of ``batch`` from ``since``, up to the first after
    ``until`` (True then: nothing later is wanted), as ``json-file`` does."""
    if since is None and until is None:
        return batch, False
    kept: list[LogEntry] = []
    for entry in batch:
        if until is not None and entry.time_nano > until:
            return LogBatch.of(kept), True
        if since is None or entry.time_nano >= since:
            kept.append(entry)
    if len(kept) == batch.count:
        return batch, False
    return LogBatch.of(kept), False
