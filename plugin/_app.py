"""The Starlette app: one generic handler driven by each type's endpoint table."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._driver import Driver, Endpoint
from ._wire import MAX_BODY, Model, compile_model, decode_body, encode
from .errors import BadRequest, PluginError

__all__ = ["make_app"]

log = logging.getLogger("plugin")

# What the Go SDK sends; the daemon never inspects it.
MEDIA_TYPE = "application/vnd.docker.plugins.v1.1+json"


def make_app(*drivers: Driver) -> Starlette:
    """Build the ASGI app serving ``drivers`` (one per plugin type)."""
    if not drivers:
        raise ValueError("make_app() needs at least one driver")
    seen: set[str] = set()
    routes = [Route("/Plugin.Activate", _activate_handler(drivers), methods=["POST"])]
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
                handler = _handler(path[1:], endpoint, fn, driver.call_timeout(endpoint))
                routes.append(Route(path, handler, methods=["POST"]))
    app = Starlette(
        routes=routes,
        exception_handlers={
            404: _not_found,
            405: _not_allowed,
            HTTPException: _http_error,
            # Last resort (the handler catches driver errors itself): keep the
            # answer a JSON object the daemon can read.
            Exception: _internal_error,
        },
    )
    # "/VolumeDriver.Create/" would otherwise get a 307 redirect, not JSON.
    app.router.redirect_slashes = False
    return app


def _json(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type=MEDIA_TYPE)


def error_response(status: int, message: str) -> Response:
    return _json(status, encode({"Err": message}))


def _handler(
    call: str, endpoint: Endpoint, fn: Callable[..., Any], timeout: float | None
) -> Callable[[Request], Awaitable[Response]]:
    request_type = endpoint.request
    response_type = endpoint.response
    is_async = inspect.iscoroutinefunction(fn)
    takes_request = request_type is not None
    # A None result stands for the response model's defaults when it has no
    # required field (List -> {"Volumes": []}); otherwise it is a driver bug.
    default_response = (
        response_type if response_type is not None and not _requires_body(response_type) else None
    )

    async def call_driver(*args: Any) -> Any:
        if is_async:
            return await fn(*args)
        # Plain methods may block: keep them off the event loop.
        result = await run_in_threadpool(fn, *args)
        if inspect.isawaitable(result):  # a plain wrapper of an async method
            result = await result
        return result

    async def handle(request: Request) -> Response:
        try:
            body = await _read_body(request)
            req = decode_body(body, request_type)
            args = (req,) if takes_request else ()
            if timeout is None:
                result = await call_driver(*args)
            else:
                task = asyncio.ensure_future(call_driver(*args))
                try:
                    # Shielded: a thread cannot be stopped, so the call goes on
                    # (and is logged when it ends) while the daemon gets an answer.
                    result = await asyncio.wait_for(asyncio.shield(task), timeout)
                except TimeoutError:
                    _late.add(task)
                    task.add_done_callback(lambda t: _finished_late(call, t))
                    log.error("%s still running after %g s; answered with a timeout", call, timeout)
                    raise PluginError(
                        f"timed out after {timeout:g} s in the plugin (the daemon stops waiting "
                        f"at {endpoint.deadline:g} s); the operation may still finish: check "
                        "its result before retrying"
                    ) from None
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
            return error_response(exc.status, exc.message)
        except Exception as exc:
            log.exception("%s failed", call)
            # No traceback, message or path goes to the daemon (the log has
            # them); the daemon prefixes the call name itself.
            return error_response(
                500, f"unexpected {type(exc).__name__} in the plugin (see its log)"
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> 200 %s", call, payload[:200].decode(errors="replace"))
        return _json(200, payload)

    return handle


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


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise BadRequest(f"bad request: body too large ({length} bytes, limit {MAX_BODY})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"bad request: body too large (over {MAX_BODY} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _activate_handler(drivers: tuple[Driver, ...]) -> Callable[[Request], Awaitable[Response]]:
    body = json.dumps({"Implements": [d.implements for d in drivers]}).encode()

    async def activate(request: Request) -> Response:
        return _json(200, body)

    return activate


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"not implemented: {request.url.path}")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(
        405, f"method {request.method} not allowed: plugin endpoints answer POST only"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return error_response(500, "unexpected error in the plugin (see its log)")
