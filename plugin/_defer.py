"""Modules the server's imports name but a plugin serving the daemon does not
use, loaded when something first uses them.

asyncio and uvicorn import ``ssl`` (with OpenSSL, about 4 MB of a plugin's
memory) and uvicorn imports ``logging.config`` (for a logging config file):
neither is used by a plugin on a unix socket, without TLS or a logging file. ``defer()``
puts a module object in ``sys.modules`` that turns into the real module, in
place, the first time it is asked for an attribute it does not hold. So
``import ssl`` anywhere, later, gets the real ``ssl``, loaded then.

What the importers read while they are imported is given as stand-ins:
numbers that are the real values, and classes that nothing can be an
instance of before the real module is loaded (the only use asyncio makes
of them until then is ``isinstance`` and ``except``). Once the module is
loaded, every stand-in kept by another module (as a global, or inside a
tuple of exceptions) is replaced by the real object.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any

__all__ = ["defer", "defer_unused"]

_lock = threading.RLock()


class _Deferred(types.ModuleType):
    """A module not loaded yet: ``__getattr__`` only runs for attributes the
    module does not hold, so ``__spec__`` and the stand-ins never load it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name != "__all__":
            raise AttributeError(name)  # the import system, copy and pickle probe these
        _load(self)
        return getattr(self, name)


def defer(name: str, stand_ins: Mapping[str, Any] | None = None) -> None:
    """Make ``name`` load on first use (nothing when it is imported already)."""
    with _lock:
        if name in sys.modules:
            return
        parent, _, child = name.rpartition(".")
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            module = importlib.util.module_from_spec(spec)
        else:
            # Not installed (a slim rootfs keeps only what the plugin used):
            # importing it still works, using it raises ModuleNotFoundError.
            module = types.ModuleType(name)
        module.__class__ = _Deferred
        module.__dict__.update(stand_ins or {})
        module.__dict__["__deferred__"] = dict(stand_ins or {})
        sys.modules[name] = module
        if parent:
            setattr(sys.modules[parent], child, module)


def _load(module: types.ModuleType) -> None:
    with _lock:
        if type(module) is not _Deferred:
            return  # another thread loaded it meanwhile
        stand_ins: dict[str, Any] = module.__dict__.pop("__deferred__")
        for key in stand_ins:
            del module.__dict__[key]
        module.__class__ = types.ModuleType  # type: ignore[assignment]
        spec = module.__spec__
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(f"No module named {module.__name__!r}", name=module.__name__)
        spec.loader.exec_module(module)
        _replace_everywhere({id(v): getattr(module, k) for k, v in stand_ins.items()})


def _replace_everywhere(real: dict[int, Any]) -> None:
    """Swap every stand-in kept in another module's globals (directly or in
    a tuple) for the real object."""
    if not real:
        return
    for other in list(sys.modules.values()):
        namespace = getattr(other, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if id(value) in real:
                namespace[key] = real[id(value)]
            elif type(value) is tuple and any(id(v) in real for v in value):
                namespace[key] = tuple(real.get(id(v), v) for v in value)


def _stand_in_class(module: str, name: str, base: type = Exception) -> type:
    return type(name, (base,), {"__module__": module, "__doc__": f"stand-in for {module}.{name}"})


def defer_unused() -> None:
    """Defer what asyncio and uvicorn import for TLS and logging config files.
    Call it before they are imported."""
    defer(
        "ssl",
        {
            # The values of ssl.PROTOCOL_TLS_SERVER and ssl.CERT_NONE.
            "PROTOCOL_TLS_SERVER": 17,
            "CERT_NONE": 0,
            "SSLSocket": _stand_in_class("ssl", "SSLSocket", object),
            "SSLWantReadError": _stand_in_class("ssl", "SSLWantReadError", OSError),
            "SSLSyscallError": _stand_in_class("ssl", "SSLSyscallError", OSError),
        },
    )
    defer("logging.config")
