"""The engine steps, through docker-py: create, set, enable, disable, remove,
inspect. Every daemon refusal becomes an EngineError carrying its reason."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ._errors import BundleError, EngineError
from ._platform import arch_of_platform, arch_tag, recorded_platform, rootfs_arch
from ._project import normalize_name

__all__ = ["Engine", "docker_client"]

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
            f"cannot reach the Docker daemon ({_reason(exc)}); start it (scripts/engine start) "
            "or set DOCKER_HOST"
        ) from None
    return client


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc) or type(exc).__name__


@contextmanager
def _engine_call(what: str) -> Iterator[None]:
    import docker.errors  # type: ignore[import-untyped,unused-ignore]
    import requests.exceptions

    try:
        yield
    except docker.errors.NotFound as exc:
        raise EngineError(f"{what}: {_reason(exc)}") from None
    except docker.errors.APIError as exc:
        raise EngineError(f"{what}: {_reason(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise EngineError(f"{what}: {_reason(exc)}") from None


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
            raise EngineError(f"inspect {name}: {_reason(exc)}") from None

    def create(self, name: str, bundle: Path, *, replace: bool = False) -> str:
        """``docker plugin create``; with ``replace`` an existing plugin of that
        name is removed first. Returns the plugin ID."""
        name = normalize_name(name)
        old = self._exists(name)
        if old is not None:
            if not replace:
                raise EngineError(
                    f"plugin {name} already exists (remove it, or create with --replace)"
                )
            self.report(f"removing the existing {name} ({old['Id'][:12]})")
            with _engine_call(f"remove {name}"):
                self.api.remove_plugin(name, force=True)
        with tempfile.TemporaryDirectory(prefix="dpk-ref-") as tmp:
            ref = Path(tmp) / REF_FILE
            ref.write_text(name + "\n")
            # Sent as it is packed (chunked): no temporary archive to write
            # and read back.
            body = _Stream(_pack(bundle, ref))
            self.report(f"packing {bundle}")
            with _engine_call(f"create {name}"):
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
        return str(info["Id"])

    def set(self, name: str, settings: list[str]) -> None:
        """``docker plugin set NAME KEY=VALUE ...`` (the plugin must be disabled)."""
        name = normalize_name(name)
        for item in settings:
            if "=" not in item or item.startswith("="):
                raise EngineError(f"set {name}: {item!r} must be written KEY=VALUE")
        with _engine_call(f"set {name}"):
            self.api.configure_plugin(name, settings)

    def enable(self, name: str, timeout: int = 30) -> None:
        name = normalize_name(name)
        info = self._exists(name)
        if info is None:
            raise EngineError(f"enable {name}: no such plugin")
        if info.get("Enabled"):
            self.report(f"{name} is already enabled")
            return
        self.check_platform(name, info)
        self.ensure_mount_sources(info)
        try:
            with _engine_call(f"enable {name}"):
                self.api.enable_plugin(name, timeout=timeout)
        except EngineError as exc:
            raise EngineError(f"{exc}{self._startup_hint(info)}") from None

    def disable(self, name: str, force: bool = False) -> None:
        name = normalize_name(name)
        info = self._exists(name)
        if info is None:
            raise EngineError(f"disable {name}: no such plugin")
        if not info.get("Enabled"):
            self.report(f"{name} is already disabled")
            return
        with _engine_call(f"disable {name}"):
            self.api.disable_plugin(name, force=force)

    def remove(self, name: str, force: bool = False) -> bool:
        """Remove the plugin; False if there was none."""
        name = normalize_name(name)
        if self._exists(name) is None:
            return False
        with _engine_call(f"remove {name}"):
            self.api.remove_plugin(name, force=force)
        return True

    def daemon_platform(self) -> str:
        """``linux/amd64``: what the daemon runs."""
        if self._daemon_platform is None:
            with _engine_call("version"):
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
            with _engine_call("info"):
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
            with _engine_call("info"):
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
            bind = mount.get("Type") == "bind" or "bind" in options or "rbind" in options
            if not bind or not source or not source.startswith("/") or os.path.lexists(source):
                continue
            try:
                os.makedirs(source, mode=0o700)
            except OSError as exc:
                self.report(f"cannot create the mount source {source}: {exc.strerror}")
            else:
                self.report(f"created the mount source {source} ({mount.get('Name')})")

    def _startup_hint(self, info: Mapping[str, Any]) -> str:
        plugin_id = info["Id"]
        lines = _daemon_log_lines(plugin_id)
        if lines:
            return "\n  the plugin's last output:\n    " + "\n    ".join(lines)
        return f"\n  the plugin's output is in the daemon's log: lines with plugin={plugin_id}"


_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


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


def _daemon_log_lines(plugin_id: str, limit: int = 8) -> list[str]:
    """The plugin's last lines in the daemon's log, when the log is a readable
    file here (scripts/engine writes it to /var/log/dpk-dockerd.log; the
    DPK_DOCKERD_LOG variable names another)."""
    path = os.environ.get("DPK_DOCKERD_LOG", "/var/log/dpk-dockerd.log")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 1_000_000))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    mine = [line for line in tail if f"plugin={plugin_id}" in line]
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
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while chunk := proc.stdout.read(1 << 20):
            yield chunk
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        code = proc.wait()
    if code != 0:
        raise EngineError(f"packing {bundle} failed: {err.strip()}")


def _pack_python(config: Path, rootfs: Path, ref: Path) -> Iterator[bytes]:
    import io

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        tf.add(config, "config.json")
        tf.add(rootfs, "rootfs")
        tf.add(ref, f"rootfs/{ref.name}")
    yield out.getvalue()
