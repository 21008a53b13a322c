"""Modules the server's imports name but a plugin serving the daemon does not
use, loaded when something first uses them.

asyncio and uvicorn import ``ssl`` (with OpenSSL, about 4 MB of a plugin's
memory), uvicorn imports ``logging.config`` (for a logging config file) and
``email.utils`` (0.7 MB with the ``email`` modules it loads) for the one
function that formats its Date header, ``configparser`` and ``pathlib`` for
logging config files and auto-reload: a plugin on a unix socket uses no TLS,
no logging file, no reload, and the date is made here. asyncio imports
``subprocess`` for the subprocesses it can run. ``defer()``
puts a module object in ``sys.modules`` that turns into the real module, in
place, the first time it is asked for an attribute it does not hold. So
``import ssl`` anywhere, later, gets the real ``ssl``, loaded then.

What the importers read while they are imported is given as stand-ins:
numbers that are the real values, classes that nothing can be an instance
of before the real module is loaded (the only use asyncio makes of them
until then is ``isinstance`` and ``except``; making one, or reading one of
its attributes, loads the real module), a function giving the same answers
as the real one. Once the module is
loaded, every stand-in kept by another module (as a global, or inside a
tuple of exceptions) is replaced by the real object.
"""

from __future__ import annotations

import datetime
import importlib.util
import sys
import threading
import time
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


class _StandIn(type):
    """The type of a stand-in class: making one, or reading any attribute it
    lacks, loads the real module and goes to the real class."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _real(cls)(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        return getattr(_real(cls), name)


def _real(cls: type) -> Any:
    module = sys.modules[cls.__module__]
    if type(module) is _Deferred:
        _load(module)
    return getattr(module, cls.__name__)


def _stand_in_class(module: str, name: str, base: type = object) -> type:
    doc = f"stand-in for {module}.{name} until {module} is loaded"
    return _StandIn(name, (base,), {"__module__": module, "__doc__": doc})


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def formatdate(timeval: float | None = None, localtime: bool = False, usegmt: bool = False) -> str:
    """``email.utils.formatdate`` in UTC, as uvicorn calls it every second
    (``usegmt=True``); a local time comes from the real one."""
    if localtime:
        real = sys.modules["email.utils"]
        if type(real) is _Deferred:
            _load(real)
        return real.formatdate(timeval, localtime, usegmt)  # type: ignore[no-any-return]
    if timeval is None:
        timeval = time.time()
    if usegmt:
        t = datetime.datetime.fromtimestamp(timeval, datetime.UTC).timetuple()
    else:
        t = datetime.datetime.fromtimestamp(timeval, datetime.UTC).replace(tzinfo=None).timetuple()
    zone = "GMT" if usegmt else "-0000"
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {zone}"
    )


#: Imported at start by modules a plugin needs, used by few plugins:
#: ``tokenize`` (by linecache and inspect, to read a source file),
#: ``textwrap`` (by traceback, for exception groups), ``ipaddress`` (by
#: uvicorn's proxy headers), ``platform`` and ``random`` (by uvicorn's
#: server, on Windows and with a request limit). About 0.4 MB of a plugin's
#: memory; nothing of them is read while they are imported.
LEAVES = ("tokenize", "textwrap", "ipaddress", "platform", "random")


def defer_unused() -> None:
    """Defer what asyncio and uvicorn import for TLS, logging config files
    and the Date header, and ``LEAVES``. Call it before they are imported:
    ``python -m plugin`` calls it before it imports the drivers."""
    # First: finding logging.config's spec imports logging, which imports
    # traceback, linecache and tokenize, textwrap.
    for name in LEAVES:
        defer(name)
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
    defer("email.utils", {"formatdate": formatdate})
    # asyncio names subprocess for its subprocess support (the numbers are
    # subprocess.PIPE, STDOUT and DEVNULL).
    defer("subprocess", {"PIPE": -1, "STDOUT": -2, "DEVNULL": -3})
    # uvicorn.config names these for log config files and auto-reload only.
    defer("configparser", {"RawConfigParser": _stand_in_class("configparser", "RawConfigParser")})
    defer("pathlib", {"Path": _stand_in_class("pathlib", "Path")})
