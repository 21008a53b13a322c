"""The ASGI app: one generic handler driven by each type's endpoint table.

The daemon asks ``Capabilities`` and ``Get`` before almost every operation,
so its calls take a short path: the POST path is looked up in a dict and a
raw ASGI handler reads the body from the ASGI messages and answers with two
messages and precomputed headers. Anything else (404, 405, a lifespan
event) goes to a Starlette app with JSON error handlers, built (and
imported) on first use: a plugin the daemon drives never loads Starlette.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import math
import typing
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ._driver import Driver, Endpoint
from ._http import ONE_WRITE
from ._wire import MAX_BODY, Model, compile_model, decode_body, encode
from .errors import BadRequest, PluginError

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["App", "make_app"]

log = logging.getLogger("plugin")

# What the Go SDK sends; the daemon never inspects it.
MEDIA_TYPE = "application/vnd.docker.plugins.v1.1+json"
_CONTENT_TYPE = (b"content-type", MEDIA_TYPE.encode())

#: Threads for plain driver methods (which may block); as many as Starlette's
#: default thread pool allows.
MAX_THREADS = 40

# ASGI, as in starlette.types (not imported: see the module docstring).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class App:
    """The ASGI app of a plugin (``make_app``)."""

    def __init__(self, calls: dict[str, Handler]) -> None:
        self.calls = calls
        #: The POST paths answered without waiting for anything (not even
        #: the body): the SDK's own answers built from class attributes
        #: (Activate, a default Capabilities). plugin._http runs them at
        #: once, without a task.
        self.at_once = frozenset(p for p, h in calls.items() if getattr(h, "at_once", False))
        self._fallback: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self.calls.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        if self._fallback is None:
            self._fallback = _fallback_app(list(self.calls))
        await self._fallback(scope, receive, send)


def make_app(*drivers: Driver) -> App:
    """Build the ASGI app serving ``drivers`` (one per plugin type)."""
    if not drivers:
        raise ValueError("make_app() needs at least one driver")
    seen: set[str] = set()
    threads = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="plugin")
    deadlines = _Deadlines()
    calls: dict[str, Handler] = {"/Plugin.Activate": _activate_handler(drivers)}
    for driver in drivers:
        if not isinstance(driver, Driver):
            raise TypeError(f"{driver!r} is not a driver instance (did you pass the class?)")
        if driver.prefix in seen:
            raise ValueError(f"two drivers of the same type ({driver.prefix}) in one plugin")
        seen.add(driver.prefix)
        for endpoint in driver.endpoints:
            for model in (endpoint.request, endpoint.response):
                if model is not None:
                    compile_model(model)
            fn = driver.handler_for(endpoint)
            if fn is not None:
                path = f"/{driver.prefix}.{endpoint.name}"
                if endpoint.stream is not None:
                    from ._stream import stream_handler

                    calls[path] = stream_handler(path[1:], endpoint, fn)
                    continue
                request = request_model(fn, endpoint, path[1:])
                if request is not None:
                    compile_model(request)
                timeout = driver.call_timeout(endpoint)
                message = driver.timeout_message(endpoint, timeout) if timeout else ""
                calls[path] = _handler(
                    path[1:],
                    endpoint,
                    request,
                    fn,
                    timeout,
                    message,
                    threads,
                    deadlines,
                    driver.log_answers,
                )
    return App(calls)


def request_model(fn: Callable[..., Any], endpoint: Endpoint, call: str) -> type[Model] | None:
    """The model a request to ``fn`` is decoded into: the endpoint's, or
    the subclass of it that ``fn``'s parameter is annotated with (an
    author's model adding fields the daemon sends and the SDK does not
    know yet). TypeError when the annotation names another model."""
    base = endpoint.request
    if base is None:
        return None
    try:
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())
    except Exception:  # unresolvable annotations: they are the author's business
        return base
    hint = hints.get(params[0].name) if params else None
    if not (isinstance(hint, type) and issubclass(hint, Model)):
        return base
    if not issubclass(hint, base):
        raise TypeError(
            f"{call}: the method takes {hint.__name__}, which is not a subclass of "
            f"{base.__name__} (the model of this call)"
        )
    return hint


def _fallback_app(paths: list[str]) -> Starlette:
    """Starlette answering what is not a plugin call: 404 for other paths,
    405 for other methods on the calls' paths, JSON for every error."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    app = Starlette(
        routes=[Route(path, _unreachable, methods=["POST"]) for path in paths],
        exception_handlers={
            404: _not_found,
            405: _not_allowed,
            HTTPException: _http_error,
            # Last resort: keep the answer a JSON object the daemon can read.
            Exception: _internal_error,
        },
    )
    # "/VolumeDriver.Create/" would otherwise get a 307 redirect, not JSON.
    app.router.redirect_slashes = False
    return app


def _json(status: int, body: bytes) -> Response:
    from starlette.responses import Response

    return Response(body, status_code=status, media_type=MEDIA_TYPE)


def error_response(status: int, message: str) -> Response:
    return _json(status, encode({"Err": message}))


async def _answer(scope: Scope, send: Send, status: int, body: bytes) -> None:
    writes = scope.get(ONE_WRITE)
    if writes is not None:  # head and body in one write (plugin._http)
        writes.hold()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"%d" % len(body)), _CONTENT_TYPE],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _runs_inline(fn: Callable[..., Any]) -> bool:
    """Plain methods the SDK itself defines (``capabilities``) only build an
    answer from class attributes: they run on the event loop, sparing the
    most frequent call a trip through the thread pool."""
    module = getattr(fn, "__module__", None) or ""
    return module.startswith(__package__ + ".")


class _Disconnected(Exception):
    """The daemon went away before the body arrived: nothing to answer."""


class _TimedOut(Exception):
    pass


def _handler(
    call: str,
    endpoint: Endpoint,
    request_type: type[Model] | None,
    fn: Callable[..., Any],
    timeout: float | None,
    timeout_message: str,
    threads: ThreadPoolExecutor,
    deadlines: _Deadlines,
    log_answers: bool = True,
) -> Handler:
    response_type = endpoint.response
    is_async = inspect.iscoroutinefunction(fn)
    inline = not is_async and _runs_inline(fn)
    takes_request = request_type is not None
    # A None result stands for the response model's defaults when it has no
    # required field (List -> {"Volumes": []}); otherwise it is a driver bug.
    default_response = (
        response_type if response_type is not None and not _requires_body(response_type) else None
    )

    def timeout_error() -> bytes:
        log.error("%s still running after %g s; answered with a timeout", call, timeout)
        return encode({"Err": timeout_message})

    async def call_driver(args: tuple[Any, ...], scope: Scope, send: Send) -> Any:
        if inline:
            result = fn(*args)
        elif is_async:
            if timeout is None:
                return await fn(*args)
            return await _with_deadline(
                call, fn(*args), timeout, timeout_error, scope, send, deadlines
            )
        else:
            # Plain methods may block: keep them off the event loop.
            future = asyncio.get_running_loop().run_in_executor(threads, fn, *args)
            if timeout is None:
                result = await future
            else:
                try:
                    result = await _within(future, timeout, deadlines)
                except _TimedOut:
                    # A thread cannot be stopped: the call goes on, and is
                    # logged when it ends, while the daemon gets an answer.
                    _late.add(future)
                    future.add_done_callback(lambda f: _finished_late(call, f))
                    await _answer(scope, send, 500, timeout_error())
                    return _ANSWERED
        if inspect.isawaitable(result):  # a plain wrapper of an async method
            result = await result
        return result

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if takes_request:
                req = decode_body(await _read_body(scope, receive), request_type)
                result = await call_driver((req,), scope, send)
            else:
                # The body is ignored, so not even read (the server drops
                # it); only a declared size over the limit is refused.
                _check_length(scope)
                result = await call_driver((), scope, send)
            if result is _ANSWERED:
                return
            if result is None and default_response is not None:
                result = default_response()
            if response_type is None:
                if result is not None:
                    raise TypeError(f"{call} returned {type(result).__name__}, expected None")
            elif not isinstance(result, response_type):
                raise TypeError(
                    f"{call} returned {type(result).__name__}, expected {response_type.__name__}"
                )
            payload = encode(result)
        except PluginError as exc:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s -> %d %s", call, exc.status, exc.message)
            await _answer(scope, send, exc.status, encode({"Err": exc.message}))
            return
        except _Disconnected:
            log.debug("%s: the daemon closed the connection before sending the body", call)
            return
        except Exception as exc:
            log.exception("%s failed", call)
            # No traceback, message or path goes to the daemon (the log has
            # them); the daemon prefixes the call name itself.
            message = f"unexpected {type(exc).__name__} in the plugin (see its log)"
            await _answer(scope, send, 500, encode({"Err": message}))
            return
        if log.isEnabledFor(logging.DEBUG):
            shown = (
                payload[:200].decode(errors="replace") if log_answers else f"({len(payload)} bytes)"
            )
            log.debug("%s -> 200 %s", call, shown)
        await _answer(scope, send, 200, payload)

    handle.at_once = inline and not takes_request  # type: ignore[attr-defined]
    return handle


_ANSWERED = object()  # call_driver's result when the timeout was answered already


class _Deadlines:
    """When the calls in flight must be answered for, watched by one timer set
    for the earliest of them: calls nearly always end long before their
    deadline, and a timer per call costs more than the daemon's short calls
    themselves."""

    def __init__(self) -> None:
        self._due: dict[int, tuple[float, Callable[[], None]]] = {}
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, seconds: float, expire: Callable[[], None]) -> int:
        """Call ``expire()`` in ``seconds`` unless ``discard`` comes first."""
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        self._count += 1
        key = self._count
        self._due[key] = (when, expire)
        if when < self._timer_at or loop is not self._loop:
            self._arm(loop, when)
        return key

    def discard(self, key: int) -> None:
        self._due.pop(key, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._check)
        self._timer_at = when
        self._loop = loop

    def _check(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = None
        self._timer_at = math.inf
        # A timer may run a little before its time (the loop's clock resolution).
        now = loop.time() + 0.001
        for key in [k for k, (when, _) in self._due.items() if when <= now]:
            _, expire = self._due.pop(key)
            expire()
        if self._due:
            self._arm(loop, min(when for when, _ in self._due.values()))


async def _with_deadline(
    call: str,
    coro: Awaitable[Any],
    timeout: float,
    timeout_error: Callable[[], bytes],
    scope: Scope,
    send: Send,
    deadlines: _Deadlines,
) -> Any:
    """Await ``coro`` on the handler's own task (no extra task on the fast
    path); if it is still running after ``timeout`` seconds, the daemon is
    answered with ``timeout_error()`` and the call goes on, logged when it
    ends."""
    answered: list[asyncio.Task[None]] = []

    def expire() -> None:
        task = asyncio.get_running_loop().create_task(_answer(scope, send, 500, timeout_error()))
        answered.append(task)
        _late.add(task)  # a strong reference until it is sent
        task.add_done_callback(_late.discard)

    key = deadlines.add(timeout, expire)
    try:
        result = await coro
    except BaseException as exc:
        if not answered:
            raise
        if isinstance(exc, asyncio.CancelledError):
            log.warning("%s (timed out earlier) was cancelled", call)
            raise
        log.warning("%s (timed out earlier) failed: %s", call, exc)
        return _ANSWERED
    finally:
        deadlines.discard(key)
    if answered:
        log.warning("%s (timed out earlier) finished", call)
        return _ANSWERED
    return result


async def _within(future: asyncio.Future[Any], timeout: float, deadlines: _Deadlines) -> Any:
    """``future``'s result, or _TimedOut after ``timeout`` seconds, leaving
    ``future`` running (``asyncio.wait_for`` on a shield, without the extra
    task)."""
    waiter = asyncio.get_running_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    key = deadlines.add(timeout, wake)
    try:
        await waiter
    finally:
        deadlines.discard(key)
        future.remove_done_callback(wake)
    if not future.done():
        raise _TimedOut
    return future.result()


_late: set[asyncio.Future[Any]] = set()  # timed-out calls still running


def _finished_late(call: str, task: asyncio.Future[Any]) -> None:
    _late.discard(task)
    if task.cancelled():
        log.warning("%s (timed out earlier) was cancelled", call)
    elif task.exception() is not None:
        log.warning("%s (timed out earlier) failed: %s", call, task.exception())
    else:
        log.warning("%s (timed out earlier) finished", call)


def _requires_body(model: type[Model]) -> bool:
    # A response model with a required field cannot be replaced by {}.
    return any(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(model)  # type: ignore[arg-type]
    )


def _check_length(scope: Scope) -> None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            if value.isdigit() and int(value) > MAX_BODY:
                raise BadRequest(
                    f"bad request: body too large ({value.decode()} bytes, limit {MAX_BODY})"
                )
            return


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    _check_length(scope)
    message = await receive()
    if message["type"] != "http.request":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the daemon's bodies come in one piece
        if len(body) > MAX_BODY:
            raise BadRequest(f"bad request: body too large (over {MAX_BODY} bytes)")
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"bad request: body too large (over {MAX_BODY} bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _activate_handler(drivers: tuple[Driver, ...]) -> Handler:
    body = json.dumps({"Implements": [d.implements for d in drivers]}).encode()

    async def activate(scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(scope, send, 200, body)

    activate.at_once = True  # type: ignore[attr-defined]
    return activate


async def _unreachable(request: Request) -> Response:
    raise AssertionError("a POST to a plugin call is answered before routing")


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"not implemented: {request.scope['path']}")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(
        405, f"method {request.method} not allowed: plugin endpoints answer POST only"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s", request.scope["path"], exc_info=exc)
    return error_response(500, "unexpected error in the plugin (see its log)")
