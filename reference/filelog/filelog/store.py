"""One container's log on disk, and the thread that writes it.

A container's directory holds ``log`` (the current file) and the rotated
files ``log.1`` (newest) to ``log.<max-file - 1>``, gzipped as ``log.N.gz``
when ``compress`` is set. Every file is a sequence of framed log entries,
the daemon's own format, each a whole line (the driver joins the fragments
of long lines before they are stored): what ``docker logs`` is served from
without converting anything.

The FIFO's reader never waits for the disk: ``offer`` queues a batch in
memory, up to ``buffer_size`` bytes, and drops it (counting its lines in
``dropped``) when the buffer is full. The writer thread appends queued
batches to ``log`` and rotates it by size. Writes go to the page cache at
once, so a killed plugin loses only what was still queued; at the next
start a half-written last entry is cut off.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from plugin.logging import LogBatch

from .options import Options

__all__ = ["ContainerLog", "read_batches"]

log = logging.getLogger("filelog")

CURRENT = "log"
READ_CHUNK = 1 << 20
#: Seconds between two warnings about dropped lines for one container.
WARN_EVERY = 10.0


class ContainerLog:
    """The files of one container and their writer."""

    def __init__(self, directory: Path, options: Options, pause_file: Path | None = None) -> None:
        self.dir = directory
        self.options = options
        self.pause_file = pause_file
        self.cond = threading.Condition()
        self._queue: deque[tuple[bytes, int]] = deque()
        self.queued_bytes = 0
        self.received = 0
        self.written = 0
        self.dropped = 0
        #: Incremented at every rotation: a follower holding the old file knows.
        self.generation = 0
        #: Streams writing into this log now.
        self.writers = 0
        self._writer: threading.Thread | None = None
        #: Writer threads past their last write, closing up.
        self._ending = 0
        self._compressor: threading.Thread | None = None
        self._last_warning = 0.0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._recover()
        # The current file always exists: a follower opens it before it is written.
        with open(self._path(CURRENT), "ab") as f:
            self.size = f.tell()

    def _path(self, name: str) -> Path:
        return self.dir / name

    # --- start-up -----------------------------------------------------------------

    def _recover(self) -> None:
        """Cut a half-written last entry (the plugin was killed mid-write),
        and drop what an interrupted compression left."""
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        current = self._path(CURRENT)
        if not current.exists():
            return
        with open(current, "r+b") as f:
            batch, rest = LogBatch.take(f.read())
            if rest:
                log.warning("%s: cut %d bytes of a half-written entry", current, len(rest))
                f.truncate(len(batch.raw))

    # --- writing --------------------------------------------------------------------

    def attach(self, options: Options) -> None:
        """A stream starts writing (with its container's options)."""
        with self.cond:
            self.options = options
            self.writers += 1
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name=f"filelog {self.dir.name[:12]}", daemon=True
                )
                self._writer.start()

    def detach(self) -> None:
        """A stream stopped: the writer ends once the queue is written."""
        with self.cond:
            self.writers -= 1
            self.cond.notify_all()

    def offer(self, raw: bytes, count: int) -> bool:
        """Queue framed entries for the disk; never waits. False when the
        buffer is full: the entries are dropped and counted."""
        with self.cond:
            self.received += count
            # A batch always fits an empty buffer (a read is at most the
            # FIFO's size): the buffer bounds what waits behind the disk.
            if self.queued_bytes and self.queued_bytes + len(raw) > self.options.buffer_size:
                self.dropped += count
                now = time.monotonic()
                if now - self._last_warning > WARN_EVERY:
                    self._last_warning = now
                    log.warning(
                        "%s: the disk is not keeping up; %d lines dropped so far (buffer %d bytes)",
                        self.dir.name[:12],
                        self.dropped,
                        self.options.buffer_size,
                    )
                return False
            self._queue.append((raw, count))
            self.queued_bytes += len(raw)
            self.cond.notify_all()
            return True

    def _write_loop(self) -> None:
        # Each writer thread has its own handle: one ending may overlap the next.
        f: IO[bytes] | None = None
        try:
            while True:
                with self.cond:
                    while not self._queue and self.writers > 0:
                        self.cond.wait()
                    if not self._queue:
                        # Under the lock: a stream attaching now starts a new writer.
                        self._writer = None
                        self._ending += 1
                        break
                    items = list(self._queue)
                    self._queue.clear()
                data = b"".join(raw for raw, _ in items)
                count = sum(n for _, n in items)
                self._wait_while_paused()
                try:
                    if self.size and self.size + len(data) > self.options.max_size:
                        if f is not None:
                            f.close()
                            f = None
                        self._rotate()
                    if f is None:
                        f = open(self._path(CURRENT), "ab")  # noqa: SIM115 (kept open)
                    f.write(data)
                    f.flush()  # into the page cache: a killed plugin keeps it
                    self.size += len(data)
                except OSError as exc:
                    log.error("%s: cannot write the log: %s; %d lines lost", self.dir, exc, count)
                    with self.cond:
                        self.dropped += count
                        self.queued_bytes -= len(data)
                        self.cond.notify_all()
                    continue
                with self.cond:
                    self.written += count
                    self.queued_bytes -= len(data)
                    self.cond.notify_all()
        except BaseException:
            with self.cond:
                self._writer = None
                self._ending += 1
            raise
        finally:
            if f is not None:
                f.close()
            self._wait_compressed()
            self._save_counters()
            with self.cond:
                self._ending -= 1
                self.cond.notify_all()

    def _wait_while_paused(self) -> None:
        # A test hook standing for a disk that hangs (a dead NFS server).
        while self.pause_file is not None and self.pause_file.exists():
            time.sleep(0.05)

    def _rotate(self) -> None:
        # One compression at a time, never under a rename: they are rare
        # (a file fills far slower than it is compressed).
        self._wait_compressed()
        keep = self.options.max_file - 1
        with self.cond:
            if keep == 0:
                os.unlink(self._path(CURRENT))
            else:
                for n in range(keep, 0, -1):
                    for suffix in ("", ".gz"):
                        src = self._path(f"{CURRENT}.{n}{suffix}")
                        if not src.exists():
                            continue
                        if n == keep:
                            src.unlink()
                        else:
                            src.rename(self._path(f"{CURRENT}.{n + 1}{suffix}"))
                os.rename(self._path(CURRENT), self._path(f"{CURRENT}.1"))
            for extra in self.dir.glob(f"{CURRENT}.*"):
                number = extra.name.split(".")[1]
                if number.isdigit() and int(number) > keep:
                    extra.unlink()
            with open(self._path(CURRENT), "ab"):
                pass
            self.size = 0
            self.generation += 1
            self.cond.notify_all()
        if keep and self.options.compress:
            # On a thread of its own: the writer goes on meanwhile.
            self._compressor = threading.Thread(
                target=self._compress,
                args=(self._path(f"{CURRENT}.1"),),
                name=f"gzip {self.dir.name[:12]}",
                daemon=True,
            )
            self._compressor.start()

    def _wait_compressed(self) -> None:
        if self._compressor is not None:
            self._compressor.join()
            self._compressor = None

    def _compress(self, path: Path) -> None:
        try:
            self._gzip(path)
        except OSError as exc:
            log.error("%s: cannot compress: %s (kept uncompressed)", path, exc)

    def _gzip(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".gz.tmp")
        with open(path, "rb") as src, open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
                while chunk := src.read(READ_CHUNK):
                    gz.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        with self.cond:
            if path.exists():  # not rotated away meanwhile
                tmp.rename(path.with_name(path.name + ".gz"))
                path.unlink()
            else:
                tmp.unlink()

    def sync(self, timeout: float) -> bool:
        """Wait until every entry offered so far is written (or dropped):
        True; False after ``timeout`` seconds (the disk is slow)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            target = self.received
            while self.written + self.dropped < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def wait_writer(self, timeout: float, stalled: float | None = None) -> bool:
        """Wait for the writer thread to end; False after ``timeout``, or
        after ``stalled`` seconds in which it wrote nothing (a hung disk)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            progress = (self.written, self.dropped)
            since = time.monotonic()
            while self._writer is not None or self._ending:
                now = time.monotonic()
                if now >= deadline:
                    return False
                if (self.written, self.dropped) != progress:
                    progress, since = (self.written, self.dropped), now
                elif stalled is not None and now - since >= stalled:
                    return False
                self.cond.wait(min(deadline - now, stalled or deadline - now))
            return True

    @property
    def live(self) -> bool:
        """Something may still be appended: a stream writes, data is queued
        or being written."""
        return self.writers > 0 or self.queued_bytes > 0 or self._writer is not None

    def counters(self) -> dict[str, int]:
        with self.cond:
            return {"received": self.received, "written": self.written, "dropped": self.dropped}

    def _save_counters(self) -> None:
        path = self._path("counters.json")
        try:
            tmp = path.with_name(f"counters.json.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(self.counters()) + "\n")
            tmp.rename(path)
        except OSError as exc:
            log.warning("%s: cannot save the counters: %s", path, exc)

    # --- reading --------------------------------------------------------------------

    def snapshot(self) -> tuple[list[IO[bytes]], int, int]:
        """The files as they are now, oldest first, opened (the current one
        last), with the current file's size and the generation."""
        with self.cond:
            files: list[IO[bytes]] = []
            for n in range(MAX_ROTATED, 0, -1):
                for name in (f"{CURRENT}.{n}.gz", f"{CURRENT}.{n}"):
                    try:
                        f: IO[bytes] = open(self._path(name), "rb")  # noqa: SIM115 (returned open)
                    except FileNotFoundError:
                        continue
                    files.append(gzip.GzipFile(fileobj=f) if name.endswith(".gz") else f)  # type: ignore[arg-type]
                    break
            current: IO[bytes]
            try:
                current = open(self._path(CURRENT), "rb")  # noqa: SIM115
            except FileNotFoundError:
                current = io.BytesIO()
            files.append(current)
            return files, self.size, self.generation

    def open_current(self) -> tuple[IO[bytes], int]:
        with self.cond:
            try:
                return open(self._path(CURRENT), "rb"), self.generation
            except FileNotFoundError:
                return io.BytesIO(), self.generation


MAX_ROTATED = 100


def read_batches(f: IO[bytes], limit: int | None = None) -> Iterator[LogBatch]:
    """The complete frames of ``f`` in batches (at most ``limit`` bytes read)."""
    carry = b""
    left = limit
    while True:
        size = READ_CHUNK if left is None else min(READ_CHUNK, left)
        if size <= 0:
            break
        chunk = f.read(size)
        if not chunk:
            break
        if left is not None:
            left -= len(chunk)
        batch, carry = LogBatch.take(carry + chunk if carry else chunk)
        if batch.count:
            yield batch
