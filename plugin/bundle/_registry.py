"""Publishing and installing through a registry: push, install, upgrade.

The daemon streams progress for these calls and reports failures inside the
stream, after an HTTP 200, so every item is scanned for an error.

dockerd 20.10 (containerd 1.6's pusher) can crash in the middle of a push
("panic: send on closed channel"): the stream then breaks off. When the
daemon no longer answers after that, the error says so and what to do
(``DaemonStopped``) instead of the broken connection's words.

A registry's refusal of a push says little: it names neither what it
refused nor why. The error says where the credentials came from (the
user's Docker config: ``docker login``) and, when the registry refused the
manifest or the access, that a plugin is not an image: its config has the
media type ``application/vnd.docker.plugin.v1+json`` and its token scope is
``repository(plugin):...``, which some registries do not accept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import read_config
from ._engine import REF_FILE, Engine, daemon_log, daemon_log_panic, daemon_log_size
from ._errors import BundleError, EngineError, engine_errors, reason
from ._platform import (
    DEFAULT_TAG_ARCH,
    arch_output,
    arch_tag,
    get_arch,
    recorded_platform,
    rootfs_arch,
    tag_arch,
)
from ._project import normalize_name

__all__ = [
    "PLUGIN_MEDIA_TYPE",
    "DaemonStopped",
    "Pushed",
    "format_privileges",
    "install",
    "plan_push",
    "publish",
    "push",
    "upgrade",
]

#: The media type of a plugin's config in the registry: what makes it a
#: plugin and not an image.
PLUGIN_MEDIA_TYPE = "application/vnd.docker.plugin.v1+json"
#: How dockerd says a registry refused the manifest (containerd's pusher:
#: 'failed commit on ref "manifest-sha256:...": unexpected status: 400 Bad
#: Request'), or the registry's own words for it.
_REFUSED_MANIFEST = re.compile(
    r'ref "manifest-|manifest.?invalid|unsupported|media.?type|invalid manifest', re.IGNORECASE
)
_REFUSED_ACCESS = re.compile(
    r"\b40[13]\b|denied|unauthori[sz]ed|authentication required|forbidden", re.IGNORECASE
)
#: Over plain HTTP, dockerd retries a failed push there but reports the
#: error of its first, HTTPS, attempt.
_PLAIN_HTTP = re.compile(r"HTTP response to HTTPS client|does not look like a TLS handshake")


class DaemonStopped(EngineError):
    """The daemon stopped answering in the middle of a push."""


def _stopped_message(name: str, since: int) -> str:
    message = (
        f"the Docker daemon stopped while pushing {name} (dockerd 20.10 can crash in "
        'containerd\'s pusher: look for "panic" in its log); start it again and push again: '
        "blobs already in the registry are not sent again"
    )
    panic = daemon_log_panic(since)
    if panic:
        message += f"\n  its log ({daemon_log()}) says: {panic}"
    return message


@contextmanager
def _daemon_watched(engine: Engine, name: str) -> Iterator[None]:
    """A connection that breaks off in the middle of the push: DaemonStopped
    when the daemon no longer answers, else an EngineError with the break's
    own words. docker-py lets a stream broken mid-read through as urllib3's
    ProtocolError, and a request the daemon never answered as requests'
    ConnectionError."""
    import requests.exceptions
    import urllib3.exceptions

    since = daemon_log_size()
    try:
        yield
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
    ) as exc:
        if not engine.answers():
            raise DaemonStopped(_stopped_message(name, since)) from None
        raise EngineError(
            f"push {name}: the connection to the Docker daemon broke ({_broken(exc)}); if the "
            "daemon restarted meanwhile (dockerd 20.10 can crash in containerd's pusher: look "
            'for "panic" in its log), push again: blobs already in the registry are not sent '
            "again"
        ) from None


def _broken(exc: BaseException) -> str:
    """The words of a broken connection, without the exceptions wrapped
    around them: "Connection broken: IncompleteRead(0 bytes read)"."""
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    return exc.args[0] if exc.args and isinstance(exc.args[0], str) else reason(exc)


def _registry_of(reference: str) -> str:
    from docker import auth  # type: ignore[import-untyped,unused-ignore]

    registry, _ = auth.resolve_repository_name(reference)
    return str(registry)


def _auth_headers(api: Any, reference: str) -> dict[str, str]:
    from docker import auth  # type: ignore[import-untyped,unused-ignore]

    header = auth.get_config_header(api, _registry_of(reference))
    return {"X-Registry-Auth": header} if header else {}


def _config_file() -> str:
    from docker.utils.config import find_config_file  # type: ignore[import-untyped,unused-ignore]

    return str(find_config_file() or "~/.docker/config.json (none here)")


@dataclass
class _Progress:
    """What a push stream said besides progress: the digest of the pushed
    manifest and the size of each layer sent."""

    digest: str = ""
    layers: dict[str, int] = field(default_factory=dict)


def _drain(
    what: str, stream: Iterable[Any], engine: Engine, progress: _Progress | None = None
) -> None:
    last = ""
    for item in stream:
        if not isinstance(item, dict):
            continue
        if item.get("error") or item.get("errorDetail"):
            detail = (item.get("errorDetail") or {}).get("message") or item.get("error")
            raise EngineError(f"{what}: {str(detail).strip()}")
        if progress is not None:
            aux = item.get("aux") or {}
            if aux.get("Digest"):
                progress.digest = str(aux["Digest"])
            total = (item.get("progressDetail") or {}).get("total")
            if item.get("id") and isinstance(total, int):
                progress.layers[str(item["id"])] = total
        status = item.get("status")
        if status and status != last and "progress" not in item:
            engine.report(status)
            last = status


def push(engine: Engine, name: str, *, platform: str | None = None) -> tuple[str, int]:
    """``docker plugin push NAME``: to the registry the name points at, with
    the credentials of the user's Docker config for that registry. Returns
    the pushed manifest's digest and the compressed size of its layers.

    With ``platform`` (``linux/arm64``), the plugin's rootfs must be for
    it, or nothing is pushed. docker-py's ``push_plugin`` posts to the pull
    URL, so the push endpoint is called directly. A dev plugin
    (``docker-plugin-kit dev``) is refused: it runs source files that only
    this host has.
    """
    from ._dev import refuse_push

    name = normalize_name(name)
    api = engine.api
    info = engine.inspect(name)
    if info is None:
        raise EngineError(f"push {name}: no such plugin")
    refuse_push(name, info)
    if platform is not None:
        found = engine.plugin_platform(info)
        if found is not None and found != platform:
            raise EngineError(
                f"push {name}: refused: the plugin is built for {found}, and its tag is "
                f"for {platform}"
            )
    headers = _auth_headers(api, name)
    progress = _Progress()
    try:
        with engine_errors(f"push {name}"), _daemon_watched(engine, name):
            res = api._post(api._url("/plugins/{0}/push", name), headers=headers, stream=True)
            api._raise_for_status(res)
            _drain(f"push {name}", api._stream_helper(res, decode=True), engine, progress)
    except DaemonStopped:
        raise
    except EngineError as exc:
        raise EngineError(str(exc) + _push_hint(str(exc), name, bool(headers))) from None
    # The stream gives the layers' sizes only if a push lasts long enough
    # for a progress report.
    size = engine.layer_bytes(info)
    return progress.digest, size if size is not None else sum(progress.layers.values())


def _push_hint(message: str, name: str, sent_credentials: bool) -> str:
    registry = _registry_of(name)
    path = name.split("/", 1)[1].rsplit(":", 1)[0] if "/" in name else name
    if _PLAIN_HTTP.search(message):
        return (
            f"\n  {registry} answers plain HTTP: the daemon tried again over HTTP and that "
            "failed too, but it reports only its first (HTTPS) attempt; the registry's own "
            "answer is in its log (or serve the registry over TLS)"
        )
    if _REFUSED_MANIFEST.search(message):
        return (
            f"\n  the registry refused the plugin's manifest: a Docker plugin's config has "
            f"the media type {PLUGIN_MEDIA_TYPE} (not an image's), which some registries "
            "do not accept"
        )
    if _REFUSED_ACCESS.search(message):
        if not sent_credentials:
            return (
                f"\n  no credentials for {registry} in the Docker config ({_config_file()}): "
                f"docker login {registry}"
            )
        return (
            f"\n  the credentials for {registry} from {_config_file()} were refused, or the "
            f"registry does not accept plugins (they need the token scope "
            f"repository(plugin):{path}:push and the media type {PLUGIN_MEDIA_TYPE})"
        )
    return ""


# --- several tags, several architectures ------------------------------------------------


@dataclass(frozen=True)
class _Bundle:
    path: Path
    platform: str


@dataclass(frozen=True)
class Pushed:
    """One published tag: where it came from and what the registry got."""

    name: str
    platform: str
    bundle: Path
    digest: str = ""
    size: int = 0


def _read_bundle(path: Path) -> _Bundle:
    """A bundle and its platform, checked against its own rootfs."""
    config_file = path / "config.json"
    if not config_file.is_file() or not (path / "rootfs").is_dir():
        raise EngineError(f"{path} is not a plugin bundle (config.json and rootfs/ expected)")
    config = read_config(config_file)
    try:
        found = f"linux/{rootfs_arch(path / 'rootfs', config.get('entrypoint') or [])}"
    except BundleError as exc:
        raise EngineError(str(exc)) from None
    recorded = recorded_platform(config)
    if recorded is not None and recorded != found:
        raise EngineError(
            f"{path}: config.json records {recorded} but the rootfs is for {found} "
            "(rebuild the bundle)"
        )
    return _Bundle(path, found)


def default_bundles(output: Path) -> list[Path]:
    """A project's bundles: ``output`` and ``output-<arch>`` that exist."""
    from ._platform import ARCHES

    candidates = [output, *(Path(arch_output(str(output), a)) for a in ARCHES)]
    return [p for p in candidates if (p / "config.json").is_file()]


def plan_push(
    repository: str,
    tags: Sequence[str],
    bundles: Sequence[Path],
    default_arch: str | None = None,
) -> list[Pushed]:
    """Which bundle each tag is published from, checked before anything is
    done: a tag that names an architecture (``1.0-arm64``) gets that
    architecture's bundle, any other tag ``default_arch``'s (amd64 unless
    given); every bundle's rootfs must be for the platform it records."""
    if ":" in repository.rsplit("/", 1)[-1]:
        raise EngineError(
            f"push: give the repository without a tag ({repository.rsplit(':', 1)[0]}) "
            "and the tags after push"
        )
    if not tags:
        raise EngineError("push: no tags given")
    if len(set(tags)) != len(tags):
        raise EngineError(f"push: a tag is given twice: {' '.join(tags)}")
    plain = get_arch(default_arch or DEFAULT_TAG_ARCH).name
    read = [_read_bundle(Path(p)) for p in bundles]
    if not read:
        raise EngineError("push: no bundle to publish (build one first)")
    plan = []
    for tag in tags:
        name = normalize_name(f"{repository}:{tag}")
        arch = tag_arch(tag) or plain
        platform = f"linux/{arch}"
        matching = [b for b in read if b.platform == platform]
        if not matching:
            built = ", ".join(f"{b.platform} in {b.path}" for b in read)
            why = "" if tag_arch(tag) else f" (a tag that names no architecture is {plain})"
            raise EngineError(
                f"push {name}: refused: its tag is for {platform}{why}, and no bundle is: "
                f"{built}; build it with --arch {arch}"
            )
        named = [b for b in matching if b.path.name.endswith(f"-{arch}")]
        plan.append(Pushed(name, platform, (named or matching)[0].path))
    return plan


def publish(
    engine: Engine,
    repository: str,
    tags: Sequence[str],
    bundles: Sequence[Path],
    default_arch: str | None = None,
) -> list[Pushed]:
    """Publish each tag from the bundle of its architecture: create, push,
    remove. The daemon refuses to create byte-identical content twice, so
    each created plugin gets its own ``/.plugin-ref`` file (its name) and
    the same bundle goes out under several tags. Nothing is created unless
    every tag has a bundle of its platform and no plugin of that name exists
    here (it is never replaced)."""
    plan = plan_push(repository, tags, bundles, default_arch)
    for item in plan:
        if engine.inspect(item.name) is not None:
            raise EngineError(
                f"push {item.name}: a plugin of that name exists here and would be replaced; "
                f"remove it (docker plugin rm {item.name}) or push it alone with --name"
            )
    done = []
    for item in plan:
        engine.report(
            f"{item.name} ({item.platform}) from {item.bundle}: create with /{REF_FILE} "
            "naming it, push, remove"
        )
        engine.create(item.name, item.bundle)
        try:
            digest, size = push(engine, item.name)
        except DaemonStopped as exc:
            # Nothing can be removed now; the plugin is still there when the
            # daemon is back, and the next push of this tag would refuse it.
            raise DaemonStopped(
                f"{exc}\n  {item.name}, created for this push, is still on the daemon: "
                f"remove it first (docker plugin rm {item.name})"
            ) from None
        except BaseException:
            engine.remove(item.name, force=True)
            raise
        engine.remove(item.name, force=True)
        engine.report(f"pushed {item.name}: {digest}, {size / 1e6:.1f} MB of layers")
        done.append(Pushed(item.name, item.platform, item.bundle, digest, size))
    return done


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
    if enable:
        _check_tag(engine, f"enable {local}", remote)
    privileges = _privileges(engine, remote, grant)
    with engine_errors(f"install {remote}"):
        stream = engine.api.pull_plugin(remote, privileges, local)
        _drain(f"install {remote}", stream, engine)
    try:
        if enable:
            engine.check_platform(local, engine.inspect(local) or {})
        if settings:
            engine.set(local, settings)
        if enable:
            engine.enable(local, timeout=timeout)
    except EngineError:
        engine.remove(local, force=True)
        raise
    return local


def _check_tag(engine: Engine, what: str, remote: str) -> None:
    """EngineError before anything is pulled when the tag of ``remote``
    names another architecture than the daemon's (``:1.0-arm64``)."""
    named = tag_arch(remote.rsplit(":", 1)[1])
    daemon = engine.daemon_platform()
    if named is not None and f"linux/{named}" != daemon:
        arch = daemon.rsplit("/", 1)[1]
        raise EngineError(
            f"{what}: refused: {remote} is tagged for linux/{named} and this daemon runs "
            f"{daemon} (a plugin of another architecture fails to start, and the daemon "
            f'reports only "dial unix ...: no such file or directory"); install the tag built '
            f"for {arch}: {arch_tag(remote, arch)}"
        )


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
    _check_tag(engine, f"upgrade {name}", remote)
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
