"""Calls answered with a stream (``LogDriver.ReadLogs``), apart from the
JSON calls' short path in ``_app``.

The driver's method returns an iterable (run on a thread of its own, since
it may block) or an async iterable (run as a task); each item becomes bytes
(``Endpoint.stream``) in a bounded pipe, and the handler sends whatever the
pipe holds as one chunk of a chunked response. So items are flushed as soon
as they come when they come slowly (``docker logs -f``), and coalesced into
large chunks when they come fast; the body ends when the iterator does. An
error before the first item is answered as JSON like any call; the daemon
going away closes the iterator.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from ._app import Handler, Receive, Scope, Send, _answer, _Disconnected, _read_body
from ._driver import Endpoint
from ._wire import decode_body, encode
from .errors import PluginError

__all__ = ["stream_handler"]

log = logging.getLogger("plugin")

# What the daemon's own reference plugin sends; the daemon does not look.
_CONTENT_TYPE = (b"content-type", b"application/x-json-stream")
#: Bytes the pipe holds before the producer waits for the daemon to read.
PIPE_LIMIT = 1 << 20


class _Pipe:
    """Items from one producer (a thread or a task) to the sending task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.lock = threading.Condition()
        self.chunks: list[bytes] = []
        self.size = 0
        self.items = 0
        self.done = False
        self.error: BaseException | None = None
        self.cancelled = False
        self.signalled = False
        self.ready = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()

    def _wake(self) -> None:
        # Under the lock: one wake-up per batch the sender takes.
        if self.signalled:
            return
        self.signalled = True
        if threading.get_ident() == self.loop_thread:
            self.ready.set()
        else:
            self.loop.call_soon_threadsafe(self.ready.set)

    def put(self, data: bytes) -> None:
        """From the producer thread; waits while the pipe is full."""
        with self.lock:
            while self.size > PIPE_LIMIT and not self.cancelled:
                self.lock.wait(1.0)
            self.chunks.append(data)
            self.size += len(data)
            self.items += 1
            self._wake()

    async def aput(self, data: bytes) -> None:
        """From a producer task on the loop."""
        while self.size > PIPE_LIMIT and not self.cancelled:
            self.space.clear()
            await self.space.wait()
        with self.lock:
            self.chunks.append(data)
            self.size += len(data)
            self.items += 1
            self._wake()
        if self.size >= 1 << 16:
            await asyncio.sleep(0)  # let the sender take a full chunk

    def finish(self, error: BaseException | None = None) -> None:
        with self.lock:
            self.done = True
            self.error = error
            self._wake()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            self.lock.notify_all()
        self.space.set()

    async def get(self) -> tuple[list[bytes], int, bool, BaseException | None]:
        await self.ready.wait()
        with self.lock:
            self.ready.clear()
            self.signalled = False
            chunks, self.chunks = self.chunks, []
            items, self.items = self.items, 0
            self.size = 0
            done, error = self.done, self.error
            self.lock.notify_all()
        self.space.set()
        return chunks, items, done, error


def stream_handler(call: str, endpoint: Endpoint, fn: Callable[..., Any]) -> Handler:
    encode_item = endpoint.stream
    assert encode_item is not None
    request_type = endpoint.request
    takes_request = request_type is not None

    def produce_in_thread(pipe: _Pipe, args: tuple[Any, ...]) -> None:
        try:
            result = fn(*args)
            if not hasattr(result, "__iter__"):
                raise TypeError(f"{call} returned {type(result).__name__}, expected an iterable")
            iterator = iter(result)
            try:
                for item in iterator:
                    if pipe.cancelled:
                        break
                    pipe.put(encode_item(item))
                    if pipe.cancelled:
                        break
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            pipe.finish(exc)
        else:
            pipe.finish()

    async def produce_async(pipe: _Pipe, args: tuple[Any, ...]) -> None:
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aiter__"):
                try:
                    async for item in result:
                        await pipe.aput(encode_item(item))
                finally:
                    aclose = getattr(result, "aclose", None)
                    if aclose is not None:
                        await aclose()
            elif hasattr(result, "__iter__"):
                for item in result:
                    await pipe.aput(encode_item(item))
            else:
                raise TypeError(f"{call} returned {type(result).__name__}, expected an iterable")
        except asyncio.CancelledError:
            pipe.finish()
            raise
        except BaseException as exc:
            pipe.finish(exc)
        else:
            pipe.finish()

    async def watch(receive: Receive, pipe: _Pipe) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        log.debug("%s: the daemon went away; the stream stops", call)
        pipe.cancel()

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await _read_body(scope, receive)
            req = decode_body(body, request_type)
        except PluginError as exc:
            await _answer(scope, send, exc.status, encode({"Err": exc.message}))
            return
        except _Disconnected:
            return
        args = (req,) if takes_request else ()
        loop = asyncio.get_running_loop()
        pipe = _Pipe(loop)
        task: asyncio.Task[None] | None = None
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            task = loop.create_task(produce_async(pipe, args))
        else:
            threading.Thread(
                target=produce_in_thread, args=(pipe, args), name=call, daemon=True
            ).start()
        watcher = loop.create_task(watch(receive, pipe))
        started = False
        try:
            while True:
                chunks, items, done, error = await pipe.get()
                if not started:
                    if not items and not done:
                        continue
                    if error is not None and not items:
                        await _answer(scope, send, *_error(call, error))
                        return
                    await send(
                        {"type": "http.response.start", "status": 200, "headers": [_CONTENT_TYPE]}
                    )
                    started = True
                data = b"".join(chunks)
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if error is not None:
                    log.error("%s failed while streaming", call, exc_info=error)
                if done:
                    break
                if pipe.cancelled:
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            pipe.cancel()
            watcher.cancel()
            if task is not None:
                task.cancel()

    return handle


def _error(call: str, exc: BaseException) -> tuple[int, bytes]:
    if isinstance(exc, PluginError):
        return exc.status, encode({"Err": exc.message})
    log.error("%s failed", call, exc_info=exc)
    return 500, encode({"Err": f"unexpected {type(exc).__name__} in the plugin (see its log)"})
