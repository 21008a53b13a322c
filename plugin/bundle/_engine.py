"""The engine steps, through docker-py: create, set, enable, disable, remove,
inspect. Every daemon refusal becomes an EngineError carrying its reason."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ._config import is_bind_mount
from ._errors import BundleError, EngineError, engine_errors, reason
from ._platform import arch_of_platform, arch_tag, recorded_platform, rootfs_arch
from ._project import normalize_name

__all__ = ["Dropped", "Engine", "docker_client", "host_settings"]

Report = Callable[[str], None]

#: Written into each created plugin's rootfs: the daemon refuses a second
#: plugin with byte-identical content ("content ... already exists"), so each
#: name gets its own, and several tags can be created from one bundle.
REF_FILE = ".plugin-ref"


def docker_client(timeout: int = 600) -> Any:
    """A docker.DockerClient for the daemon of DOCKER_HOST (or the default
    socket), checked with a ping; EngineError if it cannot be reached."""
    import docker  # type: ignore[import-untyped,unused-ignore]

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise EngineError(
            f"cannot reach the Docker daemon ({reason(exc)}); start it (scripts/engine start) "
            "or set DOCKER_HOST"
        ) from None
    return client


class Engine:
    """The plugin lifecycle on one daemon. ``client`` is a docker.DockerClient
    (injected in tests)."""

    def __init__(self, client: Any = None, report: Report | None = None) -> None:
        self.client = client if client is not None else docker_client()
        self.report: Report = report or (lambda line: None)
        self._daemon_platform: str | None = None

    @property
    def api(self) -> Any:
        return self.client.api

    def answers(self, timeout: float = 10) -> bool:
        """Whether the daemon answers a ping now."""
        try:
            return bool(self.api.ping(timeout=timeout))
        except Exception:
            return False

    def inspect(self, name: str) -> dict[str, Any] | None:
        """The plugin's inspect document, or None if there is no such plugin."""
        return self._exists(normalize_name(name))

    def _exists(self, name: str) -> dict[str, Any] | None:
        import docker.errors  # type: ignore[import-untyped,unused-ignore]

        try:
            return dict(self.api.inspect_plugin(name))
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise EngineError(f"inspect {name}: {reason(exc)}") from None

    def create(
        self, name: str, bundle: Path, *, replace: bool = False, keep_settings: bool = True
    ) -> str:
        """``docker plugin create``; with ``replace`` an existing plugin of that
        name is removed first, and this host's settings on it (see
        ``host_settings``) are set on the new one unless ``keep_settings`` is
        false. Returns the plugin ID."""
        name = normalize_name(name)
        old = self._exists(name)
        if old is not None:
            if not replace:
                raise EngineError(
                    f"plugin {name} already exists (remove it, or create with --replace)"
                )
            self.report(f"removing the existing {name} ({old['Id'][:12]})")
            with engine_errors(f"remove {name}"):
                self.api.remove_plugin(name, force=True)
        with tempfile.TemporaryDirectory(prefix="dpk-ref-") as tmp:
            ref = Path(tmp) / REF_FILE
            ref.write_text(name + "\n")
            # Sent as it is packed (chunked): no temporary archive to write
            # and read back.
            body = _Stream(_pack(bundle, ref))
            self.report(f"packing {bundle}")
            with engine_errors(f"create {name}"):
                res = self.api._post(
                    self.api._url("/plugins/create"),
                    params={"name": name},
                    data=body,
                    headers={"Content-Type": "application/x-tar"},
                )
                self.api._raise_for_status(res)
            self.report(f"sending {body.sent / 1e6:.1f} MB to the daemon")
        info = self._exists(name)
        if info is None:
            raise EngineError(f"create {name}: the daemon accepted it but does not list it")
        if old is not None:
            self._carry_settings(name, old, info, keep_settings)
        return str(info["Id"])

    def _carry_settings(
        self, name: str, old: Mapping[str, Any], new: Mapping[str, Any], keep: bool
    ) -> None:
        carried, dropped = host_settings(old, new)
        if not keep:
            if carried or dropped:
                self.report(
                    "not keeping this host's settings (--reset-settings): "
                    + " ".join([*carried, *(d.setting for d in dropped)])
                )
            return
        for d in dropped:
            self.report(f"not kept: {d.setting} ({d.reason})")
        if carried:
            self.report("keeping this host's settings: " + " ".join(carried))
            self.set(name, carried)

    def set(self, name: str, settings: list[str]) -> None:
        """``docker plugin set NAME KEY=VALUE ...`` (the plugin must be disabled)."""
        name = normalize_name(name)
        for item in settings:
            if "=" not in item or item.startswith("="):
                raise EngineError(f"set {name}: {item!r} must be written KEY=VALUE")
        with engine_errors(f"set {name}"):
            self.api.configure_plugin(name, settings)

    def authorization_plugins(self) -> AuthzConfig:
        """Which authorization plugins the daemon uses: the list ``docker
        info`` shows, which dockerd 20.10 takes from its start (a reload does
        not update it), and, for a daemon on this host, the list in the
        daemon.json it reads."""
        try:
            info = self.client.info()
            at_start: list[str] | None = [
                str(n) for n in (info.get("Plugins") or {}).get("Authorization") or []
            ]
        except Exception:
            at_start = None
        path = daemon_config_file() if _local_daemon(self.api) else None
        in_file = None
        if path is not None:
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError):
                data = None
            if isinstance(data, dict):
                listed = data.get("authorization-plugins") or []
                in_file = [str(n) for n in listed] if isinstance(listed, list) else []
        return AuthzConfig(at_start, path, in_file)

    def enable(self, name: str, timeout: int = 30) -> dict[str, Any]:
        """``docker plugin enable``; returns the plugin's inspect document
        (as it was before)."""
        name = normalize_name(name)
        info = self._exists(name)
        if info is None:
            raise EngineError(f"enable {name}: no such plugin")
        if info.get("Enabled"):
            self.report(f"{name} is already enabled")
            return info
        self.check_platform(name, info)
        self.ensure_mount_sources(info)
        since = daemon_log_size()
        deadline = time.monotonic() + ENABLE_SETTLE
        while True:
            try:
                with engine_errors(f"enable {name}"):
                    self.api.enable_plugin(name, timeout=timeout)
                return info
            except EngineError as exc:
                error = str(exc)
            # Right after a start that failed, the daemon is still removing the
            # container of its last attempt for a moment ("id already in use");
            # it may even start the plugin itself meanwhile (it re-runs enable
            # when that attempt's process exits, with the settings of now).
            if _ID_IN_USE not in error or time.monotonic() > deadline:
                raise EngineError(self._enable_failure(name, error, info, since))
            time.sleep(0.2)
            now = self._exists(name)
            if now is not None and now.get("Enabled"):
                return now

    def disable(self, name: str, force: bool = False) -> None:
        name = normalize_name(name)
        info = self._exists(name)
        if info is None:
            raise EngineError(f"disable {name}: no such plugin")
        if not info.get("Enabled"):
            self.report(f"{name} is already disabled")
            return
        try:
            with engine_errors(f"disable {name}"):
                self.api.disable_plugin(name, force=force)
        except EngineError as exc:
            if force or _IN_USE not in str(exc):
                raise
            users, kept = _users(info)
            raise EngineError(
                f"{exc}: {users} exist. `disable --force` (docker plugin disable -f) disables it "
                f"anyway and keeps {kept}; they work again once the plugin is enabled"
            ) from None

    def remove(self, name: str, force: bool = False) -> bool:
        """Remove the plugin; False if there was none."""
        name = normalize_name(name)
        info = self._exists(name)
        if info is None:
            return False
        try:
            with engine_errors(f"remove {name}"):
                self.api.remove_plugin(name, force=force)
        except EngineError as exc:
            if force or _IN_USE not in str(exc):
                raise
            users, _ = _users(info)
            raise EngineError(
                f"{exc}: {users} exist; remove them first. `rm --force` removes the plugin "
                "anyway and leaves them without their driver"
            ) from None
        return True

    def daemon_platform(self) -> str:
        """``linux/amd64``: what the daemon runs."""
        if self._daemon_platform is None:
            with engine_errors("version"):
                version = self.api.version()
            self._daemon_platform = f"{version.get('Os', 'linux')}/{version.get('Arch', '')}"
        return self._daemon_platform

    def plugin_platform(self, info: Mapping[str, Any]) -> str | None:
        """The platform a plugin's rootfs is for: as the builder recorded it
        in its config, else read from its rootfs when the daemon is local;
        None when it cannot be told."""
        config = info.get("Config") or {}
        recorded = recorded_platform(config)
        if recorded is not None or not _local_daemon(self.api):
            return recorded
        try:
            with engine_errors("info"):
                root = self.api.info().get("DockerRootDir") or "/var/lib/docker"
            rootfs = Path(root) / "plugins" / str(info["Id"]) / "rootfs"
            return f"linux/{rootfs_arch(rootfs, config.get('Entrypoint') or [])}"
        except (BundleError, OSError, KeyError):
            return None

    def layer_bytes(self, info: Mapping[str, Any]) -> int | None:
        """The compressed size of a plugin's layers (what a push sends), from
        the daemon's content store when the daemon is local; else None."""
        if not _local_daemon(self.api):
            return None
        try:
            with engine_errors("info"):
                root = Path(self.api.info().get("DockerRootDir") or "/var/lib/docker") / "plugins"
            state = json.loads((root / str(info["Id"]) / "config.json").read_text())
            return sum(
                (root / "storage/blobs" / str(blob).replace(":", "/", 1)).stat().st_size
                for blob in state.get("Blobsums") or []
            )
        except (BundleError, OSError, KeyError, ValueError, AttributeError):
            return None

    def check_platform(self, name: str, info: Mapping[str, Any]) -> None:
        """EngineError, before the daemon is asked, when the plugin's rootfs
        is for another platform than the daemon's: it could not start, and
        the daemon would report only that its socket is missing."""
        platform = self.plugin_platform(info)
        daemon = self.daemon_platform()
        if platform is None or platform == daemon:
            return
        arch = arch_of_platform(daemon)
        raise EngineError(
            f"enable {name}: refused: the plugin is built for {platform} and this daemon runs "
            f"{daemon} (a plugin of another architecture fails to start, and the daemon reports "
            f'only "dial unix ...: no such file or directory"); install the tag built for '
            f"{arch}: {arch_tag(str(info.get('PluginReference') or name), arch)}"
        )

    def ensure_mount_sources(self, info: Mapping[str, Any]) -> None:
        """Create missing bind-mount sources when the daemon runs on this host:
        the daemon refuses to start a plugin whose mount source is missing.

        Reads ``Config.Mounts``: that is what the daemon mounts, and what
        ``docker plugin set`` changes (``Settings.Mounts`` goes stale after a
        daemon restart)."""
        if not _local_daemon(self.api):
            return
        mounts = (info.get("Config") or {}).get("Mounts")
        if mounts is None:
            mounts = (info.get("Settings") or {}).get("Mounts")
        for mount in mounts or []:
            source = mount.get("Source")
            options = mount.get("Options") or []
            bind = is_bind_mount(mount.get("Type"), options)
            if not bind or not source or not source.startswith("/") or os.path.lexists(source):
                continue
            try:
                os.makedirs(source, mode=0o700)
            except OSError as exc:
                self.report(f"cannot create the mount source {source}: {exc.strerror}")
            else:
                self.report(f"created the mount source {source} ({mount.get('Name')})")

    def _enable_failure(
        self, name: str, error: str, info: Mapping[str, Any], since: int = 0
    ) -> str:
        """Why enable failed, from the plugin's own last output when the
        daemon's log can be read here.

        A plugin that exits at start (``plugin: cannot start: ...``, such as
        a bad setting) makes the daemon run it once more, then fail enable
        after its ~12 s of dial attempts with only ``dial unix ...: no such
        file or directory``, and leave it disabled: the plugin's reason
        leads then, with the plugin's name in the ``docker plugin set`` it
        suggests."""
        plugin_id = info["Id"]
        # Only what this enable made it say, and once (each start says it again).
        lines = list(dict.fromkeys(_daemon_log_lines(plugin_id, since=since)))
        if not lines:
            return (
                f"{error}\n  the plugin's output is in the daemon's log: lines with "
                f"plugin={plugin_id}"
            )
        reasons = [line[len(_CANNOT_START) :] for line in lines if line.startswith(_CANNOT_START)]
        if reasons:
            reason = reasons[-1].replace("docker plugin set PLUGIN ", f"docker plugin set {name} ")
            daemon = error.partition(": ")[2] or error
            return (
                f"enable {name}: the plugin stopped at start: {reason}\n"
                f"  (the daemon said: {daemon})"
            )
        return f"{error}\n  the plugin's last output:\n    " + "\n    ".join(lines)


@dataclass(frozen=True)
class Dropped:
    """A host setting the new config has no place for."""

    setting: str  # as `docker plugin set` takes it: KEY=VALUE
    reason: str


def host_settings(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[list[str], list[Dropped]]:
    """This host's settings on the plugin ``old`` (an inspect document), as
    ``docker plugin set`` arguments for the plugin ``new`` made from another
    config; and those ``new`` has no settable place for.

    A host setting is what ``docker plugin set`` changed: an env value or the
    args that differ from ``old``'s own config (the daemon keeps the config's
    defaults apart from the settings), and a mount source or device path that
    differs from ``new``'s default. The daemon writes mount sources and device
    paths over the config's, so their old defaults are lost: a default changed
    between two builds is carried as if this host had set it (and printed).
    """
    old_config, new_config = old.get("Config") or {}, new.get("Config") or {}
    old_settings = old.get("Settings") or {}
    carried: list[str] = []
    dropped: list[Dropped] = []

    def carry(setting: str, items: Any, name: str, field: str) -> Mapping[str, Any] | None:
        """Carry ``setting`` if ``items`` (of the new config) has ``name``
        with ``field`` settable; else report it dropped."""
        for item in items or []:
            if item.get("Name") == name:
                if field in (item.get("Settable") or []):
                    return dict(item)
                dropped.append(Dropped(setting, "not settable in the new config"))
                return None
        dropped.append(Dropped(setting, "the new config has no such setting"))
        return None

    defaults = {e.get("Name"): e.get("Value") for e in old_config.get("Env") or []}
    for entry in old_settings.get("Env") or []:
        key, _, value = str(entry).partition("=")
        if key not in defaults or defaults[key] == value:
            continue  # not set on this host
        if carry(f"{key}={value}", new_config.get("Env"), key, "value") is not None:
            carried.append(f"{key}={value}")

    old_args = old_config.get("Args") or {}
    args = list(old_settings.get("Args") or [])
    if old_args.get("Name") and args != list(old_args.get("Value") or []):
        setting = f"{old_args['Name']}={' '.join(args)}"
        new_args = new_config.get("Args") or {}
        if carry(setting, [new_args], old_args["Name"], "value") is not None:
            carried.append(setting)

    old_linux, new_linux = old_config.get("Linux") or {}, new_config.get("Linux") or {}
    for field, old_items, new_items in (
        ("source", old_config.get("Mounts"), new_config.get("Mounts")),
        ("path", old_linux.get("Devices"), new_linux.get("Devices")),
    ):
        value_key = field.capitalize()
        for item in old_items or []:
            value = item.get(value_key)
            if field not in (item.get("Settable") or []) or value is None:
                continue
            setting = f"{item['Name']}.{field}={value}"
            target = carry(setting, new_items, item["Name"], field)
            if target is not None and target.get(value_key) != value:
                carried.append(setting)
    return carried, dropped


#: The daemon's refusal to disable or remove a plugin something still uses.
_IN_USE = "is in use"
#: What holds a reference to a plugin of each type (the daemon counts volumes,
#: networks and running loggers), and what `--force` leaves behind.
_USERS = {
    "volumedriver": ("volumes made with it", "the volumes and their data"),
    "networkdriver": ("networks made with it", "the networks"),
    "ipamdriver": ("networks using it for addresses", "the networks"),
    "logdriver": ("containers logging through it", "the containers"),
}


def _users(info: Mapping[str, Any]) -> tuple[str, str]:
    """What uses a plugin (for the daemon's "is in use"), from its types."""
    types = ((info.get("Config") or {}).get("Interface") or {}).get("Types") or []
    for kind in types:
        capability = str(kind).partition(".")[2].partition("/")[0]
        if capability in _USERS:
            return _USERS[capability]
    return ("things made with it", "them")


#: How ``python -m plugin`` says it cannot start (a bad setting, a driver
#: that cannot be made), on one line of its stderr.
_CANNOT_START = "plugin: cannot start: "
#: The daemon's answer to an enable while the container of the plugin's last
#: failed start is still being removed.
_ID_IN_USE = "id already in use"
#: How long enable retries that answer.
ENABLE_SETTLE = 10.0

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class AuthzConfig:
    """The daemon's authorization plugins, as far as they can be known."""

    #: ``docker info``'s list (None: the daemon could not be asked).
    at_start: list[str] | None
    #: The daemon.json the local daemon reads (None: not known).
    config_file: Path | None
    #: Its ``authorization-plugins`` (None: unreadable or not known).
    in_file: list[str] | None


DEFAULT_DAEMON_JSON = Path("/etc/docker/daemon.json")
DEFAULT_SOCKET = "/var/run/docker.sock"


def daemon_config_file(proc: Path = Path("/proc")) -> Path | None:
    """The daemon.json of the dockerd on this host that serves DOCKER_HOST
    (its ``--config-file``, else /etc/docker/daemon.json); None when no such
    dockerd runs here."""
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if not host.startswith("unix://"):
        return None
    wanted = os.path.realpath(host[len("unix://") :])
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "dockerd":
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        hosts = _flag_values(argv, ("-H", "--host")) or [f"unix://{DEFAULT_SOCKET}"]
        sockets = {os.path.realpath(h[len("unix://") :]) for h in hosts if h.startswith("unix://")}
        if wanted in sockets:
            files = _flag_values(argv, ("--config-file",))
            return Path(files[-1]) if files else DEFAULT_DAEMON_JSON
    return None


def _flag_values(argv: list[str], names: tuple[str, ...]) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif arg.startswith(name + "="):
                out.append(arg[len(name) + 1 :])
    return out


def _local_daemon(api: Any) -> bool:
    """Whether the daemon sees this host's filesystem (a unix socket or a
    loopback address); docker-py's base URL for a unix socket is
    ``http+docker://localhost``."""
    base = getattr(api, "base_url", None)
    if isinstance(base, str):
        return urlparse(base).hostname in _LOCAL_HOSTS
    host = os.environ.get("DOCKER_HOST", "")
    return host == "" or host.startswith("unix://")


_MSG = re.compile(r'\bmsg=("(?:[^"\\]|\\.)*"|\S*)')


def _log_message(line: str) -> str:
    """The ``msg`` of one logfmt line of the daemon (Go-quoted when needed)."""
    m = _MSG.search(line)
    if m is None:
        return line.strip()
    raw = m.group(1)
    if not raw.startswith('"'):
        return raw
    try:
        return str(json.loads(raw))
    except ValueError:  # a Go escape JSON lacks, such as \x1b
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def daemon_log() -> str:
    """The daemon's log file, when it writes one here: scripts/engine's
    /var/log/dpk-dockerd.log, or the file DPK_DOCKERD_LOG names."""
    return os.environ.get("DPK_DOCKERD_LOG", "/var/log/dpk-dockerd.log")


def daemon_log_size() -> int:
    try:
        return os.stat(daemon_log()).st_size
    except OSError:
        return 0


def _daemon_log_tail(since: int) -> list[str]:
    """The daemon log's lines from byte ``since`` on (its last megabyte at
    most); none when there is no readable log here."""
    try:
        with open(daemon_log(), "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            if since > end:
                since = 0  # the log was rotated or truncated
            f.seek(max(since, end - 1_000_000))
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def daemon_log_panic(since: int) -> str | None:
    """The first ``panic: ...`` line the daemon wrote from byte ``since`` on
    (a Go runtime panic: the daemon died of it)."""
    return next((line for line in _daemon_log_tail(since) if line.startswith("panic: ")), None)


def _daemon_log_lines(plugin_id: str, limit: int = 8, since: int = 0) -> list[str]:
    """The plugin's last lines in the daemon's log (from byte ``since`` on),
    when the log is a readable file here (scripts/engine writes it to
    /var/log/dpk-dockerd.log; the DPK_DOCKERD_LOG variable names another)."""
    mine = [line for line in _daemon_log_tail(since) if f"plugin={plugin_id}" in line]
    return [_log_message(line) for line in mine[-limit:]]


class _Stream:
    """A request body produced while it is sent: requests iterates it (a
    chunked upload); ``read()`` is there for file-like consumers."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        if self._buffer:
            chunk, self._buffer = self._buffer, b""
            yield chunk
        for chunk in self._chunks:
            self.sent += len(chunk)
            yield chunk

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self.sent += len(chunk)
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _pack(bundle: Path, ref: Path) -> Iterator[bytes]:
    """Tar the bundle (config.json + rootfs/) plus the ref file, as chunks;
    EngineError at once if ``bundle`` is not a bundle."""
    config = bundle / "config.json"
    rootfs = bundle / "rootfs"
    if not config.is_file() or not rootfs.is_dir():
        raise EngineError(f"{bundle} is not a plugin bundle (config.json and rootfs/ expected)")
    tar = shutil.which("tar")
    if tar is None:
        return _pack_python(config, rootfs, ref)
    return _pack_tar(tar, bundle, ref)


def _pack_tar(tar: str, bundle: Path, ref: Path) -> Iterator[bytes]:
    import subprocess

    # tar's messages go to a file, not a pipe: a pipe nobody reads until tar
    # ends would stop tar (and this build) once it holds 64 KiB of warnings.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [
                tar,
                "-c",
                "-f",
                "-",
                "--numeric-owner",
                "-C",
                str(bundle),
                "config.json",
                "rootfs",
                "--transform",
                f"s,^\\{ref.name}$,rootfs/{ref.name},",
                "-C",
                str(ref.parent),
                ref.name,
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(1 << 20):
                yield chunk
        finally:
            proc.stdout.close()
            code = proc.wait()
        errors.seek(0)
        err = errors.read().decode(errors="replace")
    if code != 0:
        raise EngineError(f"packing {bundle} failed: {err.strip()[-2000:]}")


def _pack_python(config: Path, rootfs: Path, ref: Path) -> Iterator[bytes]:
    """The bundle as a tar stream made by tarfile (no tar on this host): made
    in a thread and handed over in pieces, never whole in memory."""
    import queue
    import threading

    pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
    stop = threading.Event()

    class Pipe:
        def write(self, data: bytes) -> int:
            if stop.is_set():
                raise OSError("the reader went away")
            pieces.put(bytes(data))
            return len(data)

    def make() -> None:
        try:
            pipe: Any = Pipe()  # write() is all a stream ("w|") needs
            with tarfile.open(fileobj=pipe, mode="w|", format=tarfile.GNU_FORMAT) as tf:
                tf.add(config, "config.json")
                tf.add(rootfs, "rootfs")
                tf.add(ref, f"rootfs/{ref.name}")
        except BaseException as exc:
            pieces.put(exc)
        else:
            pieces.put(None)

    worker = threading.Thread(target=make, name="pack-bundle", daemon=True)
    worker.start()
    try:
        while (piece := pieces.get()) is not None:
            if isinstance(piece, BaseException):
                raise EngineError(f"packing {rootfs.parent} failed: {piece}") from None
            yield piece
    finally:
        stop.set()
        while worker.is_alive():  # let it see the stop, if it waits to put
            with suppress(queue.Empty):
                pieces.get(timeout=0.1)
        worker.join()
