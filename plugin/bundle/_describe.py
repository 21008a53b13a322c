"""The drivers' declarations, read in the built image when the build host
cannot import the drivers (a dependency that is only in the rootfs).

The image has the drivers, their dependencies (``build.requirements``, from
the wheelhouse) and the kit's runtime, the same version as the builder. A
short script there imports each driver and prints its declarations (mounts,
env, capabilities, ... every public data attribute of the class; typed
settings as the env entries they render); the
builder then makes a stand-in class on the host: a subclass of the same base
(``VolumeDriver``, ...) with those attributes. That is all the builder needs
of a driver: what config.json says, and the calls of its type for the slim
probe.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

from .._driver import Driver
from ._errors import BuildError

__all__ = ["MARK", "SCRIPT", "decode", "describe_in_image", "stand_ins"]

MARK = "@@dpk-drivers@@"

#: Runs in the image: ``python3 -c SCRIPT spec...``; one line, MARK + JSON.
SCRIPT = r"""
import dataclasses, json, sys
from plugin._driver import load_driver_class

MARK = "@@dpk-drivers@@"
SKIP = {"endpoints", "implements", "prefix", "capability"}


def encode(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [encode(v) for v in value]
        return None if any(i is NotImplemented for i in items) else {"tuple": items}
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("plugin."):
        kind = type(value)
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"dataclass": kind.__module__ + ":" + kind.__qualname__, "fields": fields}
    return NotImplemented


out = []
for spec in sys.argv[1:]:
    try:
        cls = load_driver_class(spec)
    except Exception as exc:
        print(MARK + json.dumps({"error": "%s: %s: %s" % (spec, type(exc).__name__, exc)}))
        sys.exit(0)
    base = next(
        c for c in cls.__mro__ if c.__module__.startswith("plugin.") and "endpoints" in c.__dict__
    )
    attrs = {}
    for name in dir(cls):
        if name.startswith("_") or name in SKIP:
            continue
        value = getattr(cls, name)
        if callable(value) and not dataclasses.is_dataclass(value):
            continue
        encoded = encode(value)
        if encoded is not NotImplemented:
            attrs[name] = encoded
    settings = getattr(cls, "settings", None)
    if settings is not None:
        # Typed settings (a class) travel as the env entries they render.
        attrs["env"] = encode(tuple(cls.env) + tuple(settings.env()))
        attrs["settings"] = None
    out.append({
        "spec": spec,
        "name": cls.__name__,
        "base": base.__module__ + ":" + base.__qualname__,
        "attrs": attrs,
    })
print(MARK + json.dumps({"drivers": out}))
"""


def decode(value: Any) -> Any:
    """The inverse of the script's ``encode``."""
    if isinstance(value, dict) and "tuple" in value:
        return tuple(decode(v) for v in value["tuple"])
    if isinstance(value, dict) and "dataclass" in value:
        kind = _import(value["dataclass"])
        if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
            raise BuildError(f"the drivers' declarations name {value['dataclass']}: no dataclass")
        return kind(**{k: decode(v) for k, v in value["fields"].items()})
    return value


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    if not module.startswith("plugin."):
        raise BuildError(f"the drivers' declarations name {path}, outside the kit")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def stand_ins(described: dict[str, Any]) -> list[type[Driver]]:
    """Host classes that declare what the drivers in the image declare."""
    if "error" in described:
        raise BuildError(f"plugin.drivers: cannot load {described['error']}")
    classes = []
    for item in described["drivers"]:
        base = _import(item["base"])
        if not (isinstance(base, type) and issubclass(base, Driver)):
            raise BuildError(f"plugin.drivers: {item['spec']}: {item['base']} is not a driver type")
        attrs = {name: decode(value) for name, value in item["attrs"].items()}
        attrs["__module__"] = item["spec"].partition(":")[0]
        attrs["__doc__"] = f"{item['spec']}, as declared in the built image."
        classes.append(type(item["name"], (base,), attrs))
    return classes


def describe_in_image(client: Any, image: str, python: str, specs: list[str]) -> dict[str, Any]:
    """Run the script in ``image``; its JSON (drivers, or an error)."""
    output = client.containers.run(
        image,
        [python, "-c", SCRIPT, *specs],
        entrypoint=[],
        remove=True,
        network_mode="none",
        stderr=True,
    )
    for line in output.decode(errors="replace").splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK) :]))
    tail = " | ".join(output.decode(errors="replace").strip().splitlines()[-3:])
    raise BuildError(f"reading the drivers in the image failed: {tail}")
