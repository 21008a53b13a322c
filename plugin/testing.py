"""Test a driver in-process, the way the daemon calls it, without a socket.

::

    from plugin.testing import PluginClient

    def test_create_then_get(tmp_path):
        with PluginClient(LocalVolumes(root=tmp_path)) as client:
            assert client.call("VolumeDriver.Create", {"Name": "v1"}) == {}
            reply = client.post("/VolumeDriver.Get", {"Name": "nope"})
            assert reply.status == 500 and "no such volume" in reply.json["Err"]

Requests go through the same app, decoding and error handling as in a real
plugin; bodies may be dicts (sent as JSON), strings or raw bytes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.types import Message

from ._app import make_app
from ._driver import Driver

__all__ = ["PluginCallError", "PluginClient", "Reply"]


@dataclass(frozen=True)
class Reply:
    """What the plugin answered: status, raw body and headers (lower-case)."""

    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class PluginCallError(AssertionError):
    """A ``call()`` the plugin answered with something other than 200."""

    def __init__(self, path: str, reply: Reply) -> None:
        super().__init__(f"{path} answered {reply.status}: {reply.body.decode(errors='replace')}")
        self.reply = reply


class PluginClient:
    """Send requests to drivers in-process, as the daemon would over the socket."""

    def __init__(self, *drivers: Driver) -> None:
        self.app = make_app(*drivers)
        self._loop = asyncio.new_event_loop()

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.close()

    def post(self, path: str, body: Any = None, *, method: str = "POST") -> Reply:
        """Send one request; ``body`` None sends an empty body, as the daemon
        does for calls without arguments."""
        if body is None:
            raw = b""
        elif isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = json.dumps(body).encode() + b"\n"  # Go's encoder adds the newline
        if not path.startswith("/"):
            path = "/" + path
        return self._loop.run_until_complete(self._request(method, path, raw))

    def call(self, endpoint: str, body: Any = None) -> Any:
        """POST and return the decoded JSON; raise PluginCallError unless 200."""
        reply = self.post(endpoint, body)
        if reply.status != 200:
            raise PluginCallError(endpoint, reply)
        return reply.json

    async def _request(self, method: str, path: str, body: bytes) -> Reply:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"plugin.moby.localhost"),
                (b"accept", b"application/vnd.docker.plugins.v1.2+json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": None,
            "server": None,
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect while the app works
            raise AssertionError("unreachable")

        status = 0
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    headers[key.decode().lower()] = value.decode()
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, send)
        except Exception:
            # Starlette re-raises after answering 500; the answer is what counts.
            if not status:
                raise
        return Reply(status, b"".join(chunks), headers)
