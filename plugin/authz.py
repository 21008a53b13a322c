"""Authorization plugins: ``docker.authz/1.0`` (``/AuthZPlugin.*``).

Read top to bottom: wire constants, request/response models named after the
wire verb, the driver base class, the endpoint table, then what a policy needs
to read a request as the daemon will act on it: the API path and the bodies of
the calls that can hand out the host (shapes for ``plugin.gojson``).

The daemon asks ``AuthZReq`` before it handles an Engine API request and
``AuthZRes`` after, before the answer goes out; a request goes ahead only if
every authorization plugin allows both. It is enabled per daemon: the
plugin's name in ``authorization-plugins`` of ``daemon.json`` (then
``kill -HUP`` the daemon) or ``dockerd --authorization-plugin NAME``.

Failing closed is the SDK's job: only an ``AuthZResponse`` with ``allow=True``
returned by the driver is answered 200 with ``"Allow": true``. An exception,
a wrong return value, a request the SDK cannot decode, or a decision that
takes longer than ``AuthzPlugin.timeout`` is answered 500 with ``{"Err": ...}``,
which the daemon turns into a failed request (``plugin NAME failed with
error: AuthZPlugin.AuthZReq: ...``). ``Err`` is never sent with a 200: the
daemon ignores it there.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from abc import abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

from . import gojson
from ._driver import Driver, Endpoint
from ._wire import Model, wire
from .gojson import BOOL, STRING, Embed, Map, Ptr, Slice, Struct

__all__ = [
    "CONTAINER_CREATE",
    "EXEC_CREATE",
    "MAX_FORWARDED_BODY",
    "SERVICE_SPEC",
    "VOLUME_CREATE",
    "AuthZReqRequest",
    "AuthZResRequest",
    "AuthZResponse",
    "AuthzPlugin",
    "allow",
    "api_path",
    "container_host_config",
    "deny",
]

IMPLEMENTS = "authz"
PREFIX = "AuthZPlugin"
CAPABILITY = "docker.authz/1.0"

#: The daemon forwards a request body only when it is JSON (``Content-Type``
#: ``application/json``, parameters allowed), has a ``Content-Length`` (a
#: chunked body is not forwarded) below this many bytes, and the URI does not
#: end in ``/auth``. The handler may read the body all the same.
MAX_FORWARDED_BODY = 1024 * 1024


# --- requests ---------------------------------------------------------------------


@dataclass(slots=True)
class AuthZReqRequest(Model):
    """An Engine API request, before the daemon handles it.

    ``body`` is the raw request body (the daemon sends it base64-encoded), or
    ``b""`` when the daemon did not forward one (see ``body_missing``): read it
    with ``read_body``, which decodes it as the daemon will. ``user`` is the
    common name of the client's TLS certificate (``user_authn_method`` is then
    ``"TLS"``); both are empty for the unix socket and plain TCP.
    ``raw_peer_certificates`` is the client's certificate chain, each as PEM
    (``peer_certificates`` gives the text).
    """

    user: str = wire("User", "")
    user_authn_method: str = wire("UserAuthNMethod", "")
    method: str = wire("RequestMethod", "")
    #: As the client sent it, with the API version and the query string
    #: (``/v1.41/containers/json?all=1``); ``path`` is what the daemon routes.
    uri: str = wire("RequestUri", "")
    #: One value per name (the last one when a header is repeated), without
    #: ``Authorization``, ``X-Registry-Auth`` and ``X-Registry-Config``.
    headers: dict[str, str] = wire("RequestHeaders", factory=dict)
    body: bytes = wire("RequestBody", b"")
    raw_peer_certificates: list[bytes] = wire("RequestPeerCertificates", factory=list)

    @property
    def path(self) -> str:
        """The API path the daemon routes: ``uri`` parsed as Go does (an
        absolute URI's host dropped, percent-escapes decoded, ``//`` and
        ``.`` segments cleaned) without the version prefix and the query:
        ``/v1.41/containers/%63reate?name=x`` -> ``/containers/create``."""
        return api_path(self.uri)[0]

    @property
    def api_version(self) -> str:
        """``"1.41"`` for ``/v1.41/...``; ``""`` when the URI has no version."""
        return api_path(self.uri)[1]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's parameters (each with all its values)."""
        query = _split_uri(self.uri)[1]
        return urllib.parse.parse_qs(query, keep_blank_values=True)

    @property
    def peer_certificates(self) -> list[str]:
        """The client's certificate chain as PEM text, its own first."""
        return [pem.decode("ascii", "replace") for pem in self.raw_peer_certificates]

    def header(self, name: str) -> str | None:
        """A request header, its name in any case."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def read_body(self, shape: gojson.Shape) -> Any:
        """The body as the daemon decodes it into a value of ``shape``
        (``CONTAINER_CREATE`` and the like; see ``plugin.gojson``): keys
        matched in any case, the last one winning, nested objects merged.

        Raises ``gojson.GoJSONError`` when the daemon would refuse the body,
        and when there is none: an empty ``body`` may mean the daemon did not
        forward it (``body_missing`` says why) while its handler reads it."""
        if not self.body:
            raise gojson.GoJSONError("syntax", self.body_missing() or "the request has no body")
        return gojson.decode(self.body, shape)

    def body_missing(self) -> str | None:
        """Why ``body`` is empty (None when it is not), from the daemon's
        rules for forwarding one: a request that needs a body and comes
        without one may still carry it to the daemon's handler."""
        if self.body:
            return None
        if self.uri.endswith("/auth"):
            return "the daemon does not forward the body of a request whose URI ends in /auth"
        length = self.header("Content-Length")
        if length is None:
            return (
                "the request has no Content-Length: the daemon does not forward a body "
                "sent in chunks"
            )
        length = length.strip()
        if length == "0":
            return "the request has no body"
        if length.isdigit() and int(length) >= MAX_FORWARDED_BODY:
            return (
                f"the body is {int(length)} bytes: the daemon forwards bodies under "
                f"{MAX_FORWARDED_BODY} bytes only"
            )
        kind = self.header("Content-Type") or ""
        return f"the body is not JSON (Content-Type {kind!r}): the daemon forwards JSON only"


@dataclass(slots=True)
class AuthZResRequest(AuthZReqRequest):
    """An Engine API request after the daemon handled it, with its answer.

    ``response_body`` is only there for a JSON answer; a streamed or
    hijacked one (logs, attach, exec) is not seen here."""

    status: int = wire("ResponseStatusCode", 0)
    response_headers: dict[str, str] = wire("ResponseHeaders", factory=dict)
    response_body: bytes = wire("ResponseBody", b"")


# --- responses --------------------------------------------------------------------


@dataclass(slots=True)
class AuthZResponse(Model):
    """The decision on a request (``AuthZReq``) or on its answer (``AuthZRes``).

    ``msg`` is shown to the client after ``authorization denied by plugin
    NAME: `` when ``allow`` is False. ``allow(msg)`` and ``deny(msg)`` make one.
    """

    allow: bool = wire("Allow")
    msg: str = wire("Msg", "")

    def __post_init__(self) -> None:
        # 1 or "yes" would be sent as such, and the daemon would fail the call;
        # refuse it here, where the driver's mistake is logged.
        if type(self.allow) is not bool:
            raise ValueError(f"AuthZResponse.allow must be True or False, not {self.allow!r}")
        if type(self.msg) is not str:
            raise ValueError(f"AuthZResponse.msg must be a string, not {self.msg!r}")


def allow(msg: str = "") -> AuthZResponse:
    return AuthZResponse(True, msg)


def deny(msg: str) -> AuthZResponse:
    return AuthZResponse(False, msg)


# --- the driver ---------------------------------------------------------------------


class AuthzPlugin(Driver):
    """Base class of an authorization plugin.

    Implement ``auth_z_req`` (plain or ``async``); ``auth_z_res`` allows every
    answer unless overridden. Return ``allow()`` or ``deny("why")``; anything
    else fails closed (see the module docstring). A plain method runs in a
    thread pool and may block; every Engine API call waits for it, so keep it
    fast.

    The daemon has no deadline of its own for these calls (a plugin that
    hangs hangs every ``docker`` command): the SDK answers for a decision
    still running after ``timeout`` seconds with an error, which denies the
    request.
    """

    implements: ClassVar[str] = IMPLEMENTS
    prefix: ClassVar[str] = PREFIX
    capability: ClassVar[str] = CAPABILITY
    #: Seconds a decision may take before the request is denied for it.
    timeout: ClassVar[float] = 10.0

    @abstractmethod
    def auth_z_req(self, req: AuthZReqRequest) -> AuthZResponse | Awaitable[AuthZResponse]: ...

    def auth_z_res(self, req: AuthZResRequest) -> AuthZResponse | Awaitable[AuthZResponse]:
        return AuthZResponse(True)

    def call_timeout(self, endpoint: Endpoint) -> float | None:
        return self.timeout

    def timeout_message(self, endpoint: Endpoint, timeout: float) -> str:
        return f"no decision within {timeout:g} s: the request is denied"


AuthzPlugin.endpoints = (
    Endpoint("AuthZReq", AuthZReqRequest, AuthZResponse),
    Endpoint("AuthZRes", AuthZResRequest, AuthZResponse),
)


# --- reading a request as the daemon does ---------------------------------------------

_VERSION = re.compile(r"/v([0-9.]+)(?=/)")


def _split_uri(uri: str) -> tuple[str, str]:
    """(raw path, raw query) of a request URI, as Go's ParseRequestURI
    splits it: only a URI with a scheme has a host to drop (``//x/y`` is a
    path)."""
    rest, _, query = uri.partition("?")
    rest = rest.partition("#")[0]
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", rest)
    if scheme and rest[scheme.end() : scheme.end() + 2] == "//":
        after = rest[scheme.end() + 2 :]
        slash = after.find("/")
        rest = after[slash:] if slash >= 0 else "/"
    return rest, query


def api_path(uri: str) -> tuple[str, str]:
    """(path, API version) the daemon routes for a request URI: the path
    percent-decoded (``%2F`` too) and cleaned as its router does, the
    ``/v1.41`` prefix split off. ``/v1.41/containers/%63reate?x=1`` ->
    ``("/containers/create", "1.41")``."""
    raw = _split_uri(uri)[0]
    decoded = urllib.parse.unquote(raw, errors="replace")
    path = posixpath.normpath("/" + decoded)
    if path.startswith("//"):  # normpath keeps a leading "//"
        path = "/" + path.lstrip("/")
    if decoded.endswith("/") and path != "/":  # the router keeps a trailing slash
        path += "/"
    match = _VERSION.match(path)
    if match:
        return path[match.end() :], match.group(1)
    return path, ""


# --- the bodies that can hand out the host ---------------------------------------------
# Shapes of the daemon's types (dockerd 20.10; the fields a policy reads, in
# Go's order and with their Go kinds, which decide how null and repeated keys
# behave). Fields left out are skipped, as unknown fields are by the daemon.

DRIVER = Struct(("Name", STRING), ("Options", Map(STRING)), name="mount.Driver")
VOLUME_OPTIONS = Struct(
    ("NoCopy", BOOL), ("Labels", Map(STRING)), ("DriverConfig", Ptr(DRIVER)),
    name="mount.VolumeOptions",
)  # fmt: skip
MOUNT = Struct(
    ("Type", STRING),
    ("Source", STRING),
    ("Target", STRING),
    ("ReadOnly", BOOL),
    ("VolumeOptions", Ptr(VOLUME_OPTIONS)),
    name="mount.Mount",
)
DEVICE_MAPPING = Struct(
    ("PathOnHost", STRING),
    ("PathInContainer", STRING),
    ("CgroupPermissions", STRING),
    name="container.DeviceMapping",
)
RESOURCES = Struct(("Devices", Slice(DEVICE_MAPPING)), name="container.Resources")
HOST_CONFIG = Struct(
    ("Binds", Slice(STRING)),
    ("Privileged", BOOL),
    Embed("Resources", RESOURCES),
    ("Mounts", Slice(MOUNT)),
    name="container.HostConfig",
)
CONFIG = Struct(("Image", STRING), name="container.Config")

#: ``POST /containers/create``: the daemon's ContainerConfigWrapper, which
#: embeds the container's Config and, for old clients, a whole HostConfig at
#: the top level (``{"Image": "x", "Privileged": true}`` makes a privileged
#: container). ``container_host_config`` picks the one the daemon uses.
CONTAINER_CREATE = Struct(
    Embed("Config", Ptr(CONFIG)),
    ("HostConfig", Ptr(HOST_CONFIG), True),
    ("Cpuset", STRING),
    Embed("TopLevelHostConfig", Ptr(HOST_CONFIG)),
    name="ContainerConfigWrapper",
)

#: ``POST /containers/{id}/exec``.
EXEC_CREATE = Struct(
    ("User", STRING), ("Privileged", BOOL), ("Cmd", Slice(STRING)), name="types.ExecConfig"
)

#: ``POST /volumes/create``. The local driver's options ``type``, ``o`` and
#: ``device`` mount any host path or device (``o=bind``).
VOLUME_CREATE = Struct(
    ("Driver", STRING, True),
    ("DriverOpts", Map(STRING), True),
    ("Labels", Map(STRING), True),
    ("Name", STRING, True),
    name="volume.VolumeCreateBody",
)

CONTAINER_SPEC = Struct(
    ("Image", STRING), ("Mounts", Slice(MOUNT)), ("CapabilityAdd", Slice(STRING)),
    name="swarm.ContainerSpec",
)  # fmt: skip
TASK_SPEC = Struct(("ContainerSpec", Ptr(CONTAINER_SPEC)), name="swarm.TaskSpec")
ANNOTATIONS = Struct(("Name", STRING), ("Labels", Map(STRING)), name="swarm.Annotations")

#: ``POST /services/create`` and ``POST /services/{id}/update``.
SERVICE_SPEC = Struct(
    Embed("Annotations", ANNOTATIONS), ("TaskTemplate", TASK_SPEC), name="swarm.ServiceSpec"
)


def container_host_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """The HostConfig the daemon uses for a decoded ``CONTAINER_CREATE``
    body: the ``HostConfig`` member unless it is absent or null, else the
    top-level fields (None when there are neither)."""
    inner: dict[str, Any] | None = body["HostConfig"]
    return inner if inner is not None else body["TopLevelHostConfig"]
