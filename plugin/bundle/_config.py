"""config.json: rendered from ``config.json.j2`` and the drivers, then validated.

The daemon checks almost nothing (keys are case-insensitive, unknown keys are
silently dropped, ``validateConfig`` is a no-op), so a typo becomes a plugin
that starts without its mount. Everything is checked here instead, against
PROTOCOL.md §3, and against the rootfs when there is one.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..manifest import Requirements
from ._errors import ConfigError
from ._project import Project

__all__ = [
    "ImageFacts",
    "Problem",
    "check_config",
    "render_config",
    "template_context",
    "validate_config",
]

MAX_SOCKET = 23
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAPABILITY_TYPES = {
    "volumedriver",
    "networkdriver",
    "ipamdriver",
    "authz",
    "logdriver",
    "metricscollector",
    "secretprovider",
}
LINUX_CAPS = {
    "CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER", "CAP_FSETID", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_MKNOD", "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT", "CAP_SYS_MODULE", "CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
}  # fmt: skip


@dataclass(frozen=True)
class ImageFacts:
    """What the built image says about how to run it (lost by the export)."""

    env: tuple[str, ...] = ()
    workdir: str = ""

    @property
    def path(self) -> str:
        for item in self.env:
            if item.startswith("PATH="):
                return item[5:]
        return DEFAULT_PATH

    @classmethod
    def from_inspect(cls, attrs: Mapping[str, Any]) -> ImageFacts:
        config = attrs.get("Config") or {}
        return cls(env=tuple(config.get("Env") or ()), workdir=config.get("WorkingDir") or "")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# --- rendering ----------------------------------------------------------------------


def resolve_program(program: str, search_path: str, rootfs: Path | None) -> str:
    """An absolute path for ``program`` inside the rootfs, found on the image's
    PATH (the daemon runs the entrypoint with a fixed PATH and no shell)."""
    if program.startswith("/") or rootfs is None:
        return program
    for directory in search_path.split(":"):
        candidate = rootfs / directory.lstrip("/") / program
        if os.path.lexists(candidate):
            return str(PurePosixPath(directory) / program)
    raise ConfigError(f"entrypoint: {program!r} not found on the image's PATH ({search_path})")


def template_context(
    project: Project,
    reqs: Requirements,
    image: ImageFacts,
    rootfs: Path | None,
) -> dict[str, Any]:
    """The variables config.json.j2 is rendered with."""
    if project.entrypoint:
        entrypoint = list(project.entrypoint)
    else:
        entrypoint = [project.python, "-u", "-m", "plugin", "--socket", project.socket]
        entrypoint += project.drivers
    entrypoint[0] = resolve_program(entrypoint[0], image.path, rootfs)
    declared = {e.name for e in reqs.env}
    image_env = []
    for item in image.env:
        name, _, value = item.partition("=")
        if name in ("PATH", "HOME", "HOSTNAME") or name in declared:
            continue
        image_env.append({"name": name, "value": value, "description": "from the image"})
    return {
        "description": project.description,
        "documentation": project.documentation,
        "entrypoint": entrypoint,
        "workdir": image.workdir or "/",
        "socket": project.socket,
        "interface_types": list(reqs.interface_types),
        "network": reqs.network,
        "propagated_mount": reqs.propagated_mount,
        "mounts": reqs.mounts,
        "devices": reqs.devices,
        "env": reqs.env,
        "image_env": image_env,
        "args": reqs.args,
        "capabilities": list(reqs.linux_capabilities),
        "allow_all_devices": reqs.allow_all_devices,
        "ipc_host": reqs.ipc_host,
        "pid_host": reqs.pid_host,
    }


def render_config(template: Path, context: Mapping[str, Any]) -> dict[str, Any]:
    """Render the Jinja2 template and parse it; ConfigError points at the line."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    try:
        text = env.get_template(template.name).render(**context)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"{template}: template not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{template}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{template}: {exc.message}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        line = text.splitlines()[exc.lineno - 1] if exc.lineno <= len(text.splitlines()) else ""
        raise ConfigError(
            f"{template}: rendered text is not JSON at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg} (line: {line.strip()!r})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{template}: rendered config.json must be a JSON object")
    return data


# --- validation ---------------------------------------------------------------------

_SCHEMA: dict[str, Any] = {
    "description": str,
    "documentation": str,
    "entrypoint": [str],
    "workdir": str,
    "interface": {"types": [str], "socket": str, "protocolscheme": str},
    "network": {"type": str},
    "mounts": [
        {
            "name": str,
            "description": str,
            "settable": [str],
            "source": (str, None),
            "destination": str,
            "type": str,
            "options": [str],
        }
    ],
    "propagatedmount": str,
    "ipchost": bool,
    "pidhost": bool,
    "linux": {
        "capabilities": [str],
        "allowalldevices": bool,
        "devices": [{"name": str, "description": str, "settable": [str], "path": (str, None)}],
    },
    "env": [{"name": str, "description": str, "settable": [str], "value": (str, None)}],
    "args": {"name": str, "description": str, "settable": [str], "value": [str]},
    "user": {"uid": int, "gid": int},
    "rootfs": {"type": str, "diff_ids": [str]},
}

_CANONICAL = {
    "propagatedmount": "propagatedMount",
    "ipchost": "ipcHost",
    "pidhost": "pidHost",
    "allowalldevices": "allowAllDevices",
    "protocolscheme": "protocolScheme",
    "diff_ids": "diff_ids",
}


def _type_name(spec: Any) -> str:
    if isinstance(spec, list):
        return "an array"
    if isinstance(spec, dict):
        return "an object"
    if isinstance(spec, tuple):
        return " or ".join("null" if s is None else _type_name(s) for s in spec)
    return {str: "a string", bool: "a boolean", int: "an integer"}[spec]


def _check_types(value: Any, spec: Any, where: str, out: list[Problem]) -> Any:
    """Check ``value`` against ``spec``; returns it with lower-cased keys."""
    if isinstance(spec, tuple):
        if value is None and None in spec:
            return None
        spec = next(s for s in spec if s is not None)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            out.append(Problem(where, f"must be {_type_name(spec)}"))
            return None
        result: dict[str, Any] = {}
        for key, item in value.items():
            low = key.lower()
            field = f"{where}.{key}" if where else key
            if low not in spec:
                names = [_CANONICAL.get(k, k) for k in spec]
                hint = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                also = f" (did you mean {hint[0]!r}?)" if hint else ""
                out.append(Problem(field, f"unknown key; the daemon would ignore it{also}"))
                continue
            if low in result:
                out.append(Problem(field, "given twice in different letter case"))
                continue
            result[low] = _check_types(item, spec[low], field, out)
        return result
    if isinstance(spec, list):
        if value is None:
            return []
        if not isinstance(value, list):
            out.append(Problem(where, f"must be {_type_name(spec)}"))
            return []
        return [_check_types(v, spec[0], f"{where}[{i}]", out) for i, v in enumerate(value)]
    ok = type(value) is spec or (spec is int and type(value) is int)
    if not ok:
        out.append(Problem(where, f"must be {_type_name(spec)}, not {json.dumps(value)[:40]}"))
        return None
    return value


def _in_rootfs(rootfs: Path, path: str) -> Path:
    return rootfs / path.lstrip("/")


def _exists_in_rootfs(rootfs: Path, path: str) -> bool:
    """Whether ``path`` exists inside the rootfs, following symlinks there."""
    current = rootfs
    parts = [p for p in PurePosixPath(path).parts if p != "/"]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != rootfs else rootfs
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                return False
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = rootfs
            parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
            continue
        if not candidate.exists():
            return False
        current = candidate
    return True


def validate_config(config: Any, rootfs: Path | None = None) -> list[Problem]:
    """Every problem with ``config`` (errors and warnings), none raised."""
    problems: list[Problem] = []
    if not isinstance(config, dict):
        return [Problem("config.json", "must be a JSON object")]
    c = _check_types(config, _SCHEMA, "", problems) or {}

    def need(key: str) -> None:
        if key not in c or c[key] in (None, [], ""):
            problems.append(Problem(_CANONICAL.get(key, key), "is required"))

    need("entrypoint")
    need("interface")
    entrypoint = c.get("entrypoint") or []
    if entrypoint and entrypoint[0] is not None and not str(entrypoint[0]).startswith("/"):
        problems.append(
            Problem("entrypoint[0]", f"must be an absolute path (the daemon runs no shell): "
                    f"{entrypoint[0]!r}")
        )

    iface = c.get("interface") or {}
    types = iface.get("types") or []
    if "interface" in c and not types:
        problems.append(Problem("interface.types", "is required (e.g. docker.volumedriver/1.0)"))
    for i, t in enumerate(types):
        if t is None:
            continue
        m = re.fullmatch(r"docker\.([a-z]+)/(.+)", t)
        if not m or m.group(1) not in CAPABILITY_TYPES:
            known = ", ".join(f"docker.{k}/1.0" for k in sorted(CAPABILITY_TYPES))
            problems.append(Problem(f"interface.types[{i}]", f"unknown type {t!r} (known: {known})"))
        elif m.group(2) != "1.0":
            problems.append(
                Problem(f"interface.types[{i}]", f"version must be exactly 1.0, not {m.group(2)!r}")
            )
    sock = iface.get("socket")
    if "interface" in c and not sock:
        problems.append(Problem("interface.socket", "is required (e.g. plugin.sock)"))
    elif isinstance(sock, str):
        if "/" in sock:
            problems.append(Problem("interface.socket", f"must be a file name, not a path: {sock!r}"))
        if len(sock) > MAX_SOCKET:
            problems.append(
                Problem("interface.socket", f"{sock!r} is {len(sock)} characters; the daemon's "
                        f"limit is {MAX_SOCKET} (its socket path must fit in 108 bytes)")
            )
    scheme = iface.get("protocolscheme")
    if scheme not in (None, "", "moby.plugins.http/v1"):
        problems.append(
            Problem("interface.protocolScheme", f"{scheme!r} is not the HTTP protocol; the daemon "
                    "would refuse to talk to the plugin (use \"\" or \"moby.plugins.http/v1\")")
        )

    for key in ("workdir", "propagatedmount"):
        value = c.get(key)
        if value and not value.startswith("/"):
            problems.append(Problem(_CANONICAL.get(key, key), f"must be an absolute path: {value!r}"))

    # Settable names: the daemon resolves env, then mounts, devices, args; a
    # duplicate name is silently shadowed.
    names: dict[str, str] = {}

    def settable_name(kind: str, where: str, name: Any, settable: list[Any], allowed: str) -> None:
        if not name:
            problems.append(Problem(f"{where}.name", "is required"))
            return
        if name in names:
            problems.append(
                Problem(f"{where}.name", f"{name!r} is also the name of {names[name]}; "
                        "`docker plugin set` would only reach the first")
            )
        names[name] = where
        for s in settable or []:
            if s != allowed:
                problems.append(
                    Problem(f"{where}.settable", f"{kind} can only make {allowed!r} settable, "
                            f"not {s!r}")
                )

    for i, e in enumerate(c.get("env") or []):
        if not e:
            continue
        where = f"env[{i}]"
        settable_name("env", where, e.get("name"), e.get("settable"), "value")
        name = e.get("name") or ""
        if "=" in name:
            problems.append(Problem(f"{where}.name", f"must not contain '=': {name!r}"))
        if "." in name and e.get("settable"):
            problems.append(
                Problem(f"{where}.name", f"{name!r} contains '.', so `docker plugin set` "
                        "cannot set it")
            )
    for i, m in enumerate(c.get("mounts") or []):
        if not m:
            continue
        where = f"mounts[{i}]"
        settable_name("mount", where, m.get("name"), m.get("settable"), "source")
        dest = m.get("destination")
        if not dest:
            problems.append(Problem(f"{where}.destination", "is required"))
        elif not dest.startswith("/"):
            problems.append(Problem(f"{where}.destination", f"must be an absolute path: {dest!r}"))
        elif rootfs is not None and not _exists_in_rootfs(rootfs, dest):
            problems.append(
                Problem(f"{where}.destination", f"{dest} does not exist in the rootfs "
                        "(create it in the Dockerfile)")
            )
        source = m.get("source")
        if source == "":
            problems.append(
                Problem(f"{where}.source", "is empty: the plugin would fail to start; give a "
                        "default or null")
            )
        elif source is None and "source" not in (m.get("settable") or []):
            problems.append(
                Problem(f"{where}.source", "is null and not settable: the plugin can never start")
            )
        elif source is None:
            problems.append(
                Problem(f"{where}.source", "is null: users must `docker plugin set` it before "
                        "enable", error=False)
            )
    linux = c.get("linux") or {}
    for i, cap in enumerate(linux.get("capabilities") or []):
        if cap is not None and cap not in LINUX_CAPS:
            hint = difflib.get_close_matches(str(cap).upper(), sorted(LINUX_CAPS), n=1)
            also = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(Problem(f"linux.capabilities[{i}]", f"unknown capability {cap!r}{also}"))
    for i, d in enumerate(linux.get("devices") or []):
        if d:
            settable_name("device", f"linux.devices[{i}]", d.get("name"), d.get("settable"), "path")
    args = c.get("args")
    if args:
        settable_name("args", "args", args.get("name"), args.get("settable"), "value")
    if c.get("user"):
        problems.append(Problem("user", "is ignored by the daemon: plugins run as root", False))
    if c.get("rootfs"):
        problems.append(Problem("rootfs", "is overwritten by `docker plugin create`", False))

    if rootfs is not None:
        if not rootfs.is_dir():
            problems.append(Problem("rootfs", f"{rootfs} is not a directory"))
            return problems
        if not _exists_in_rootfs(rootfs, "/run/docker/plugins"):
            problems.append(
                Problem("rootfs", "/run/docker/plugins does not exist (the daemon mounts the "
                        "socket directory there)")
            )
        pm = c.get("propagatedmount")
        if pm and not _exists_in_rootfs(rootfs, pm):
            problems.append(Problem("propagatedMount", f"{pm} does not exist in the rootfs"))
        if entrypoint and isinstance(entrypoint[0], str) and entrypoint[0].startswith("/"):
            if not _exists_in_rootfs(rootfs, entrypoint[0]):
                problems.append(
                    Problem("entrypoint[0]", f"{entrypoint[0]} does not exist in the rootfs")
                )
        wd = c.get("workdir")
        if wd and wd.startswith("/") and not _exists_in_rootfs(rootfs, wd):
            problems.append(Problem("workdir", f"{wd} does not exist in the rootfs"))
    return problems


def check_config(config: Any, rootfs: Path | None = None, where: str = "config.json") -> list[str]:
    """Raise ConfigError listing every error; return the warnings."""
    problems = validate_config(config, rootfs)
    errors = [str(p) for p in problems if p.error]
    if errors:
        head = errors[0] if len(errors) == 1 else f"{len(errors)} problems: " + "; ".join(errors)
        raise ConfigError(f"{where}: {head}", errors)
    return [str(p) for p in problems if not p.error]


def write_json(path: Path, data: Mapping[str, Any] | Sequence[Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
