"""config.json: rendered from ``config.json.j2`` and the drivers, then validated.

The daemon checks almost nothing (keys are case-insensitive, unknown keys are
silently dropped, ``validateConfig`` is a no-op), so a typo becomes a plugin
that starts without its mount. Everything is checked here instead: each
field's type and allowed values as the daemon's config format defines them
(the tables below), names and limits, and the rootfs when there is one.
"""

from __future__ import annotations

import difflib
import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .._requirements import Requirements
from .._socket import PLUGIN_DIR, socket_name_problem
from ._errors import ConfigError
from ._project import Project

__all__ = [
    "ImageFacts",
    "Problem",
    "check_config",
    "read_config",
    "render_config",
    "resolve_in_rootfs",
    "template_context",
    "undeclared_capabilities",
    "validate_config",
]

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
    """One finding of ``validate_config``: the field (as written in
    config.json) and what is wrong; warnings have ``error=False``."""

    field: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# --- the rootfs -----------------------------------------------------------------------


def resolve_in_rootfs(rootfs: Path, path: str) -> Path | None:
    """Where ``path`` of the plugin's filesystem is on this host, following
    symlinks as the plugin would: an absolute link target starts again at the
    rootfs, never at the host's ``/``, and ``..`` stops at the rootfs. Missing
    components are kept as they are; None for a symlink loop."""
    current = rootfs
    parts = [p for p in PurePosixPath(path).parts if p != "/"]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if current != rootfs:
                current = current.parent
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = rootfs
            parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
            continue
        current = candidate
    return current


def _exists_in_rootfs(rootfs: Path, path: str) -> bool:
    resolved = resolve_in_rootfs(rootfs, path)
    return resolved is not None and resolved.exists()


# --- rendering ----------------------------------------------------------------------

#: Always set by config.json.j2, so never copied from the image.
_NOT_FROM_IMAGE = {"PATH", "HOME", "HOSTNAME", "PYTHONUNBUFFERED"}


def resolve_program(program: str, search_path: str, rootfs: Path | None) -> str:
    """An absolute path for ``program`` inside the rootfs, found on the image's
    PATH (the daemon runs the entrypoint with its own fixed PATH)."""
    if "/" in program or rootfs is None:
        return program
    for directory in search_path.split(":"):
        if directory.startswith("/"):
            candidate = str(PurePosixPath(directory) / program)
            if _exists_in_rootfs(rootfs, candidate):
                return candidate
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
        if name in _NOT_FROM_IMAGE or name in declared:
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


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line an error was raised at (Jinja rewrites the traceback
    so that its frames carry the template's file name and line)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if filename is not None and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_config(template: Path, context: Mapping[str, Any]) -> dict[str, Any]:
    """Render the Jinja2 template and parse it; ConfigError points at the line."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )

    def dumps(obj: Any, **kwargs: Any) -> str:
        def default(value: Any) -> Any:
            if isinstance(value, jinja2.Undefined):  # `{{ nope | tojson }}`
                value._fail_with_undefined_error()
            raise TypeError(f"{type(value).__name__} cannot be written as JSON")

        return json.dumps(obj, default=default, **kwargs)

    env.policies["json.dumps_function"] = dumps
    try:
        compiled = env.get_template(template.name)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"{template}: template not found") from None
    except jinja2.TemplateSyntaxError as exc:
        where = f"{template}:{exc.lineno}"
        raise ConfigError(f"{where}: template syntax error: {exc.message}") from None
    try:
        text = compiled.render(**context)
    except Exception as exc:
        # Only errors the template itself made (undefined names, bad filters)
        # are the user's; anything else is a bug worth its traceback.
        line = _template_line(exc, compiled.filename)
        if line is None and not isinstance(exc, jinja2.TemplateError):
            raise
        reason = exc.message if isinstance(exc, jinja2.TemplateError) else None
        reason = reason or f"{type(exc).__name__}: {exc}"
        where = f"{template}:{line}" if line is not None else str(template)
        raise ConfigError(f"{where}: {reason}") from None
    return _parse(text, str(template), rendered=True)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    pass


def _parse(text: str, where: str, rendered: bool = False) -> dict[str, Any]:
    subject = "the rendered config.json " if rendered else ""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}"
        if rendered:  # its line numbers are not the template's: show the line
            lines = text.split("\n")
            line = lines[exc.lineno - 1].strip() if exc.lineno <= len(lines) else ""
            at = f"rendered {at}: {line!r}"
        raise ConfigError(
            f"{where}: {subject}{'is ' if rendered else ''}not valid JSON: {exc.msg} ({at})"
        ) from None
    except _DuplicateKey as exc:
        key = exc.args[0]
        detail = (
            f"has the key {key!r} twice in one object"
            if rendered
            else f"the key {key!r} is given twice in one object"
        )
        raise ConfigError(f"{where}: {subject}{detail}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {subject}{'is ' if rendered else ''}not a JSON object")
    return data


def read_config(path: Path) -> dict[str, Any]:
    """A bundle's config.json; ConfigError if it is missing or not JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run the build first)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    return _parse(text, str(path))


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
}


def _type_name(spec: Any) -> str:
    if isinstance(spec, list):
        return "an array"
    if isinstance(spec, dict):
        return "an object"
    if isinstance(spec, tuple):
        return " or ".join("null" if s is None else _type_name(s) for s in spec)
    names: dict[Any, str] = {str: "a string", bool: "a boolean", int: "an integer"}
    return names[spec]


def _wrong_type(where: str, spec: Any, value: Any) -> Problem:
    shown = json.dumps(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return Problem(where, f"must be {_type_name(spec)}, not {shown}")


def _check_types(value: Any, spec: Any, where: str, out: list[Problem]) -> Any:
    """Check ``value`` against ``spec`` as Go's decoder would, but stricter:
    returns it with lower-cased keys, None where the type is wrong."""
    shown = spec
    if isinstance(spec, tuple):
        if value is None:
            return None
        spec = next(s for s in spec if s is not None)
    if isinstance(spec, dict):
        if value is None:  # Go leaves the field at its zero value
            return None
        if not isinstance(value, dict):
            out.append(_wrong_type(where, spec, value))
            return None
        result: dict[str, Any] = {}
        for key, item in value.items():
            low = key.lower()
            field = f"{where}.{key}" if where else key
            if low not in spec:
                hint = difflib.get_close_matches(low, list(spec), n=1, cutoff=0.6)
                also = f" (did you mean {_CANONICAL.get(hint[0], hint[0])!r}?)" if hint else ""
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
            out.append(_wrong_type(where, spec, value))
            return []
        return [_check_types(v, spec[0], f"{where}[{i}]", out) for i, v in enumerate(value)]
    if type(value) is not spec:  # not isinstance: True is not an integer here
        out.append(_wrong_type(where, shown, value))
        return None
    return value


def is_bind_mount(type_: Any, options: Any) -> bool:
    """A bind mount, as the daemon reads one: its type, or a bind option."""
    return type_ == "bind" or "bind" in (options or []) or "rbind" in (options or [])


def validate_config(
    config: Any, rootfs: Path | None = None, declared: Requirements | None = None
) -> list[Problem]:
    """Every problem with ``config`` (errors and warnings), none raised:
    field types first, then one validator per section of config.json.

    Broad privileges are warnings: all devices, the host's network for a
    volume, IPAM or authorization plugin (and its absence for a network
    plugin), a propagated mount for an
    authorization plugin or a secret provider, the host's PID or IPC
    namespace, a mount of the host's
    ``/`` or of the Docker socket, and, when ``declared`` (what the plugin's
    drivers ask for) is given, capabilities its drivers do not declare."""
    problems: list[Problem] = []
    if not isinstance(config, dict):
        return [_wrong_type("config.json", {}, config)]
    c: dict[str, Any] = _check_types(config, _SCHEMA, "", problems) or {}
    check = _Check(c, rootfs, problems)
    if rootfs is not None and not rootfs.is_dir():
        check.error("rootfs", f"{rootfs} is not a directory")
        check.root = None
    for validate in _SECTIONS:
        validate(check)
    problems += _privileges(c, declared)
    return problems


class _Check:
    """What each section's validator reads (``c``: the config with lower-cased
    keys, as ``_check_types`` returns it; ``root``: the rootfs, if any) and
    where it reports."""

    def __init__(self, c: dict[str, Any], root: Path | None, problems: list[Problem]) -> None:
        self.c = c
        self.root = root
        self.problems = problems
        #: Fields whose type was wrong: not checked again.
        self.mistyped = {p.field for p in problems}
        #: Names `docker plugin set` finds (see ``setting``), and where.
        self.names: dict[str, str] = {}

    def error(self, field: str, message: str) -> None:
        self.problems.append(Problem(field, message))

    def warning(self, field: str, message: str) -> None:
        self.problems.append(Problem(field, message, error=False))

    def in_rootfs(self, field: str, path: str) -> None:
        """``path`` (absolute) must exist in the rootfs, when there is one."""
        if self.root is not None and not _exists_in_rootfs(self.root, path):
            self.error(field, f"{path} does not exist in the rootfs (create it in the Dockerfile)")

    def setting(self, where: str, item: Mapping[str, Any], allowed: str, env: bool = False) -> None:
        """A settable item: `docker plugin set NAME=...` looks for NAME in env,
        then mounts, devices and args; the first match wins, so a second use
        of a name is unreachable."""
        name = item.get("name")
        settable = item.get("settable") or []
        if not name:
            if env:
                self.error(f"{where}.name", "is required")
            elif settable:
                self.error(
                    f"{where}.name", "is required (`docker plugin set` finds settings by name)"
                )
            return
        if name in self.names:
            self.error(
                f"{where}.name",
                f"{name!r} is also the name of {self.names[name]}; `docker plugin set` would "
                "only reach the first",
            )
        else:
            self.names[name] = where
        for s in settable:
            if s != allowed:
                self.error(f"{where}.settable", f"only {allowed!r} can be settable here, not {s!r}")

    def host_path(self, where: str, item: Mapping[str, Any], key: str, what: str) -> None:
        """A mount's source or a device's path: set by users, so checked
        against what `docker plugin set` can and cannot do."""
        value = item.get(key)
        settable = key in (item.get("settable") or [])
        field = f"{where}.{key}"
        if value is None:
            if settable:
                self.error(
                    field,
                    f"is null, which `docker plugin set` cannot change (the daemon answers "
                    f'"Plugin config has no {what}"); give a default, or "" for users to set',
                )
            else:
                self.error(field, "is null and not settable: the plugin could never be enabled")
        elif value == "":
            if settable:
                setting_name = item.get("name") or "NAME"
                self.warning(
                    field,
                    f"is empty: users must `docker plugin set PLUGIN {setting_name}.{key}=/path` "
                    "before enable",
                )
            else:
                self.error(field, "is empty and not settable: the plugin could never be enabled")


def _entrypoint(check: _Check) -> None:
    entrypoint = check.c.get("entrypoint") or []
    if not entrypoint and "entrypoint" not in check.mistyped:
        check.error("entrypoint", "is required (the plugin's program and its arguments)")
    program = entrypoint[0] if entrypoint else None
    if isinstance(program, str) and not program.startswith("/"):
        check.error(
            "entrypoint[0]",
            f"must be an absolute path (the image's PATH does not apply): {program!r}",
        )
    elif isinstance(program, str) and check.root is not None:
        found = resolve_in_rootfs(check.root, program)
        if found is None or not found.exists():
            check.error("entrypoint[0]", f"{program} does not exist in the rootfs")
        elif not found.is_file() or not found.stat().st_mode & 0o111:
            check.error("entrypoint[0]", f"{program} is not an executable file in the rootfs")


def _interface(check: _Check) -> None:
    iface = check.c.get("interface")
    if iface is None:
        if "interface" not in check.mistyped:
            check.error("interface", "is required")
        return
    if not iface.get("types") and "interface.types" not in check.mistyped:
        check.error("interface.types", "is required (e.g. docker.volumedriver/1.0)")
    if iface.get("socket") in (None, "") and "interface.socket" not in check.mistyped:
        check.error("interface.socket", "is required (e.g. plugin.sock)")
    for i, t in enumerate(iface.get("types") or []):
        if t is None:
            continue
        m = re.fullmatch(r"docker\.([a-z]+)/(.+)", t)
        if not m or m.group(1) not in CAPABILITY_TYPES:
            known = ", ".join(f"docker.{k}/1.0" for k in sorted(CAPABILITY_TYPES))
            check.error(f"interface.types[{i}]", f"unknown type {t!r} (known: {known})")
        elif m.group(2) != "1.0":
            check.error(f"interface.types[{i}]", f"version must be exactly 1.0, not {m.group(2)!r}")
    sock = iface.get("socket")
    problem = socket_name_problem(sock) if sock else None
    if problem is not None:
        check.error("interface.socket", problem)
    scheme = iface.get("protocolscheme")
    if scheme not in (None, "", "moby.plugins.http/v1"):
        check.error(
            "interface.protocolScheme",
            f"{scheme!r} is not the HTTP protocol; the daemon would refuse to talk to the "
            'plugin (use "" or "moby.plugins.http/v1")',
        )


def _paths(check: _Check) -> None:
    """workdir and propagatedMount: absolute, and in the rootfs."""
    for key in ("workdir", "propagatedmount"):
        value = check.c.get(key)
        field = _CANONICAL.get(key, key)
        if not value:
            continue
        if not value.startswith("/"):
            check.error(field, f"must be an absolute path: {value!r}")
        else:
            check.in_rootfs(field, value)


def _network(check: _Check) -> None:
    network = (check.c.get("network") or {}).get("type")
    if network == "bridge":
        check.warning("network.type", "'bridge' gives the plugin no network at all; use \"host\"")
    elif network not in (None, "", "host", "none"):
        check.warning(
            "network.type",
            f'{network!r} is no network mode: the plugin gets no network (use "host" or "")',
        )


def _env(check: _Check) -> None:
    for i, e in enumerate(check.c.get("env") or []):
        if e is None:
            continue
        where = f"env[{i}]"
        check.setting(where, e, "value", env=True)
        name = e.get("name") or ""
        if "=" in name:
            check.error(f"{where}.name", f"must not contain '=': {name!r}")
        if "." in name and e.get("settable"):
            check.error(
                f"{where}.name", f"{name!r} contains '.', so `docker plugin set` cannot set it"
            )


def _mounts(check: _Check) -> None:
    for i, m in enumerate(check.c.get("mounts") or []):
        if m is None:
            continue
        where = f"mounts[{i}]"
        check.setting(where, m, "source")
        dest = m.get("destination")
        if not dest:
            if f"{where}.destination" not in check.mistyped:
                check.error(f"{where}.destination", "is required")
        elif not dest.startswith("/"):
            check.error(f"{where}.destination", f"must be an absolute path: {dest!r}")
        else:
            check.in_rootfs(f"{where}.destination", dest)
        if f"{where}.source" not in check.mistyped:
            check.host_path(where, m, "source", "mount source")
        source = m.get("source")
        if source and not source.startswith("/") and is_bind_mount(m.get("type"), m.get("options")):
            check.error(f"{where}.source", f"a bind mount needs an absolute host path: {source!r}")


def _linux(check: _Check) -> None:
    """Capabilities (known names) and devices (settable host paths)."""
    linux = check.c.get("linux") or {}
    for i, cap in enumerate(linux.get("capabilities") or []):
        if cap is None or cap in LINUX_CAPS:
            continue
        upper = cap.upper()
        hints = [h for h in (upper, f"CAP_{upper}") if h in LINUX_CAPS]
        hints = hints or difflib.get_close_matches(upper, sorted(LINUX_CAPS), n=1)
        also = f" (did you mean {hints[0]!r}?)" if hints else ""
        check.error(f"linux.capabilities[{i}]", f"unknown capability {cap!r}{also}")
    for i, d in enumerate(linux.get("devices") or []):
        if d is None:
            continue
        where = f"linux.devices[{i}]"
        check.setting(where, d, "path")
        if f"{where}.path" not in check.mistyped:
            check.host_path(where, d, "path", "device path")
        path = d.get("path")
        if path and not path.startswith("/"):
            check.error(f"{where}.path", f"must be an absolute host path: {path!r}")


def _args(check: _Check) -> None:
    args = check.c.get("args")
    if args:
        check.setting("args", args, "value")


def _ignored(check: _Check) -> None:
    """What the daemon ignores or overwrites, and what it needs in the rootfs."""
    if check.c.get("user"):
        check.warning("user", "is ignored by the daemon: plugins run as root")
    if check.c.get("rootfs"):
        check.warning("rootfs", "is overwritten by `docker plugin create`")
    if check.root is not None and not _exists_in_rootfs(check.root, PLUGIN_DIR):
        check.error(
            "rootfs",
            f"{PLUGIN_DIR} does not exist (the daemon mounts the socket directory there)",
        )


#: The validators, in the order of config.json's sections (env before mounts,
#: devices and args: the order `docker plugin set` looks names up in).
_SECTIONS = (_entrypoint, _interface, _paths, _network, _env, _mounts, _linux, _args, _ignored)


# --- least privilege -------------------------------------------------------------------

#: Host paths whose mount hands the plugin the host (or its Docker daemon).
_HOST_ROOT = (
    "mounts the host's whole filesystem into the plugin; mount only the directories it needs"
)
_DOCKER_SOCKETS = {"/var/run/docker.sock", "/run/docker.sock"}
#: The daemon's own files: every container's filesystem, logs and secrets.
_DOCKER_DATA = "/var/lib/docker"
_METRICS_SOCKETS = {"/var/run/docker/metrics.sock", "/run/docker/metrics.sock"}


def _privileges(c: Mapping[str, Any], declared: Requirements | None) -> list[Problem]:
    """Warnings about privileges broader than a plugin needs (``c`` is the
    config with lower-cased keys, as ``_check_types`` returns it)."""
    out: list[Problem] = []

    def warn(field: str, message: str) -> None:
        out.append(Problem(field, message, error=False))

    linux = c.get("linux") or {}
    if linux.get("allowalldevices") is True:
        warn(
            "linux.allowAllDevices",
            "gives the plugin every device of the host; list the devices it needs in "
            "linux.devices instead",
        )
    types = [t for t in (c.get("interface") or {}).get("types") or [] if isinstance(t, str)]
    network = (c.get("network") or {}).get("type")
    # A network driver needs the host's network (its interfaces are moved
    # from there into containers); the other types only to reach a service.
    if network == "host" and types and all(t.startswith("docker.volumedriver/") for t in types):
        warn(
            "network.type",
            "'host' gives a volume plugin the host's network; it needs it only to reach "
            'remote storage (otherwise use "")',
        )
    elif network == "host" and types and all(t.startswith("docker.ipamdriver/") for t in types):
        warn(
            "network.type",
            "'host' gives an IPAM plugin the host's network; it hands out addresses and "
            'needs it only to reach a remote address service (otherwise use "")',
        )
    if network != "host" and "docker.networkdriver/1.0" in types:
        warn(
            "network.type",
            f'is {network or ""!r}: a network plugin needs "host", since the daemon moves '
            "the interfaces it makes from the host's namespace into containers",
        )
    if network == "host" and types and all(t.startswith("docker.authz/") for t in types):
        warn(
            "network.type",
            "'host' gives an authorization plugin the host's network; it needs it only to "
            'fetch its policy from elsewhere (otherwise use "")',
        )
    no_mounts = ("docker.authz/", "docker.secretprovider/")
    if c.get("propagatedmount") and types and all(t.startswith(no_mounts) for t in types):
        warn(
            "propagatedMount",
            "shares the plugin's mounts with the host; only a volume plugin has use for it "
            "(leave it out)",
        )
    for key, what in (("pidhost", "process"), ("ipchost", "IPC")):
        if c.get(key) is True:
            warn(
                _CANONICAL[key],
                f"shares the host's {what} namespace with the plugin; leave it false unless "
                "the plugin needs it",
            )
    for i, m in enumerate(c.get("mounts") or []):
        source = (m or {}).get("source")
        if not isinstance(source, str) or not source.startswith("/"):
            continue
        normal = posixpath.normpath(source)
        if normal.strip("/") == "":
            warn(f"mounts[{i}].source", f"{source!r} {_HOST_ROOT}")
        elif normal in _DOCKER_SOCKETS:
            warn(f"mounts[{i}].source", f"{source!r} gives the plugin control of the Docker daemon")
        elif normal in _METRICS_SOCKETS and any(
            t.startswith("docker.metricscollector/") for t in types
        ):
            warn(
                f"mounts[{i}].source",
                f"{source!r}: the daemon mounts its metrics socket into every metrics plugin "
                "at /run/docker/metrics.sock; leave this mount out",
            )
        elif (
            normal == _DOCKER_DATA or normal.startswith(_DOCKER_DATA + "/")
        ) and not normal.startswith(_DOCKER_DATA + "/plugins/"):
            what = (
                "a log driver gets each container's output from the daemon"
                if any(t.startswith("docker.logdriver/") for t in types)
                else "mount a directory of the plugin's own"
            )
            warn(
                f"mounts[{i}].source",
                f"{source!r} is the daemon's own data (every container's files and logs); {what}",
            )
    if declared is not None:
        out += _undeclared(linux.get("capabilities") or [], declared)
    return out


def _undeclared(caps: Sequence[Any], declared: Requirements) -> list[Problem]:
    allowed = set(declared.linux_capabilities)
    named = ", ".join(sorted(allowed)) or "none"
    return [
        Problem(
            f"linux.capabilities[{i}]",
            f"{cap} is not declared by the plugin's drivers (they declare {named})",
            error=False,
        )
        for i, cap in enumerate(caps)
        if isinstance(cap, str) and cap not in allowed
    ]


def undeclared_capabilities(config: Any, declared: Requirements) -> list[str]:
    """Warnings for the capabilities of ``config`` that ``declared`` (the
    drivers' declarations) does not ask for; the rest of the checks are in
    ``validate_config``."""
    if not isinstance(config, dict):
        return []
    linux = next((v for k, v in config.items() if k.lower() == "linux"), None)
    if not isinstance(linux, dict):
        return []
    caps = next((v for k, v in linux.items() if k.lower() == "capabilities"), None)
    return [str(p) for p in _undeclared(caps if isinstance(caps, list) else [], declared)]


def check_config(
    config: Any,
    rootfs: Path | None = None,
    where: str = "config.json",
    declared: Requirements | None = None,
) -> list[str]:
    """Raise ConfigError listing every error; return the warnings."""
    problems = validate_config(config, rootfs, declared)
    errors = [str(p) for p in problems if p.error]
    if errors:
        head = errors[0] if len(errors) == 1 else f"{len(errors)} problems: " + "; ".join(errors)
        raise ConfigError(f"{where}: {head}", errors)
    return [str(p) for p in problems if not p.error]


def write_json(path: Path, data: Mapping[str, Any] | Sequence[Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
