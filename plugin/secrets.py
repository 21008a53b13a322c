"""Secret providers: ``docker.secretprovider/1.0`` (``/SecretProvider.GetSecret``).

Read top to bottom: wire constants, request/response models named after the
wire verb, the driver base class, the endpoint table.

A Swarm manager asks the provider for the value of a secret created with
``docker secret create --driver PLUGIN NAME`` each time it hands a task that
uses the secret to a node; the task's container reads the value from
``/run/secrets/NAME``. Swarm only: a daemon outside a swarm never calls it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import ClassVar

from ._driver import Driver, Endpoint
from ._wire import Model, wire

__all__ = [
    "EndpointSpec",
    "GetSecretRequest",
    "GetSecretResponse",
    "PortConfig",
    "SecretProvider",
]

IMPLEMENTS = "secretprovider"
PREFIX = "SecretProvider"
CAPABILITY = "docker.secretprovider/1.0"


# --- requests ---------------------------------------------------------------------


@dataclass(slots=True)
class PortConfig(Model):
    """A port the service publishes. ``protocol`` and ``publish_mode`` are
    Swarm's enum numbers (0: tcp / ingress)."""

    name: str = wire("Name", "")
    protocol: int = wire("Protocol", 0)
    target_port: int = wire("TargetPort", 0)
    published_port: int = wire("PublishedPort", 0)
    publish_mode: int = wire("PublishMode", 0)


@dataclass(slots=True)
class EndpointSpec(Model):
    """How the service is reached. ``mode`` is Swarm's number (0: vip, 1: dnsrr)."""

    mode: int = wire("Mode", 0)
    ports: list[PortConfig] = wire("Ports", factory=list)


@dataclass(slots=True)
class GetSecretRequest(Model):
    """The secret a task needs, and the task.

    ``secret_labels`` are the labels given to ``docker secret create
    --label``: the place for a provider's own options (which entry of its
    store, whether the value may be reused). Every field may be empty; the
    daemon leaves out what it does not know.
    """

    secret_name: str = wire("SecretName", "")
    secret_labels: dict[str, str] = wire("SecretLabels", factory=dict)
    service_hostname: str = wire("ServiceHostname", "")
    service_id: str = wire("ServiceID", "")
    service_name: str = wire("ServiceName", "")
    service_labels: dict[str, str] = wire("ServiceLabels", factory=dict)
    task_id: str = wire("TaskID", "")
    task_name: str = wire("TaskName", "")
    task_image: str = wire("TaskImage", "")
    node_id: str = wire("NodeID", "")
    service_endpoint_spec: EndpointSpec | None = wire("ServiceEndpointSpec", None)


# --- responses --------------------------------------------------------------------


@dataclass(slots=True)
class GetSecretResponse(Model):
    """The secret's value, as bytes (sent base64-encoded; at most 500 KiB,
    Swarm's limit).

    ``do_not_reuse=True`` makes Swarm ask again for every task, so each task
    can get its own value; by default one answer serves every task on a node.
    """

    value: bytes = wire("Value")
    do_not_reuse: bool = wire("DoNotReuse", False)

    def __post_init__(self) -> None:
        if type(self.value) is not bytes:
            # A str would be sent as-is and read by the daemon as base64.
            raise ValueError(
                f"GetSecretResponse.value must be bytes, not {type(self.value).__name__}"
            )
        if type(self.do_not_reuse) is not bool:
            raise ValueError(
                f"GetSecretResponse.do_not_reuse must be True or False, not {self.do_not_reuse!r}"
            )


# --- the driver ---------------------------------------------------------------------


class SecretProvider(Driver):
    """Base class of a secret provider.

    Implement ``get_secret`` (plain or ``async``) and return a
    ``GetSecretResponse``; raise ``PluginError("...")`` when there is no such
    secret or it cannot be read: the task then fails with that message
    (``docker service ps --no-trunc`` shows it). Never log a secret's value.
    """

    implements: ClassVar[str] = IMPLEMENTS
    prefix: ClassVar[str] = PREFIX
    capability: ClassVar[str] = CAPABILITY
    #: A debug log shows an answer's size, never the value.
    log_answers: ClassVar[bool] = False

    @abstractmethod
    def get_secret(
        self, req: GetSecretRequest
    ) -> GetSecretResponse | Awaitable[GetSecretResponse]: ...


SecretProvider.endpoints = (Endpoint("GetSecret", GetSecretRequest, GetSecretResponse),)
