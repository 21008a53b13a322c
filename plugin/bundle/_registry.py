"""Publishing and installing through a registry: push, install, upgrade.

The daemon streams progress for these calls and reports failures inside the
stream, after an HTTP 200, so every item is scanned for an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._engine import Engine
from ._errors import EngineError, engine_errors
from ._project import normalize_name

__all__ = ["format_privileges", "install", "push", "upgrade"]


def _auth_headers(api: Any, reference: str) -> dict[str, str]:
    from docker import auth  # type: ignore[import-untyped]

    registry, _ = auth.resolve_repository_name(reference)
    header = auth.get_config_header(api, registry)
    return {"X-Registry-Auth": header} if header else {}


def _drain(what: str, stream: Iterable[Any], engine: Engine) -> None:
    last = ""
    for item in stream:
        if not isinstance(item, dict):
            continue
        if item.get("error") or item.get("errorDetail"):
            detail = (item.get("errorDetail") or {}).get("message") or item.get("error")
            raise EngineError(f"{what}: {str(detail).strip()}")
        status = item.get("status")
        if status and status != last and "progress" not in item:
            engine.report(status)
            last = status


def push(engine: Engine, name: str) -> None:
    """``docker plugin push NAME``: to the registry the name points at.

    docker-py's ``push_plugin`` posts to the pull URL, so the push endpoint
    is called directly.
    """
    name = normalize_name(name)
    api = engine.api
    with engine_errors(f"push {name}"):
        res = api._post(
            api._url("/plugins/{0}/push", name), headers=_auth_headers(api, name), stream=True
        )
        api._raise_for_status(res)
        _drain(f"push {name}", api._stream_helper(res, decode=True), engine)


def format_privileges(privileges: list[dict[str, Any]]) -> list[str]:
    """The privileges as ``docker plugin install`` lists them."""
    return [f"{p.get('Name')}: [{', '.join(map(str, p.get('Value') or []))}]" for p in privileges]


def _privileges(engine: Engine, remote: str, grant: bool) -> list[dict[str, Any]]:
    with engine_errors(f"privileges of {remote}"):
        privileges = list(engine.api.plugin_privileges(remote) or [])
    lines = format_privileges(privileges)
    for line in lines:
        engine.report(f"privilege {line}")
    if privileges and not grant:
        raise EngineError(
            f"{remote} asks for privileges ({'; '.join(lines)}); review them and pass "
            "--grant-all-permissions to accept"
        )
    return privileges


def install(
    engine: Engine,
    remote: str,
    *,
    alias: str | None = None,
    settings: list[str] | None = None,
    grant: bool = False,
    enable: bool = True,
    timeout: int = 0,
) -> str:
    """``docker plugin install``: pull, set, enable. Returns the local name.

    When set or enable fails the pulled plugin is removed again, so a retry
    starts clean (the docker CLI leaves it behind).
    """
    remote = normalize_name(remote)
    local = normalize_name(alias) if alias else remote
    privileges = _privileges(engine, remote, grant)
    with engine_errors(f"install {remote}"):
        stream = engine.api.pull_plugin(remote, privileges, local)
        _drain(f"install {remote}", stream, engine)
    try:
        if settings:
            engine.set(local, settings)
        if enable:
            engine.enable(local, timeout=timeout)
    except EngineError:
        engine.remove(local, force=True)
        raise
    return local


def upgrade(
    engine: Engine, name: str, remote: str, *, grant: bool = False, timeout: int = 0
) -> list[str]:
    """``docker plugin upgrade``, keeping the host's mount sources.

    The daemon keeps env, args and devices across an upgrade but takes mount
    sources from the new config, so a ``data.source`` set on this host would
    silently revert (and the plugin would start on an empty directory). They
    are set again before enable. Returns the settings re-applied.
    """
    name = normalize_name(name)
    remote = normalize_name(remote)
    before = engine.inspect(name)
    if before is None:
        raise EngineError(f"upgrade {name}: no such plugin")
    sources = {
        m["Name"]: m.get("Source")
        for m in (before.get("Config") or {}).get("Mounts") or []
        if "source" in (m.get("Settable") or [])
    }
    privileges = _privileges(engine, remote, grant)
    if before.get("Enabled"):
        engine.report(f"disabling {name} (its volumes stay)")
        engine.disable(name, force=True)
    with engine_errors(f"upgrade {name}"):
        stream = engine.api.upgrade_plugin(name, remote, privileges)
        _drain(f"upgrade {name}", stream, engine)
    after = engine.inspect(name) or {}
    restore = []
    for mount in (after.get("Config") or {}).get("Mounts") or []:
        old = sources.get(mount.get("Name"))
        settable = "source" in (mount.get("Settable") or [])
        if old is not None and settable and mount.get("Source") != old:
            restore.append(f"{mount['Name']}.source={old}")
    if restore:
        engine.report("keeping this host's settings: " + " ".join(restore))
        engine.set(name, restore)
    engine.enable(name, timeout=timeout)
    return restore
