"""uvicorn's httptools protocol, with the SDK's answers sent in one write.

uvicorn writes a response's status line and headers, then its body, each
with its own ``send(2)``: two system calls and two wake-ups of the daemon's
reader for each answer, the largest part of the plugin's CPU time per call.
Here each connection's transport can hold one write until the next one: the
SDK's direct answers (``plugin._app``) ask for that before they send their
head, so head and body leave together. Every other response (Starlette's,
streamed ones) is written exactly as uvicorn writes it. Without httptools,
uvicorn's pure-Python h11 protocol serves, unchanged.

Imported only by ``serve()``, after uvicorn.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["ONE_WRITE", "OneWrite", "protocol_class"]

#: The scope key under which the protocol offers a request its connection's
#: ``OneWrite`` (absent under any other server).
ONE_WRITE = "plugin.one_write"


class OneWrite:
    """A connection's transport that can hold one write until the next.

    ``hold()`` makes the next write wait for the one after it, and both go
    out as one. Closing, aborting or ending the stream sends (or drops) what
    is held first. Every other attribute is the wrapped transport's.
    """

    __slots__ = ("_held", "_holding", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._holding = False
        self._held: bytes | None = None

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
            self._one_write = OneWrite(transport)
            super().connection_made(self._one_write)  # type: ignore[arg-type]

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[ONE_WRITE] = self._one_write  # type: ignore[literal-required]

    return PluginProtocol
