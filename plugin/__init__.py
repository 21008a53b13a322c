"""docker-plugin-kit: write Docker Engine plugins in Python.

Write one driver class per plugin type and serve it::

    from plugin import serve
    from plugin.volume import VolumeDriver

    serve(MyVolumes(), socket="myvol.sock")

The runtime imports neither docker nor jinja2; the builder lives in
``plugin.bundle``.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: importing typing costs 2 ms at start
if TYPE_CHECKING:
    from typing import Any

    from ._driver import Driver, Endpoint, method_name
    from ._serve import serve
    from .errors import BadRequest, PluginError
    from .manifest import Args, Device, Env, Mount

# Loaded on first use: ``python -m plugin`` binds its socket before it
# imports anything else (plugin.__main__).
_HOMES = {
    "Args": ".manifest",
    "BadRequest": ".errors",
    "Device": ".manifest",
    "Driver": "._driver",
    "Endpoint": "._driver",
    "Env": ".manifest",
    "Mount": ".manifest",
    "PluginError": ".errors",
    "method_name": "._driver",
    "serve": "._serve",
}

__all__ = [
    "Args",
    "BadRequest",
    "Device",
    "Driver",
    "Endpoint",
    "Env",
    "Mount",
    "PluginError",
    "method_name",
    "serve",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
