"""uvicorn's httptools protocol and asyncio's event loop, with three changes
for the daemon's short calls; uvicorn serves, asyncio runs it, as before.

* One write per answer. uvicorn writes a response's status line and
  headers, then its body, each with its own ``send(2)``: two system calls
  and two wake-ups of the daemon's reader per answer, the largest part of
  the plugin's CPU time per call. Each connection's transport can hold one
  write until the next one: the SDK's direct answers (``plugin._app``) ask
  for that before they send their head, so head and body leave together.
  Every other response (Starlette's, streamed ones) is written exactly as
  uvicorn writes it.
* No address lookups on a unix socket. uvicorn asks the kernel for both
  ends' addresses of every connection (two system calls), and answers None
  for a unix socket's; the protocol gets None without asking.
* The SDK's own answers built from class attributes (``Plugin.Activate``,
  a default ``Capabilities``; ``App.at_once``) run at once when their
  request's head arrives, not in a new task on a later pass of the loop:
  they need neither the body nor a task. Should one have to wait (the
  connection's buffer full), it goes on in a task.
* A connection is accepted without a task. asyncio accepts in a loop until
  the backlog is empty (one more ``accept(2)``, failing, per connection) and
  sets each connection up in a new task; the loop here accepts one
  connection per readiness of the socket (it stays readable while more wait)
  and makes its transport at once, as that task would.

Without httptools, uvicorn's pure-Python h11 protocol serves, unchanged.
Imported only by ``serve()``, after uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["ONE_WRITE", "OneWrite", "PluginLoop", "protocol_class"]

#: The scope key under which the protocol offers a request its connection's
#: ``OneWrite`` (absent under any other server).
ONE_WRITE = "plugin.one_write"


class OneWrite:
    """A connection's transport that can hold one write until the next.

    ``hold()`` makes the next write wait for the one after it, and both go
    out as one. Closing, aborting or ending the stream sends (or drops) what
    is held first. Every other attribute is the wrapped transport's.
    """

    __slots__ = ("_held", "_holding", "_no_socket", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._holding = False
        self._held: bytes | None = None
        self._no_socket = False

    def hold(self) -> None:
        self._holding = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._holding:
            self._holding = False
            self._held = bytes(data)
            return
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self.transport.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def _release(self) -> None:
        self._holding = False
        held = self._held
        if held is not None:
            self._held = None
            self.transport.write(held)

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self.transport.get_write_buffer_size() + (len(held) if held is not None else 0)

    def write_eof(self) -> None:
        self._release()
        self.transport.write_eof()

    def close(self) -> None:
        self._release()
        self.transport.close()

    def abort(self) -> None:
        self._holding = False
        self._held = None
        self.transport.abort()

    # The calls uvicorn makes on every connection or request, spelled out
    # (cheaper than __getattr__).
    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._no_socket and name == "socket":
            return default
        return self.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def protocol_class() -> Any:
    """uvicorn's ``Config(http=...)``: the httptools protocol offering
    ``OneWrite`` to the app, or ``"h11"`` when httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    class PluginProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._one_write = writes = OneWrite(transport)
            # A unix socket's peers have no address: without the socket,
            # uvicorn reads the transport's cached "sockname" and "peername"
            # (a path, or "") and finds None, as it would have, for both.
            writes._no_socket = isinstance(transport.get_extra_info("sockname"), str)
            try:
                super().connection_made(writes)  # type: ignore[arg-type]
            finally:
                writes._no_socket = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[ONE_WRITE] = self._one_write  # type: ignore[literal-required]

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            scope = cycle.scope
            if scope["method"] != "POST" or scope["path"] not in getattr(app, "at_once", ()):
                super()._start_asgi_task(cycle, app)
                return
            run = cycle.run_asgi(app)
            try:
                waiting = run.send(None)
            except StopIteration:
                return
            task = self.loop.create_task(_go_on(run, waiting))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    return PluginProtocol


async def _go_on(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Go on with ``coro``, started by hand and now waiting for what it
    yielded (``waiting``), in the task running this."""
    return await _GoOn(coro, waiting)


class _GoOn:
    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        # What a task does with a coroutine: hand what it waits for to the
        # loop, then resume it with the outcome (or throw in a cancellation).
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                received = yield waiting
            except BaseException as exc:
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(received)
                except StopIteration as stop:
                    return stop.value


class PluginLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, accepting a plain connection without a task."""

    def _accept_connection(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *args: Any,
    ) -> None:
        if sslcontext is not None:
            super()._accept_connection(  # type: ignore[misc]
                protocol_factory, sock, sslcontext, server, backlog, *args
            )
            return
        try:
            conn, addr = sock.accept()
            conn.setblocking(False)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            # Out of descriptors or memory: asyncio's own handling (it pauses
            # accepting for a while).
            super()._accept_connection(  # type: ignore[misc]
                protocol_factory, sock, sslcontext, server, 1, *args
            )
            return
        try:
            protocol = protocol_factory()
            self._make_socket_transport(  # type: ignore[attr-defined]
                conn, protocol, extra={"peername": addr}, server=server
            )
        except (SystemExit, KeyboardInterrupt):
            conn.close()
            raise
        except BaseException as exc:
            conn.close()
            self.call_exception_handler(
                {"message": "Error on transport creation for incoming connection", "exception": exc}
            )
