"""What every driver type shares: the endpoint table entry and the base class."""

from __future__ import annotations

import importlib
import inspect
import re
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ._wire import Model
from .manifest import Args, Device, Env, Mount
from .settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One row of a plugin type's endpoint table.

    ``name`` is the wire verb (``EndpointOperInfo``); the driver method is
    ``method_name(name)`` (``endpoint_oper_info``). ``request`` is None for the
    calls the daemon sends without arguments. ``deadline`` is how long the
    daemon waits for the answer, in seconds (None: no limit of its own).
    ``stream``, for a call answered with a stream rather than JSON
    (``LogDriver.ReadLogs``), turns each item the driver's iterator yields
    into the bytes sent for it.
    """

    name: str
    request: type[Model] | None
    response: type[Model] | None
    deadline: float | None = None
    stream: Callable[[Any], bytes] | None = None

    @property
    def method(self) -> str:
        return method_name(self.name)


# A word starts at a capital that follows a lower-case letter or a digit, or at
# the last capital of an acronym when a lower-case word follows it. A capital
# followed by a lower-case letter and then a digit ("IPv4") stays in its acronym.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z](?![0-9]))")


def method_name(wire_name: str) -> str:
    """The one rule from wire verb to method name, with no exceptions:
    words are split where the case changes and lower-cased.

    ``GetCapabilities`` -> ``get_capabilities``, ``EndpointOperInfo`` ->
    ``endpoint_oper_info``, ``IPv4Data`` -> ``ipv4_data``, ``AuthZReq`` ->
    ``auth_z_req``.
    """
    return _CAMEL.sub("_", wire_name).lower()


def optional(fn: F) -> F:
    """Mark a base-class method as an optional call with no default: a driver
    that does not override it answers 404, which the daemon reads as "not
    implemented, use your defaults"."""
    fn.__plugin_optional__ = True  # type: ignore[attr-defined]
    return fn


class Driver(ABC):
    """Base of every driver type (``VolumeDriver``, ``NetworkDriver``, ...).

    Subclasses of a type declare, as class attributes, what the plugin needs
    from the host; the builder renders them into ``config.json``.
    """

    #: ``Implements`` value answered to ``/Plugin.Activate`` (``VolumeDriver``).
    implements: ClassVar[str]
    #: URL prefix of the endpoints (``VolumeDriver`` -> ``/VolumeDriver.Create``).
    prefix: ClassVar[str]
    #: ``interface.types`` entry (``docker.volumedriver/1.0``).
    capability: ClassVar[str]
    #: The wire verbs of this type, in protocol order.
    endpoints: ClassVar[tuple[Endpoint, ...]]

    #: Linux capabilities beyond Docker's default set (``CAP_SYS_ADMIN``).
    linux_capabilities: ClassVar[tuple[str, ...]] = ()
    #: Host paths bind-mounted into the plugin.
    mounts: ClassVar[tuple[Mount, ...]] = ()
    #: Host devices the plugin may use.
    devices: ClassVar[tuple[Device, ...]] = ()
    #: Typed per-host settings (``plugin.settings``), rendered as ``env`` entries.
    settings: ClassVar[type[Settings] | None] = None
    #: Untyped environment variables, settable per host.
    env: ClassVar[tuple[Env, ...]] = ()
    #: Extra process arguments, settable per host.
    args: ClassVar[Args | None] = None
    #: In-plugin directory whose mounts the daemon and containers can see.
    propagated_mount: ClassVar[str | None] = None
    #: ``"host"`` when the plugin needs the network; ``""`` gives it none.
    network: ClassVar[str] = ""
    ipc_host: ClassVar[bool] = False
    pid_host: ClassVar[bool] = False
    allow_all_devices: ClassVar[bool] = False

    #: Whether LOG_LEVEL=debug logs the start of each answer; off for types
    #: whose answers are secrets.
    log_answers: ClassVar[bool] = True

    #: Seconds before the daemon's deadline at which a call still running is
    #: answered with a timeout error, so the user reads why instead of a
    #: cut connection. See ``call_timeout``.
    timeout_margin: ClassVar[float] = 5.0

    def call_timeout(self, endpoint: Endpoint) -> float | None:
        """How long ``endpoint`` may run before the SDK answers for it with
        ``{"Err": "... timed out ..."}``; None waits as long as it takes."""
        if endpoint.deadline is None:
            return None
        return max(endpoint.deadline - self.timeout_margin, 0.1)

    def timeout_message(self, endpoint: Endpoint, timeout: float) -> str:
        """The ``Err`` answered for a call still running after ``timeout``
        seconds (see ``call_timeout``)."""
        limit = ""
        if endpoint.deadline is not None:
            limit = f" (the daemon stops waiting at {endpoint.deadline:g} s)"
        return (
            f"timed out after {timeout:g} s in the plugin{limit}; the operation may still "
            "finish: check its result before retrying"
        )

    def handler_for(self, endpoint: Endpoint) -> Callable[..., Any] | None:
        """The bound method serving ``endpoint``, or None when it is an
        optional call this driver does not implement."""
        fn = getattr(self, endpoint.method, None)
        if fn is None or getattr(fn, "__plugin_optional__", False):
            return None
        if not callable(fn):
            raise TypeError(
                f"{type(self).__name__}.{endpoint.method} must be a method: it serves "
                f"{self.prefix}.{endpoint.name}"
            )
        return fn  # type: ignore[no-any-return]


def load_driver_class(spec: str) -> type[Driver]:
    """``package.module:ClassName`` -> the class.

    ValueError with a one-line reason when the spec is malformed, names no
    module or attribute, or names something that is not a driver class. An
    error raised while the module itself is imported propagates unchanged.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"driver {spec!r} must be written module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module of the spec is the spec's fault; a missing
        # dependency of the driver's module is a real import error.
        if exc.name is None or not _is_prefix(exc.name, module_name):
            raise
        raise ValueError(f"driver {spec!r}: no module named {exc.name!r}") from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise ValueError(
            f"driver {spec!r}: module {module_name!r} has no attribute {attr!r}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise ValueError(
            f"driver {spec!r}: not a driver class (a subclass of VolumeDriver or another type)"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise ValueError(f"driver {spec!r}: abstract class, implement {missing}")
    return cls


def _is_prefix(package: str, module_name: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")
