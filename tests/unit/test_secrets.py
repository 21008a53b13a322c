"""plugin.secrets: the wire of SecretProvider.GetSecret."""

from __future__ import annotations

import base64
import logging

import pytest

from plugin import PluginError
from plugin.secrets import (
    EndpointSpec,
    GetSecretRequest,
    GetSecretResponse,
    PortConfig,
    SecretProvider,
)
from plugin.testing import PluginClient

#: What a Swarm manager sends for a task of `docker service create --secret db
#: --publish 8080:80 --name web busybox` (dockerd 20.10, swarmkit's field names).
REQUEST = {
    "SecretName": "db",
    "SecretLabels": {"filesecrets.path": "prod/db", "filesecrets.reuse": "false"},
    "ServiceHostname": "web-host",
    "ServiceID": "svc0123456789",
    "ServiceName": "web",
    "ServiceLabels": {"tier": "front"},
    "TaskID": "task0123456789",
    "TaskName": "web.1.task0123456789",
    "TaskImage": "busybox:latest",
    "NodeID": "node0123456789",
    "ServiceEndpointSpec": {
        "Mode": 1,
        "Ports": [
            {
                "Name": "http",
                "Protocol": 0,
                "TargetPort": 80,
                "PublishedPort": 8080,
                "PublishMode": 0,
            }
        ],
    },
}


class Vault(SecretProvider):
    def __init__(self) -> None:
        self.seen: list[GetSecretRequest] = []

    def get_secret(self, req: GetSecretRequest) -> GetSecretResponse:
        self.seen.append(req)
        if req.secret_name == "missing":
            raise PluginError("no secret 'missing' in the vault")
        if req.secret_name == "text":
            return GetSecretResponse("a str", False)  # type: ignore[arg-type]
        return GetSecretResponse(b"s3cr\xe9t\x00", do_not_reuse=req.secret_name == "db")


def test_a_request_with_every_field() -> None:
    driver = Vault()
    with PluginClient(driver) as client:
        answer = client.call("SecretProvider.GetSecret", REQUEST)
    assert answer == {"Value": base64.b64encode(b"s3cr\xe9t\x00").decode(), "DoNotReuse": True}
    (req,) = driver.seen
    assert req == GetSecretRequest(
        secret_name="db",
        secret_labels={"filesecrets.path": "prod/db", "filesecrets.reuse": "false"},
        service_hostname="web-host",
        service_id="svc0123456789",
        service_name="web",
        service_labels={"tier": "front"},
        task_id="task0123456789",
        task_name="web.1.task0123456789",
        task_image="busybox:latest",
        node_id="node0123456789",
        service_endpoint_spec=EndpointSpec(
            mode=1,
            ports=[PortConfig("http", 0, target_port=80, published_port=8080, publish_mode=0)],
        ),
    )


def test_fields_the_daemon_leaves_out() -> None:
    driver = Vault()
    with PluginClient(driver) as client:
        answer = client.call(
            "SecretProvider.GetSecret",
            {"SecretName": "plain", "SecretLabels": None, "ServiceEndpointSpec": {"Ports": None}},
        )
        client.call("SecretProvider.GetSecret", {"SecretName": "plain"})
    # DoNotReuse false is sent as such: Swarm reuses the value.
    assert answer == {"Value": base64.b64encode(b"s3cr\xe9t\x00").decode(), "DoNotReuse": False}
    first, second = driver.seen
    assert first.secret_labels == {} and first.service_endpoint_spec == EndpointSpec(0, [])
    assert second.service_endpoint_spec is None
    assert (second.task_id, second.service_labels, second.node_id) == ("", {}, "")


def test_a_missing_secret_is_an_error_with_the_drivers_message() -> None:
    with PluginClient(Vault()) as client:
        reply = client.post("/SecretProvider.GetSecret", {"SecretName": "missing"})
        text = client.post("/SecretProvider.GetSecret", {"SecretName": "text"})
        bad = client.post("/SecretProvider.GetSecret", {"SecretLabels": ["x"]})
    assert (reply.status, reply.json) == (500, {"Err": "no secret 'missing' in the vault"})
    assert (text.status, text.json) == (
        500,
        {"Err": "unexpected ValueError in the plugin (see its log)"},
    )
    assert (bad.status, bad.json) == (
        400,
        {"Err": "bad request: SecretLabels: expected an object, got array"},
    )


def test_the_response_model_refuses_what_swarm_would_misread() -> None:
    with pytest.raises(ValueError) as info:
        GetSecretResponse("text")  # type: ignore[arg-type]
    assert str(info.value) == "GetSecretResponse.value must be bytes, not str"
    with pytest.raises(ValueError) as info:
        GetSecretResponse(b"x", do_not_reuse=1)  # type: ignore[arg-type]
    assert str(info.value) == "GetSecretResponse.do_not_reuse must be True or False, not 1"
    assert GetSecretResponse(b"\xff").to_wire() == {"Value": "/w==", "DoNotReuse": False}


def test_activate_names_the_type() -> None:
    with PluginClient(Vault()) as client:
        assert client.call("Plugin.Activate") == {"Implements": ["secretprovider"]}
        assert client.post("/SecretProvider.Other", {}).status == 404


def test_a_debug_log_shows_the_size_of_a_secret_never_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="plugin"), PluginClient(Vault()) as client:
        client.call("SecretProvider.GetSecret", {"SecretName": "db"})
    answer = '{"Value":"czNjcukAdAA=","DoNotReuse":true}'
    assert [r.getMessage() for r in caplog.records if r.name == "plugin"] == [
        f"SecretProvider.GetSecret -> 200 ({len(answer)} bytes)"
    ]
