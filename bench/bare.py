"""``python -m bench.bare SOCKET [--threaded]``: the same two calls as a bare
Starlette app.

What a person would write without the SDK: two routes, ``request.json()``,
``JSONResponse``, served by uvicorn on a unix socket with the settings the
SDK uses (no access log, no server or date header, ``http="auto"``).
"""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MEDIA_TYPE = "application/vnd.docker.plugins.v1.1+json"


async def capabilities(request: Request) -> JSONResponse:
    return JSONResponse({"Capabilities": {"Scope": "local"}}, media_type=MEDIA_TYPE)


async def get(request: Request) -> JSONResponse:
    body = await request.json()
    name = body["Name"]
    volume = {"Name": name, "Mountpoint": "/mnt/volumes/" + name}
    return JSONResponse({"Volume": volume}, media_type=MEDIA_TYPE)


def capabilities_sync(request: Request) -> JSONResponse:
    return JSONResponse({"Capabilities": {"Scope": "local"}}, media_type=MEDIA_TYPE)


async def get_body_then_sync(request: Request) -> JSONResponse:
    # Starlette cannot read a body in a plain endpoint: read it here, then do
    # the work in the thread pool as a plain endpoint would.
    from starlette.concurrency import run_in_threadpool

    body = await request.json()
    return await run_in_threadpool(_get_sync, body["Name"])


def _get_sync(name: str) -> JSONResponse:
    volume = {"Name": name, "Mountpoint": "/mnt/volumes/" + name}
    return JSONResponse({"Volume": volume}, media_type=MEDIA_TYPE)


app = Starlette(
    routes=[
        Route("/VolumeDriver.Capabilities", capabilities, methods=["POST"]),
        Route("/VolumeDriver.Get", get, methods=["POST"]),
    ]
)
#: The same with the work in Starlette's thread pool, as plain driver
#: methods run in the SDK's.
app_threaded = Starlette(
    routes=[
        Route("/VolumeDriver.Capabilities", capabilities_sync, methods=["POST"]),
        Route("/VolumeDriver.Get", get_body_then_sync, methods=["POST"]),
    ]
)


def main() -> None:
    import uvicorn

    uvicorn.run(
        app_threaded if "--threaded" in sys.argv[2:] else app,
        uds=sys.argv[1],
        http="auto",
        loop="auto",
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=65,
    )


if __name__ == "__main__":
    main()
