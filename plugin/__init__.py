"""docker-plugin-kit: write Docker Engine plugins in Python.

Write one driver class per plugin type and serve it::

    from plugin import serve
    from plugin.volume import VolumeDriver

    serve(MyVolumes(), socket="myvol.sock")

Request and response models are dataclasses of ``Model`` whose fields carry
their exact wire name (``wire("NetworkID")``). To read a field the daemon
sends and the SDK does not know yet, subclass the request model and annotate
the method with it::

    @dataclass(slots=True)
    class MyJoinRequest(JoinRequest):
        new_field: str = wire("NewField", "")

    def join(self, req: MyJoinRequest) -> JoinResponse: ...

The runtime imports neither docker nor jinja2; the builder lives in
``plugin.bundle``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

TYPE_CHECKING = False  # not typing's: importing typing costs 2 ms at start
if TYPE_CHECKING:
    from typing import Any

    from ._driver import Driver, Endpoint, method_name
    from ._serve import serve
    from ._wire import Model, wire
    from .errors import BadRequest, PluginError
    from .manifest import Args, Device, Env, Mount

# Loaded on first use: ``python -m plugin`` imports what its drivers and the
# socket need before it listens, and the rest after.
_HOMES = {
    "Args": ".manifest",
    "BadRequest": ".errors",
    "Device": ".manifest",
    "Driver": "._driver",
    "Endpoint": "._driver",
    "Env": ".manifest",
    "Model": "._wire",
    "Mount": ".manifest",
    "PluginError": ".errors",
    "method_name": "._driver",
    "serve": "._serve",
    "wire": "._wire",
}

__all__ = [
    "Args",
    "BadRequest",
    "Device",
    "Driver",
    "Endpoint",
    "Env",
    "Model",
    "Mount",
    "PluginError",
    "__version__",
    "method_name",
    "serve",
    "wire",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
