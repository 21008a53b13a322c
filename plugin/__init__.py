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

from ._driver import Driver, Endpoint, method_name
from ._serve import serve
from ._wire import Model, wire
from .errors import BadRequest, PluginError
from .manifest import Args, Device, Env, Mount

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
    "method_name",
    "serve",
    "wire",
]
