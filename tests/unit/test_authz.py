"""plugin.authz: the wire of AuthZReq/AuthZRes, failing closed, and reading a
request as the daemon acts on it."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from typing import Any

import pytest

from plugin import PluginError
from plugin.authz import (
    CONTAINER_CREATE,
    EXEC_CREATE,
    MAX_FORWARDED_BODY,
    SERVICE_SPEC,
    VOLUME_CREATE,
    AuthzPlugin,
    AuthZReqRequest,
    AuthZResponse,
    AuthZResRequest,
    allow,
    api_path,
    container_host_config,
    deny,
)
from plugin.gojson import GoJSONError
from plugin.testing import PluginClient

CERT = """\
-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUL+KnywKHgStgFfXIzEwcIjKH6GswCgYIKoZIzj0EAwIw
EDEOMAwGA1UEAwwFYWxpY2UwIBcNMjYxMjAxMDQ1MjIwWhgPMjEyNjExMDcwNDUy
MjBaMBAxDjAMBgNVBAMMBWFsaWNlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
0NBkdqssFK5PCCef70Rr1L/W3q02Pdmi5QItCGtwllTbaYLaKRi+PEQK3WjMFPdl
zo5R9e0pLLstgqaq3Mz/QqNTMFEwHQYDVR0OBBYEFF9BvddUzDVN8+Qy4/08dB/R
JzvSMB8GA1UdIwQYMBaAFF9BvddUzDVN8+Qy4/08dB/RJzvSMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAO+ZlynNSH1iFpfc+25mQd8znW5nnZTW
d7E3++3lBTC2AiBNEzYK2anWelMn9Mup3AlIYv8ktGPYUIUyEjtBQrilRw==
-----END CERTIFICATE-----
"""


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


BODY = b'{"Image":"busybox","HostConfig":{"Privileged":true}}\n'
#: What the daemon sends for `docker run --privileged` over TLS (dockerd 20.10).
REQUEST = {
    "User": "alice",
    "UserAuthNMethod": "TLS",
    "RequestMethod": "POST",
    "RequestUri": "/v1.41/containers/create?name=web",
    "RequestBody": b64(BODY),
    "RequestHeaders": {
        "Content-Type": "application/json",
        "Content-Length": str(len(BODY)),
        "User-Agent": "Docker-Client/20.10.24 (linux)",
    },
    "RequestPeerCertificates": [b64(CERT)],
}


class Recorder(AuthzPlugin):
    """Keeps what it was asked; denies what asks for "deny"."""

    def __init__(self) -> None:
        self.seen: list[AuthZReqRequest] = []

    def auth_z_req(self, req: AuthZReqRequest) -> AuthZResponse:
        self.seen.append(req)
        return deny("asked to deny") if "deny" in req.uri else allow()

    def auth_z_res(self, req: AuthZResRequest) -> AuthZResponse:
        self.seen.append(req)
        return allow()


def test_a_request_with_every_field() -> None:
    driver = Recorder()
    with PluginClient(driver) as client:
        assert client.call("AuthZPlugin.AuthZReq", REQUEST) == {"Allow": True, "Msg": ""}
    (req,) = driver.seen
    assert type(req) is AuthZReqRequest
    assert (req.user, req.user_authn_method, req.method) == ("alice", "TLS", "POST")
    assert req.uri == "/v1.41/containers/create?name=web"
    assert (req.path, req.api_version, req.query) == (
        "/containers/create",
        "1.41",
        {"name": ["web"]},
    )
    assert req.body == BODY  # the raw bytes, decoded from base64
    assert req.headers == REQUEST["RequestHeaders"]
    assert req.header("content-type") == "application/json" and req.header("X-Nope") is None
    assert req.raw_peer_certificates == [CERT.encode()]
    assert req.peer_certificates == [CERT]
    assert container_host_config(req.read_body(CONTAINER_CREATE)) == {
        "Binds": None,
        "Privileged": True,
        "Resources": {"Devices": None},
        "Mounts": None,
    }


def test_the_uri_key_is_spelled_request_uri() -> None:
    # The daemon writes RequestUri; RequestURI (the docs' spelling) is not it.
    driver = Recorder()
    with PluginClient(driver) as client:
        client.call("AuthZPlugin.AuthZReq", {"RequestMethod": "GET", "RequestURI": "/deny"})
        client.call("AuthZPlugin.AuthZReq", {"RequestMethod": "GET", "RequestUri": "/v1.41/info"})
    assert [r.uri for r in driver.seen] == ["", "/v1.41/info"]


def test_a_response_with_every_field() -> None:
    driver = Recorder()
    answer = b'[{"Id":"abc"}]'
    body = {
        **REQUEST,
        "RequestMethod": "GET",
        "RequestUri": "/v1.41/containers/json",
        "RequestBody": None,
        "ResponseStatusCode": 200,
        "ResponseHeaders": {"Content-Type": "application/json", "Api-Version": "1.41"},
        "ResponseBody": b64(answer),
    }
    with PluginClient(driver) as client:
        assert client.call("AuthZPlugin.AuthZRes", body) == {"Allow": True, "Msg": ""}
    (res,) = driver.seen
    assert type(res) is AuthZResRequest
    assert (res.status, res.response_body, res.body) == (200, answer, b"")
    assert res.response_headers == {"Content-Type": "application/json", "Api-Version": "1.41"}
    assert (res.user, res.path, res.peer_certificates) == ("alice", "/containers/json", [CERT])


def test_an_empty_request_reads_as_empty_fields() -> None:
    driver = Recorder()
    with PluginClient(driver) as client:
        client.call("AuthZPlugin.AuthZReq", {})
        client.call("AuthZPlugin.AuthZRes", {"RequestHeaders": None, "ResponseHeaders": None})
    req, res = driver.seen
    assert (req.user, req.method, req.uri, req.headers, req.body) == ("", "", "", {}, b"")
    assert (req.peer_certificates, req.path, req.api_version) == ([], "/", "")
    assert (res.status, res.response_headers, res.response_body) == (0, {}, b"")


def test_deny_with_a_message() -> None:
    with PluginClient(Recorder()) as client:
        reply = client.post("/AuthZPlugin.AuthZReq", {"RequestUri": "/v1.41/deny"})
    assert (reply.status, reply.json) == (200, {"Allow": False, "Msg": "asked to deny"})


def test_the_default_response_check_allows() -> None:
    class OnlyRequests(AuthzPlugin):
        def auth_z_req(self, req: AuthZReqRequest) -> AuthZResponse:
            return deny("never")

    with PluginClient(OnlyRequests()) as client:
        assert client.call("AuthZPlugin.AuthZRes", REQUEST) == {"Allow": True, "Msg": ""}
        assert client.call("AuthZPlugin.AuthZReq", REQUEST) == {"Allow": False, "Msg": "never"}
        assert client.call("Plugin.Activate") == {"Implements": ["authz"]}


# --- failing closed -----------------------------------------------------------------------


class Broken(AuthzPlugin):
    """Answers each request the way its URI says."""

    timeout = 0.3

    def auth_z_req(self, req: AuthZReqRequest) -> Any:
        what = req.uri.strip("/")
        if what == "raise":
            raise RuntimeError("/secret/path is broken")
        if what == "plugin-error":
            raise PluginError("the policy store is down")
        if what == "none":
            return None
        if what == "dict":
            return {"Allow": True}
        if what == "truthy":
            return AuthZResponse(1, "")  # type: ignore[arg-type]
        if what == "slow":
            time.sleep(1.5)
            return allow()
        return allow()


class AsyncBroken(AuthzPlugin):
    timeout = 0.3

    async def auth_z_req(self, req: AuthZReqRequest) -> Any:
        if req.uri == "/slow":
            await asyncio.sleep(1.5)
        if req.uri == "/raise":
            raise KeyError("x")
        return allow()


FAILURES = {
    "/raise": "unexpected RuntimeError in the plugin (see its log)",
    "/plugin-error": "the policy store is down",
    "/none": "unexpected TypeError in the plugin (see its log)",
    "/dict": "unexpected TypeError in the plugin (see its log)",
    "/truthy": "unexpected ValueError in the plugin (see its log)",
    "/slow": "no decision within 0.3 s: the request is denied",
}


@pytest.mark.parametrize("uri", sorted(FAILURES))
def test_a_failing_driver_answers_an_error_never_an_allow(uri: str) -> None:
    with PluginClient(Broken()) as client:
        reply = client.post("/AuthZPlugin.AuthZReq", {"RequestMethod": "GET", "RequestUri": uri})
    assert (reply.status, reply.json) == (500, {"Err": FAILURES[uri]})


def test_an_async_driver_fails_closed_too() -> None:
    with PluginClient(AsyncBroken()) as client:
        slow = client.post("/AuthZPlugin.AuthZReq", {"RequestUri": "/slow"})
        raised = client.post("/AuthZPlugin.AuthZReq", {"RequestUri": "/raise"})
        fine = client.post("/AuthZPlugin.AuthZReq", {"RequestUri": "/ok"})
    assert (slow.status, slow.json) == (
        500,
        {"Err": "no decision within 0.3 s: the request is denied"},
    )
    assert (raised.status, raised.json) == (
        500,
        {"Err": "unexpected KeyError in the plugin (see its log)"},
    )
    assert (fine.status, fine.json) == (200, {"Allow": True, "Msg": ""})


def test_a_request_the_sdk_cannot_read_is_refused() -> None:
    with PluginClient(Recorder()) as client:
        cases = {
            b"{": "bad request: body is not valid JSON (Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1))",
            json.dumps({"RequestBody": "not base64!"}).encode(): (
                "bad request: RequestBody: expected base64 data, got string"
            ),
            json.dumps({"RequestPeerCertificates": [7]}).encode(): (
                "bad request: RequestPeerCertificates[0]: expected base64 data, got number"
            ),
            json.dumps({"RequestHeaders": {"A": 1}}).encode(): (
                "bad request: RequestHeaders.A: expected a string, got number"
            ),
            json.dumps({"ResponseStatusCode": "200"}).encode(): (
                "bad request: ResponseStatusCode: expected an integer, got string"
            ),
        }
        for body, err in cases.items():
            path = "/AuthZPlugin.AuthZRes"
            reply = client.post(path, body)
            assert (reply.status, reply.json) == (400, {"Err": err}), body


def test_no_answer_but_an_allow_is_a_200_with_allow_true() -> None:
    # The daemon reads Allow on a 200 and nothing else: an Err there would be
    # ignored, so a 200 is only ever a decision the driver made.
    with PluginClient(Broken()) as client:
        for uri in [*FAILURES, "/fine"]:
            reply = client.post("/AuthZPlugin.AuthZReq", {"RequestUri": uri})
            if reply.status == 200:
                assert reply.json == {"Allow": True, "Msg": ""}, uri
                assert uri == "/fine"
            else:
                assert set(reply.json) == {"Err"}, uri


def test_a_decision_still_running_does_not_hold_up_the_next() -> None:
    gate = threading.Event()

    class Stuck(AuthzPlugin):
        timeout = 0.2

        def auth_z_req(self, req: AuthZReqRequest) -> AuthZResponse:
            if req.uri == "/stuck":
                gate.wait(5)
            return allow()

    with PluginClient(Stuck()) as client:
        assert client.post("/AuthZPlugin.AuthZReq", {"RequestUri": "/stuck"}).status == 500
        assert client.call("AuthZPlugin.AuthZReq", {"RequestUri": "/next"}) == {
            "Allow": True,
            "Msg": "",
        }
    gate.set()


def test_response_models_refuse_what_the_daemon_could_not_read() -> None:
    with pytest.raises(ValueError) as info:
        AuthZResponse("yes", "")  # type: ignore[arg-type]
    assert str(info.value) == "AuthZResponse.allow must be True or False, not 'yes'"
    with pytest.raises(ValueError) as info:
        AuthZResponse(False, None)  # type: ignore[arg-type]
    assert str(info.value) == "AuthZResponse.msg must be a string, not None"
    assert deny("x").to_wire() == {"Allow": False, "Msg": "x"}
    assert allow().to_wire() == {"Allow": True, "Msg": ""}


# --- reading the request as the daemon will --------------------------------------------------

PATHS = {
    "/v1.41/containers/json?all=1": ("/containers/json", "1.41"),
    "/v1.41/containers/create/": ("/containers/create/", "1.41"),
    "/containers/create": ("/containers/create", ""),
    "/v1.41/containers/%63reate": ("/containers/create", "1.41"),
    "/v1.41/containers%2Fcreate": ("/containers/create", "1.41"),
    "/v1.41//containers/./create": ("/containers/create", "1.41"),
    "/v1.41/containers/x/../create": ("/containers/create", "1.41"),
    "//containers/create": ("/containers/create", ""),
    "http://docker:2375/v1.41/containers/create?a=b": ("/containers/create", "1.41"),
    "HTTP://docker/v1.24/info": ("/info", "1.24"),
    "/v1.41/plugins/acme/authz:latest/disable": ("/plugins/acme/authz:latest/disable", "1.41"),
    "/v1.41/containers/a%2Fb/exec": ("/containers/a/b/exec", "1.41"),
    "/v/containers/json": ("/v/containers/json", ""),
    "/v1.41": ("/v1.41", ""),
    "/v1.41/": ("/", "1.41"),
    "": ("/", ""),
    "/_ping#frag": ("/_ping", ""),
}


@pytest.mark.parametrize("uri", sorted(PATHS))
def test_api_path(uri: str) -> None:
    assert api_path(uri) == PATHS[uri]


def request(
    body: bytes = b"", uri: str = "/v1.41/containers/create", **headers: str
) -> AuthZReqRequest:
    return AuthZReqRequest(method="POST", uri=uri, body=body, headers=headers)


def test_read_body_as_the_daemon_does() -> None:
    bypass = request(b'{"Image": "x", "HostConfig": {"Privileged": false, "privileged": true}}')
    assert container_host_config(bypass.read_body(CONTAINER_CREATE))["Privileged"] is True
    top = request(
        b'{"Image": "x", "Privileged": true, "Binds": ["/:/host"], "Devices": [{"PathOnHost":'
        b' "/dev/sda"}]}'
    )
    hc = container_host_config(top.read_body(CONTAINER_CREATE))
    device = {"PathOnHost": "/dev/sda", "PathInContainer": "", "CgroupPermissions": ""}
    assert hc == {
        "Binds": ["/:/host"],
        "Privileged": True,
        "Resources": {"Devices": [device]},
        "Mounts": None,
    }
    both = request(b'{"Privileged": true, "HostConfig": {}}')
    assert container_host_config(both.read_body(CONTAINER_CREATE))["Privileged"] is False
    nulled = request(b'{"Privileged": true, "HostConfig": null}')
    assert container_host_config(nulled.read_body(CONTAINER_CREATE))["Privileged"] is True
    assert container_host_config(request(b'{"Image": "x"}').read_body(CONTAINER_CREATE)) is None
    exec_ = request(b'{"Cmd": ["sh"], "PRIVILEGED": true}').read_body(EXEC_CREATE)
    assert exec_ == {"User": "", "Privileged": True, "Cmd": ["sh"]}
    volume = request(b'{"driveropts": {"device": "/etc", "o": "bind"}}').read_body(VOLUME_CREATE)
    assert volume["DriverOpts"] == {"device": "/etc", "o": "bind"} and volume["Driver"] == ""
    spec = request(
        b'{"Name": "s", "TaskTemplate": {"ContainerSpec": {"Mounts": [{"Type": "bind",'
        b' "Source": "/etc", "Target": "/x"}]}}}'
    ).read_body(SERVICE_SPEC)
    assert spec["Annotations"]["Name"] == "s"
    assert spec["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"] == "/etc"


def test_read_body_refuses_what_the_daemon_refuses() -> None:
    with pytest.raises(GoJSONError) as info:
        request(b'{"HostConfig": {"Privileged": "true"}}').read_body(CONTAINER_CREATE)
    assert str(info.value) == "HostConfig.Privileged: string where the daemon expects bool"


MISSING = {
    "chunked": (
        request(**{"Content-Type": "application/json"}),
        "the request has no Content-Length: the daemon does not forward a body sent in chunks",
    ),
    "no headers": (
        request(),
        "the request has no Content-Length: the daemon does not forward a body sent in chunks",
    ),
    "empty": (request(**{"Content-Length": "0"}), "the request has no body"),
    "large": (
        request(**{"Content-Type": "application/json", "Content-Length": str(MAX_FORWARDED_BODY)}),
        "the body is 1048576 bytes: the daemon forwards bodies under 1048576 bytes only",
    ),
    "not json": (
        request(**{"Content-Type": "text/plain", "Content-Length": "20"}),
        "the body is not JSON (Content-Type 'text/plain'): the daemon forwards JSON only",
    ),
    "no type": (
        request(**{"Content-Length": "20"}),
        "the body is not JSON (Content-Type ''): the daemon forwards JSON only",
    ),
    "auth": (
        request(uri="/v1.41/containers/create?x=/auth", **{"Content-Length": "20"}),
        "the daemon does not forward the body of a request whose URI ends in /auth",
    ),
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_a_missing_body_says_why(case: str) -> None:
    req, why = MISSING[case]
    assert req.body_missing() == why
    with pytest.raises(GoJSONError) as info:
        req.read_body(CONTAINER_CREATE)
    assert (info.value.kind, str(info.value)) == ("syntax", why)


def test_a_body_is_not_missing() -> None:
    assert request(b"{}").body_missing() is None
