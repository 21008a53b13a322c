"""The policy: its file format, and the decision it makes on a request.

A policy is a YAML (or JSON) document, version 1::

    version: 1
    default: allow            # what a request no rule decides gets: allow | deny
    rules:                    # each: see RULES; a rule left out has its default
      plugins: deny           # disable, rm, set, upgrade of this plugin
      privileged: deny        # --privileged containers and exec
      host_mounts: deny       # host paths outside host_mount_allow: binds, --mount,
                              # local volumes with a device, --device
      exec: deny              # docker exec: deny | allow | off
      read_only: allow        # GET and HEAD calls: allow | off
    host_mount_allow:         # host paths that may be mounted, with what is below them
      - /srv/shared
    self: [policyauthz:latest]  # the names this plugin is installed under
    users:                    # per TLS user (the common name of the client's certificate)
      alice:
        rules: {privileged: off, exec: allow}
      ci:
        default: deny

Rules are checked in this order, the first that decides wins: ``plugins``,
``privileged``, ``host_mounts`` (denials, and a request whose body they need
but cannot read is denied), then ``exec`` and ``read_only`` (which may allow),
then ``default``. A user's entry replaces ``default``, ``host_mount_allow``
and each rule it names. Any mistake in the file (an unknown key, a wrong
value, a key given twice) makes the whole policy unusable, and an unusable
policy denies everything: a typo never opens the daemon.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from plugin.authz import (
    CONTAINER_CREATE,
    EXEC_CREATE,
    SERVICE_SPEC,
    VOLUME_CREATE,
    AuthZReqRequest,
    container_host_config,
)
from plugin.gojson import GoJSONError, each, walk

__all__ = ["RULES", "Decision", "Policy", "PolicyError", "load", "normalize_ref", "parse"]

#: Each rule, the values it takes and its default.
RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "plugins": (("deny", "off"), "deny"),
    "privileged": (("deny", "off"), "deny"),
    "host_mounts": (("deny", "off"), "deny"),
    "exec": (("deny", "allow", "off"), "deny"),
    "read_only": (("allow", "off"), "allow"),
}
_TOP_KEYS = {"version", "default", "rules", "host_mount_allow", "self", "users"}
_USER_KEYS = {"default", "rules", "host_mount_allow"}


class PolicyError(ValueError):
    """The policy file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Settings:
    """What applies to one user (or to everyone)."""

    default: str = "allow"
    rules: Mapping[str, str] = field(default_factory=lambda: {k: v[1] for k, v in RULES.items()})
    host_mount_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    everyone: Settings
    users: Mapping[str, Settings]
    #: Normalized names of this plugin; None: any plugin may be this one.
    self_names: frozenset[str] | None
    source: str = "policy"

    def settings_for(self, user: str) -> Settings:
        return self.users.get(user, self.everyone) if user else self.everyone


@dataclass(frozen=True)
class Decision:
    allow: bool
    rule: str
    #: Shown to the client when denied.
    message: str
    #: What in the request made the decision (never a body's secrets).
    evidence: str = ""


# --- reading the file -----------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (PyYAML keeps the last one)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            line = key_node.start_mark.line + 1
            raise PolicyError(f"line {line}: the key {key!r} is given twice")
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def load(text: str, source: str) -> Policy:
    """Parse a policy file's text (JSON when ``source`` ends in .json, else
    YAML); PolicyError names ``source`` and the problem."""
    try:
        if source.endswith(".json"):
            try:
                data = json.loads(text, object_pairs_hook=_no_duplicates)
            except json.JSONDecodeError as exc:
                raise PolicyError(f"not valid JSON: {exc}") from None
        else:
            try:
                data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
            except yaml.YAMLError as exc:
                raise PolicyError(f"not valid YAML: {_yaml_problem(exc)}") from None
        return replace(parse(data), source=source)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def parse(data: Any) -> Policy:
    """Check a decoded policy document and build the Policy."""
    if not isinstance(data, dict):
        raise PolicyError("the policy must be a mapping (version: 1, rules: ...)")
    _known(data, _TOP_KEYS, "")
    if "version" not in data:
        raise PolicyError("version: missing (write version: 1)")
    if data["version"] != 1 or isinstance(data["version"], bool):
        raise PolicyError(f"version: {data['version']!r} is not a version this plugin reads (1)")
    everyone = _settings(data, Settings(), "")
    users: dict[str, Settings] = {}
    raw_users = data.get("users")
    if raw_users is not None:
        if not isinstance(raw_users, dict):
            raise PolicyError("users: must be a mapping of user names")
        for name, entry in raw_users.items():
            if not isinstance(name, str) or not name:
                raise PolicyError(f"users: {name!r} is not a user name")
            where = f"users.{name}."
            if not isinstance(entry, dict):
                raise PolicyError(f"{where[:-1]}: must be a mapping (default, rules, ...)")
            _known(entry, _USER_KEYS, where)
            users[name] = _settings(entry, everyone, where)
    self_names = None
    if "self" in data:
        names = data["self"]
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise PolicyError("self: must be a name or a list of names of this plugin")
        normalized = set()
        for name in names:
            ref = normalize_ref(name)
            if ref is None:
                raise PolicyError(f"self: {name!r} is not a plugin name")
            normalized.add(ref)
        self_names = frozenset(normalized)
    return Policy(everyone, users, self_names)


def _known(data: Mapping[Any, Any], known: set[str], where: str) -> None:
    for key in data:
        if key not in known:
            names = ", ".join(sorted(known))
            raise PolicyError(f"{where}{key}: unknown key (known: {names})")


def _settings(data: Mapping[str, Any], base: Settings, where: str) -> Settings:
    default = base.default
    if "default" in data:
        default = data["default"]
        if default not in ("allow", "deny"):
            raise PolicyError(f"{where}default: must be allow or deny, not {default!r}")
    rules = dict(base.rules)
    if "rules" in data:
        given = data["rules"]
        if not isinstance(given, dict):
            raise PolicyError(f"{where}rules: must be a mapping (privileged: deny, ...)")
        for name, value in given.items():
            if name not in RULES:
                known = ", ".join(RULES)
                raise PolicyError(f"{where}rules.{name}: unknown rule (known: {known})")
            choices = RULES[name][0]
            if value is False and "off" in choices:
                value = "off"  # YAML reads a bare off (or no) as false
            if value not in choices:
                raise PolicyError(
                    f"{where}rules.{name}: must be {' or '.join(choices)}, not {value!r}"
                )
            rules[name] = value
    allowed = base.host_mount_allow
    if "host_mount_allow" in data:
        paths = data["host_mount_allow"]
        if paths is None:
            paths = []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise PolicyError(f"{where}host_mount_allow: must be a list of host paths")
        for p in paths:
            if not p.startswith("/"):
                raise PolicyError(f"{where}host_mount_allow: {p!r} is not an absolute path")
        allowed = tuple(posixpath.normpath(p) for p in paths)
    return Settings(default, rules, allowed)


_REF = re.compile(
    r"(?:(?P<domain>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
)


def normalize_ref(name: str) -> str | None:
    """A plugin reference as the daemon resolves it (``acme/x`` ->
    ``docker.io/acme/x:latest``), or None if it is not one."""
    m = _REF.fullmatch(name)
    if m is None:
        return None
    domain, path, tag = m.group("domain"), m.group("path"), m.group("tag") or "latest"
    if domain is not None and "." not in domain and ":" not in domain and domain != "localhost":
        path, domain = f"{domain}/{path}", None  # "acme/x": acme is a path component
    if domain is None:
        domain = "docker.io"
        if "/" not in path:
            path = f"library/{path}"
    return f"{domain}/{path}:{tag}"


# --- deciding ---------------------------------------------------------------------------------

_READ_ONLY = ("GET", "HEAD")
_PLUGIN_CHANGES = re.compile(r"/plugins/(?P<name>.+)/(?P<verb>disable|set|upgrade)")


def decide(policy: Policy, req: AuthZReqRequest, own_id: str | None = None) -> Decision:
    """The policy's decision on a request (see the module docstring)."""
    user = req.user if req.user_authn_method == "TLS" else ""
    settings = policy.settings_for(user)
    rules = settings.rules
    method = req.method.upper()
    path = req.path

    if rules["plugins"] == "deny":
        target = _plugin_change(method, path)
        if target is not None and _may_be_self(policy, target[0], own_id):
            name, verb = target
            return Decision(
                False,
                "plugins",
                f"{verb} of the authorization plugin {name} is denied (rule plugins)",
                f"{verb} {name}",
            )

    checks = _body_checks(method, path, rules)
    if checks:
        shape, read = checks
        try:
            body = req.read_body(shape)
        except GoJSONError as exc:
            return Decision(
                False,
                "body",
                f"the request body cannot be checked: {exc} (rule body)",
                exc.kind,
            )
        for decision in read(body, settings):
            return decision

    if rules["exec"] != "off" and method == "POST" and _is_exec(path):
        allowed = rules["exec"] == "allow"
        word = "allowed" if allowed else "denied"
        return Decision(allowed, "exec", f"docker exec is {word} (rule exec)", path)

    if rules["read_only"] == "allow" and method in _READ_ONLY and not _is_attach(path):
        return Decision(True, "read_only", "", f"{method} {path}")

    allowed = settings.default == "allow"
    word = "allows" if allowed else "denies"
    return Decision(allowed, "default", f"the policy {word} what no rule decides (rule default)")


def _plugin_change(method: str, path: str) -> tuple[str, str] | None:
    if method == "DELETE" and path.startswith("/plugins/") and len(path) > 9:
        return path[9:], "rm"
    if method == "POST":
        m = _PLUGIN_CHANGES.fullmatch(path)
        if m:
            return m.group("name"), m.group("verb")
    return None


def _may_be_self(policy: Policy, target: str, own_id: str | None) -> bool:
    if policy.self_names is None:
        return True  # without the plugin's names, any plugin may be this one
    if normalize_ref(target) in policy.self_names:
        return True
    # The daemon also takes any unambiguous prefix of a plugin's ID.
    if re.fullmatch(r"[0-9a-f]+", target):
        return own_id is None or own_id.startswith(target)
    return False


def _is_exec(path: str) -> bool:
    return (path.startswith("/containers/") and path.endswith("/exec")) or (
        path.startswith("/exec/") and path.endswith("/start")
    )


def _is_attach(path: str) -> bool:
    # A websocket attach is a GET that writes to the container's stdin.
    return path.startswith("/containers/") and path.endswith("/attach/ws")


Reader = Callable[[Any, Settings], Iterator[Decision]]


def _body_checks(method: str, path: str, rules: Mapping[str, str]) -> tuple[Any, Reader] | None:
    """The body shape and the checks for a call whose body a rule needs."""
    privileged = rules["privileged"] == "deny"
    mounts = rules["host_mounts"] == "deny"
    if method != "POST" or not (privileged or mounts):
        return None
    if path == "/containers/create":
        return CONTAINER_CREATE, lambda body, s: _check_container(body, s, privileged, mounts)
    if privileged and path.startswith("/containers/") and path.endswith("/exec"):
        return EXEC_CREATE, _check_exec
    if mounts and path == "/volumes/create":
        return VOLUME_CREATE, _check_volume
    if (
        mounts
        and path.startswith("/services/")
        and (path == "/services/create" or path.endswith("/update"))
    ):
        return SERVICE_SPEC, _check_service
    return None


def _check_container(body: Any, s: Settings, privileged: bool, mounts: bool) -> Iterator[Decision]:
    hc = container_host_config(body)
    if hc is None:
        return
    if privileged and hc["Privileged"]:
        yield Decision(
            False,
            "privileged",
            "privileged containers are denied (rule privileged)",
            "HostConfig.Privileged: true",
        )
    if mounts:
        for bind in each(hc["Binds"]):
            # SOURCE:TARGET[:OPTIONS]; a lone path is the target of a new volume.
            parts = bind.split(":")
            if len(parts) > 1 and parts[0].startswith("/"):
                yield from _host_path(parts[0], s, f"HostConfig.Binds: {bind}")
        yield from _check_mounts(hc["Mounts"], s, "HostConfig.Mounts")
        for device in each(hc["Resources"]["Devices"]):
            host = device["PathOnHost"]
            if host:
                yield from _host_path(host, s, f"HostConfig.Devices: {host}")


def _check_exec(body: Any, s: Settings) -> Iterator[Decision]:
    if body["Privileged"]:
        yield Decision(
            False, "privileged", "privileged exec is denied (rule privileged)", "Privileged: true"
        )


def _check_volume(body: Any, s: Settings) -> Iterator[Decision]:
    device = (body["DriverOpts"] or {}).get("device", "")
    if _is_local(body["Driver"]) and device.startswith("/"):
        yield from _host_path(device, s, f"DriverOpts.device: {device}")


def _check_service(body: Any, s: Settings) -> Iterator[Decision]:
    mounts = walk(body, "TaskTemplate", "ContainerSpec", "Mounts")
    yield from _check_mounts(mounts, s, "TaskTemplate.ContainerSpec.Mounts")


def _check_mounts(mounts: Any, s: Settings, where: str) -> Iterator[Decision]:
    for i, mount in enumerate(each(mounts)):
        kind = mount["Type"].lower()
        if kind == "bind" and mount["Source"]:
            yield from _host_path(mount["Source"], s, f"{where}[{i}].Source: {mount['Source']}")
        driver = walk(mount, "VolumeOptions", "DriverConfig")
        if kind == "volume" and driver is not None:
            device = (driver["Options"] or {}).get("device", "")
            if _is_local(driver["Name"]) and device.startswith("/"):
                yield from _host_path(device, s, f"{where}[{i}] volume device: {device}")


def _is_local(driver: str) -> bool:
    return driver.lower() in ("", "local")


def _host_path(path: str, s: Settings, evidence: str) -> Iterator[Decision]:
    clean = posixpath.normpath(path)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    for allowed in s.host_mount_allow:
        if allowed == "/" or clean == allowed or clean.startswith(allowed + "/"):
            return
    where = ", ".join(s.host_mount_allow) or "none"
    yield Decision(
        False,
        "host_mounts",
        f"mounting the host path {clean} is denied (rule host_mounts; allowed: {where})",
        evidence,
    )
