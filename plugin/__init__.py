"""docker-plugin-kit: write Docker Engine plugins in Python.

Write one driver class per plugin type and serve it::

    from plugin import serve
    from plugin.volume import VolumeDriver

    serve(MyVolumes(), socket="myvol.sock")

The runtime imports neither docker nor jinja2; the builder lives in
``plugin.bundle``.
"""

__version__ = "0.1.0"

from ._driver import Driver, Endpoint, method_name
from ._serve import serve
from .errors import BadRequest, PluginError
from .manifest import Args, Device, Env, Mount

__all__ = [
    "Args",
    "BadRequest",
    "Device",
    "Driver",
    "Endpoint",
    "Env",
    "Mount",
    "PluginError",
    "__version__",
    "method_name",
    "serve",
]
