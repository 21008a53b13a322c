"""localvol: the reference volume plugin, one directory per volume on the host.

Everything lives under the data directory (``/data`` in the plugin, the host's
``data.source``, ``/var/lib/docker-localvol`` unless set otherwise)::

    state.json              the commit point: volumes, their options, mount IDs
    volumes/<name>/         the data of each volume
    trash/<hex>/<name>/     removals in flight (<hex> keeps names within
                            NAME_MAX, which <name>.<hex> would not for long names)

``state.json`` is only ever replaced whole (``plugin.state``), so a crash
leaves the old state or the new one, never a torn file. Each change first puts
the disk in a shape that start-up recovery understands, then commits:

* Create makes ``volumes/<name>``, applies its owner and mode, then commits. A
  crash before the commit leaves an empty directory, which start-up removes.
* Remove renames ``volumes/<name>`` into ``trash/``, commits, then deletes the
  trash. Before the commit, start-up renames it back; after, it finishes the job.
* Mount bind-mounts ``volumes/<name>`` onto ``<propagated mount>/<name>`` (the
  daemon sees mounts made there), then commits the mount ID. Unmount commits
  first and unmounts after the last reference is gone.

Recovery (at construction, so ``python -m plugin`` fails fast on a bad state)
never deletes a directory that holds data unless its removal was asked for: a
directory that state.json does not know is adopted as a volume.

Nothing below the data directory and the mount directory is reached through a
symbolic link: names are plain path components (checked), and every step opens
``volumes/``, ``trash/`` and ``<name>`` with ``O_NOFOLLOW`` and works on the
file descriptors (chown, chmod, rename, delete, and the bind mount's source and
target), so a link swapped in by someone else fails the call instead of
sending a chmod, a deletion or a mount to the host's ``/``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plugin import Mount, PluginError, settings
from plugin.manifest import propagated_mount_path
from plugin.state import StateError, StateFile
from plugin.volume import (
    CreateRequest,
    GetRequest,
    GetResponse,
    ListResponse,
    MountRefs,
    MountRequest,
    MountResponse,
    PathRequest,
    PathResponse,
    RemoveRequest,
    UnmountRequest,
    Volume,
    VolumeDriver,
)

if TYPE_CHECKING:
    import ctypes

# shutil (removals) and ctypes (mounts) are imported when first needed: a
# plugin that only answers the daemon's queries never loads them.

__all__ = ["DATA", "PAUSE_ENV", "LocalVolSettings", "LocalVolumes", "StateError"]

log = logging.getLogger("localvol")

DATA = Mount(
    "data",
    destination="/data",
    source="/var/lib/docker-localvol",
    description="host directory holding the volumes (docker plugin set PLUGIN data.source=/path)",
)

STATE_VERSION = 1
MAX_NAME = 255
#: chown(2) reads (uid_t)-1 as "leave unchanged", so the largest usable ID is one less.
MAX_ID = 4294967294
DEFAULT_MODE = 0o755
#: How long Remove waits for the deletion of a volume's data before it answers
#: anyway (the removal is committed; the deletion goes on in the background and
#: start-up recovery finishes it after a crash): the daemon gives Remove 1 min.
PURGE_WAIT = 20.0
#: How long a change waits for the one before it: less than the shortest
#: per-call deadline (Remove and Unmount, 1 min), so that a stuck change makes
#: the others fail clearly instead of piling up behind it.
LOCK_WAIT = 45.0

#: Test hook, off unless this variable is set to a non-empty value other than
#: "0" when the driver is made (it is not in config.json: fault tests add it to
#: a copy of the bundle's). Then a file ``<data dir>/pause-create`` (or
#: ``pause-mount``) holding a volume's name arms one pause of that call for
#: that volume, half-way: after the directory (the bind mount) is made, before
#: the commit. The call renames the file to ``paused-<call>`` and waits until
#: it is deleted, at most PAUSE_MAX seconds. Tests kill the plugin there.
PAUSE_ENV = "LOCALVOL_TEST_PAUSE"
PAUSE_MAX = 600.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DECIMAL = re.compile(r"[0-9]{1,10}")
_OCTAL = re.compile(r"[0-7]{1,5}")
_VOLUMES = "volumes"
_TRASH = "trash"

# A directory below a root, never through a symbolic link (ELOOP if it is one).
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The same, for fstat, fstatvfs and /proc/self/fd/N only (no read permission needed).
_NOFOLLOW_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_LINK_IN_THE_WAY = "a symbolic link is in the way (localvol never follows one)"

# <sys/mount.h>
MS_BIND = 4096
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8


@dataclass(frozen=True)
class _Volume:
    created_at: datetime.datetime
    #: Normalized (``mode`` as four octal digits, IDs without leading zeros).
    options: dict[str, str]


class LocalVolSettings(settings.Settings):
    """Per host, with ``docker plugin set PLUGIN MIN_FREE=2g`` (disabled)."""

    min_free = settings.size(
        "0",
        "Create refuses a new volume while the data directory has less free space than "
        "this (0: no limit)",
    )


class LocalVolumes(VolumeDriver):
    """Volumes that are directories on the host.

    Install the plugin and create volumes with its options::

        docker plugin install --alias localvol IMAGE data.source=/srv/volumes
        docker volume create -d localvol -o uid=1000 -o mode=0750 NAME

    Options: ``uid`` and ``gid`` (decimal) set the owner of the volume's
    directory, ``mode`` (octal, default ``0755``) its permissions. Each mount
    is a bind mount of the volume's directory under the propagated mount.
    Per host (``LocalVolSettings``): ``MIN_FREE``, the free space below
    which no new volume is made.

    ``LocalVolumes()`` serves the plugin's own directories; tests and legacy
    plugins pass ``data_dir``, ``mount_dir`` and ``bind=False`` (the mountpoint
    is then the data directory itself and nothing is mounted).
    """

    mounts = (DATA,)
    propagated_mount = "/mnt/volumes"
    linux_capabilities = ("CAP_SYS_ADMIN",)  # bind-mounting into the propagated mount
    scope = "local"
    settings = LocalVolSettings

    def __init__(
        self,
        data_dir: str | None = None,
        mount_dir: str | None = None,
        *,
        bind: bool = True,
        config: LocalVolSettings | None = None,
    ) -> None:
        self.config = config or LocalVolSettings.from_env()
        # As a host service, the unit names the host directories instead.
        self.data_dir = os.fspath(data_dir or DATA.path())
        self.mount_dir = os.fspath(mount_dir or propagated_mount_path(self.propagated_mount))
        self.bind = bind
        self._volumes_dir = os.path.join(self.data_dir, _VOLUMES)
        self._trash_dir = os.path.join(self.data_dir, _TRASH)
        # Read once, at construction: a damaged file stops the start (StateError).
        self.state = StateFile(
            os.path.join(self.data_dir, "state.json"),
            STATE_VERSION,
            owner="localvol",
            remedy=f"repair it, or move it aside to adopt every directory in "
            f"{self._volumes_dir} as a volume",
        )
        self._pause = os.environ.get(PAUSE_ENV, "") not in ("", "0")
        # Every change, and the state.json write that commits it, happens under
        # this lock. Readers (get, list, path) take no lock: _vols is replaced,
        # never changed in place.
        self._lock = threading.Lock()
        self._vols: dict[str, _Volume] = {}
        # Every mount not unmounted yet (state.json keeps them across
        # restarts), and those of them made by this process: only the second
        # can stop a Remove (see remove).
        self._refs = MountRefs()
        self._live = MountRefs()
        with self._lock:
            self._recover()

    # --- the volume driver ------------------------------------------------------

    def create(self, req: CreateRequest) -> None:
        name = req.name
        _check_name(name)
        options = _parse_options(req.options)
        with self._changing():
            existing = self._vols.get(name)
            if existing is not None:
                if existing.options == options:
                    return  # the daemon may retry a create
                raise PluginError(f"volume {_q(name)} already exists with different options")
            vols = {**self._vols, name: _Volume(_now(), options)}
            try:
                with self._open(_VOLUMES) as vdir:
                    self._check_free(name, vdir)
                    made = False
                    try:
                        os.mkdir(name, 0o700, dir_fd=vdir)  # opened up by _apply_options
                        made = True
                    except FileExistsError:
                        # An orphan of a create that did not commit: reuse it.
                        st = os.stat(name, dir_fd=vdir, follow_symlinks=False)
                        if not stat.S_ISDIR(st.st_mode):
                            raise PluginError(
                                f"cannot create volume {_q(name)}: {self._dir(name)} exists "
                                "and is not a directory"
                            ) from None
                    try:
                        _apply_options(vdir, name, options)
                        self._pause_point("create", name)
                        self._save(vols)
                    except OSError:
                        if made:
                            _try(os.rmdir, name, dir_fd=vdir)
                        raise
            except OSError as exc:
                log.error("cannot create volume %r: %s", name, exc)
                raise PluginError(f"cannot create volume {_q(name)}: {_reason(exc)}") from None
            self._vols = vols
        log.info("created volume %r %s", name, options)

    def _check_free(self, name: str, vdir: int) -> None:
        if not self.config.min_free:
            return
        vfs = os.fstatvfs(vdir)
        free = vfs.f_bavail * vfs.f_frsize
        if free < self.config.min_free:
            raise PluginError(
                f"cannot create volume {_q(name)}: {_human(free)} free in the data directory, "
                f"less than MIN_FREE ({_human(self.config.min_free)})"
            )

    def remove(self, req: RemoveRequest) -> None:
        """Remove a volume, unless this plugin process has mounted it and not
        unmounted it since, as Docker's ``local`` driver refuses ("volume has
        active mounts").

        Mounts recorded in state.json by an earlier process are not counted:
        the plugin tells them apart because only mounts answered by this
        process are counted in ``_live`` (the daemon, restarted too, may never
        unmount the others; it removes only volumes it sees unused).
        """
        name = req.name
        with self._changing():
            if name not in self._vols:
                raise _no_such(name)
            active = self._live.count(name)
            if active:
                raise PluginError(
                    f"cannot remove volume {_q(name)}: volume has active mounts ({active} "
                    "since the plugin started; they must be unmounted first)"
                )
            vols = {k: v for k, v in self._vols.items() if k != name}
            holder = os.urandom(16).hex()
            moved = True
            try:
                with self._open(_VOLUMES) as vdir, self._open(_TRASH) as tdir:
                    os.mkdir(holder, 0o700, dir_fd=tdir)
                    hdir = _open_dir(holder, tdir)
                    try:
                        try:
                            os.rename(name, name, src_dir_fd=vdir, dst_dir_fd=hdir)
                        except OSError as exc:
                            _try(os.rmdir, holder, dir_fd=tdir)
                            if not isinstance(exc, FileNotFoundError):
                                raise
                            moved = False  # the data is gone already; forget the volume
                        try:
                            self._save(vols)
                        except OSError:
                            if moved:
                                # If this fails too, start-up recovery renames it back.
                                _try(os.rename, name, name, src_dir_fd=hdir, dst_dir_fd=vdir)
                                _try(os.rmdir, holder, dir_fd=tdir)
                            raise
                    finally:
                        os.close(hdir)
            except OSError as exc:
                log.error("cannot remove volume %r: %s", name, exc)
                raise PluginError(f"cannot remove volume {_q(name)}: {_reason(exc)}") from None
            self._vols = vols
            self._refs.forget(name)
            self._live.forget(name)
            if self.bind:
                # The daemon removes only unused volumes: a mount left here is
                # stale (recorded before a restart). Committed already, so a
                # failure is only logged; a later Mount of the name replaces it.
                try:
                    self._unbind(name)
                except PluginError as exc:
                    log.error("%s", exc)
        if moved:
            self._purge_trash(name, holder)
        log.info("removed volume %r", name)

    def mount(self, req: MountRequest) -> MountResponse:
        name = req.name
        with self._changing():
            if name not in self._vols:
                raise _no_such(name)
            held = self._refs.held(name)
            if self.bind:
                # Also on a repeated ID: re-binds what a failed start-up left unmounted.
                self._ensure_bound(name)
            try:
                self._pause_point("mount", name)
                self._save(self._vols, (name, [*held, req.id]))
            except OSError as exc:
                log.error("cannot mount volume %r: %s", name, exc)
                if self.bind and not held:
                    try:
                        self._unbind(name)
                    except PluginError as undo:
                        log.error("%s", undo)
                raise PluginError(f"cannot mount volume {_q(name)}: {_reason(exc)}") from None
            self._refs.add(name, req.id)
            self._live.add(name, req.id)
        return MountResponse(self._mountpoint(name))

    def unmount(self, req: UnmountRequest) -> None:
        name = req.name
        with self._changing():
            if name not in self._vols:
                raise _no_such(name)
            held = self._refs.held(name)
            if req.id not in held:
                return  # not ours to count (e.g. a mount whose commit failed)
            rest = list(held)
            rest.remove(req.id)  # one reference: the daemon unmounts once per mount
            try:
                self._save(self._vols, (name, rest))
            except OSError as exc:
                log.error("cannot unmount volume %r: %s", name, exc)
                raise PluginError(f"cannot unmount volume {_q(name)}: {_reason(exc)}") from None
            last = self._refs.discard(name, req.id)
            self._live.discard(name, req.id)
            if last and self.bind:
                self._unbind(name)

    def path(self, req: PathRequest) -> PathResponse:
        if req.name not in self._vols:
            raise _no_such(req.name)
        return PathResponse(self._current_mountpoint(req.name) or "")

    def get(self, req: GetRequest) -> GetResponse:
        name = req.name
        vol = self._vols.get(name)
        if vol is None:
            raise _no_such(name)  # the daemon relies on this failing
        return GetResponse(
            Volume(
                name,
                mountpoint=self._current_mountpoint(name),
                created_at=vol.created_at,
                status=self._status(name, vol),
            )
        )

    def list(self) -> ListResponse:
        vols = self._vols
        return ListResponse(
            [Volume(name, mountpoint=self._current_mountpoint(name)) for name in sorted(vols)]
        )

    # --- paths and status ---------------------------------------------------------

    def _dir(self, name: str) -> str:
        return os.path.join(self._volumes_dir, name)

    def _target(self, name: str) -> str:
        return os.path.join(self.mount_dir, name)

    def _mountpoint(self, name: str) -> str:
        return self._target(name) if self.bind else self._dir(name)

    def _current_mountpoint(self, name: str) -> str | None:
        return self._mountpoint(name) if self._refs.count(name) else None

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """The lock every change holds, waited for LOCK_WAIT seconds at most."""
        if not self._lock.acquire(timeout=LOCK_WAIT):
            raise PluginError(
                f"the plugin is busy: another change has been running for over {LOCK_WAIT:g} s "
                "(see the plugin's log); try again"
            )
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _open(self, sub: str) -> Iterator[int]:
        """A descriptor of ``volumes/`` or ``trash/``: the data directory is
        the root the administrator chose, what is below it is never a link."""
        root = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = _open_dir(sub, root)
        finally:
            os.close(root)
        try:
            yield fd
        finally:
            os.close(fd)

    def _status(self, name: str, vol: _Volume) -> dict[str, Any]:
        # Get runs on every daemon lookup: stat and statvfs only, no walk.
        status: dict[str, Any] = {"options": dict(vol.options), "mounts": self._refs.count(name)}
        try:
            with self._open(_VOLUMES) as vdir:
                fd = _open_dir(name, vdir, _NOFOLLOW_PATH)
                try:
                    st = os.fstat(fd)
                    vfs = os.fstatvfs(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            # Never fail Get for a known volume: the daemon would forget it.
            status["error"] = _reason(exc)
            return status
        status["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
        status["uid"] = st.st_uid
        status["gid"] = st.st_gid
        status["free"] = _human(vfs.f_bavail * vfs.f_frsize)
        return status

    def _pause_point(self, op: str, name: str) -> None:
        """The fault tests' hook (see PAUSE_ENV); nothing unless switched on."""
        if not self._pause:
            return
        armed = os.path.join(self.data_dir, f"pause-{op}")
        try:
            with open(armed, encoding="utf-8") as f:
                if f.read().strip() != name:
                    return
        except OSError:
            return
        marker = os.path.join(self.data_dir, f"paused-{op}")
        os.rename(armed, marker)  # one pause per arming
        log.warning("test hook: %s of %r paused until %s is deleted", op, name, marker)
        deadline = time.monotonic() + PAUSE_MAX
        while os.path.lexists(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        log.warning("test hook: %s of %r goes on", op, name)

    # --- state.json -----------------------------------------------------------------

    def _save(
        self, vols: Mapping[str, _Volume], mounts: tuple[str, Sequence[str]] | None = None
    ) -> None:
        """Commit ``vols`` with the current mount IDs, or ``mounts`` (name, IDs)
        for one volume. Raises OSError, with nothing changed in memory."""
        volumes: dict[str, Any] = {}
        for name in sorted(vols):
            ids = mounts[1] if mounts and mounts[0] == name else self._refs.held(name)
            volumes[name] = {
                "created_at": _rfc3339(vols[name].created_at),
                "options": vols[name].options,
                "mounts": sorted(ids),
            }
        self.state.save({"volumes": volumes})

    def _load(self) -> tuple[dict[str, _Volume], dict[str, Sequence[str]]] | None:
        """The committed state, or None when there is no state.json yet."""
        data = self.state.load()
        if data is None:
            return None
        entries = data.get("volumes")
        if not isinstance(entries, dict):
            raise self.state.corrupt('"volumes" must be an object')
        vols: dict[str, _Volume] = {}
        refs: dict[str, Sequence[str]] = {}
        for name, entry in entries.items():
            try:
                _check_name(name)
                if not isinstance(entry, dict):
                    raise PluginError("expected an object")
                created = _parse_time(entry.get("created_at"))
                options = entry.get("options")
                if not isinstance(options, dict) or not all(
                    isinstance(v, str) for v in options.values()
                ):
                    raise PluginError('"options" must be an object of strings')
                mounts = entry.get("mounts", [])
                if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
                    raise PluginError('"mounts" must be an array of strings')
                vols[name] = _Volume(created, _parse_options(options))
                refs[name] = list(mounts)
            except PluginError as exc:
                raise self.state.corrupt(f"volume {_q(name)}: {exc}") from None
        return vols, refs

    # --- removal of the data ------------------------------------------------------------

    def _purge_trash(self, name: str, holder: str) -> None:
        """Delete ``trash/<holder>`` (a committed removal of ``name``); a huge
        volume goes on being deleted in the background after PURGE_WAIT."""

        def purge() -> None:
            import shutil

            try:
                with self._open(_TRASH) as tdir:
                    shutil.rmtree(holder, dir_fd=tdir)
            except OSError as exc:
                log.warning(
                    "volume %r removed; deleting %s failed (%s), retried at start-up",
                    name,
                    os.path.join(self._trash_dir, holder),
                    exc,
                )

        worker = threading.Thread(target=purge, name=f"purge-{holder[:8]}", daemon=True)
        worker.start()
        worker.join(PURGE_WAIT)
        if worker.is_alive():
            log.warning(
                "volume %r removed; its data is still being deleted in the background", name
            )

    # --- recovery ---------------------------------------------------------------------

    def _recover(self) -> None:
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            for path in (self._volumes_dir, self._trash_dir):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise StateError(
                        f"{path} is not a directory (localvol never follows a symbolic link "
                        f"below {self.data_dir}): replace it with a directory"
                    )
            loaded = self._load()
            with self._open(_VOLUMES) as vdir, self._open(_TRASH) as tdir:
                self._reconcile(loaded, vdir, tdir)
        except OSError as exc:
            raise StateError(f"cannot recover the volumes in {self.data_dir}: {exc}") from None
        if self.bind:
            for name in sorted(self._vols):
                if self._refs.count(name):
                    # Still in use by containers when the plugin stopped.
                    try:
                        self._ensure_bound(name)
                    except PluginError as exc:
                        log.error("%s (retried on the next mount)", exc)

    def _reconcile(
        self,
        loaded: tuple[dict[str, _Volume], dict[str, Sequence[str]]] | None,
        vdir: int,
        tdir: int,
    ) -> None:
        vols, refs = loaded if loaded is not None else ({}, {})
        changed = False
        on_disk: set[str] = set()
        with os.scandir(vdir) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and _valid_name(entry.name):
                    on_disk.add(entry.name)
                else:
                    log.warning(
                        "ignoring %s: not a directory with a volume name", self._dir(entry.name)
                    )
        # trash/<hex>/<name>, by name; anything else there is an unfinished purge.
        trash: dict[str, list[str]] = {}
        with os.scandir(tdir) as entries:
            for entry in entries:
                is_dir = entry.is_dir(follow_symlinks=False)
                inside = _listdir_at(tdir, entry.name) if is_dir else []
                if len(inside) == 1:
                    trash.setdefault(inside[0], []).append(entry.name)
                else:
                    self._purge(tdir, entry.name)  # a Remove that stopped before its rename

        for name, vol in vols.items():
            leftovers = trash.pop(name, [])
            if name not in on_disk:
                if leftovers:
                    # A Remove that did not commit; the newest rename is its own.
                    def renamed_at(holder: str, name: str = name) -> int:
                        hdir = _open_dir(holder, tdir)
                        try:
                            return os.stat(name, dir_fd=hdir, follow_symlinks=False).st_ctime_ns
                        finally:
                            os.close(hdir)

                    newest = max(leftovers, key=renamed_at)
                    leftovers.remove(newest)
                    hdir = _open_dir(newest, tdir)
                    try:
                        os.rename(name, name, src_dir_fd=hdir, dst_dir_fd=vdir)
                    finally:
                        os.close(hdir)
                    os.rmdir(newest, dir_fd=tdir)
                    log.warning(
                        "volume %r: restored from %s (a removal did not complete)",
                        name,
                        os.path.join(self._trash_dir, newest),
                    )
                else:
                    if os.path.lexists(self._dir(name)):
                        raise StateError(
                            f"volume {_q(name)}: {self._dir(name)} is not a directory (localvol "
                            "never follows a symbolic link): replace it with the volume's "
                            "directory, or move it aside to start the volume empty"
                        )
                    os.mkdir(name, 0o700, dir_fd=vdir)
                    _apply_options(vdir, name, vol.options)
                    log.warning("volume %r: its directory was missing; recreated empty", name)
            for holder in leftovers:
                self._purge(tdir, holder)  # earlier, committed removals of the same name

        for name in sorted(on_disk - vols.keys()):
            path = self._dir(name)
            if loaded is not None and not _listdir_at(vdir, name):
                os.rmdir(name, dir_fd=vdir)
                log.info("removed %s: empty, left by a create that did not complete", path)
            else:
                vols[name] = _Volume(_now(), {})
                changed = True
                if loaded is None:
                    log.info("no %s: adopting %s as volume %r", self.state.path, path, name)
                else:
                    log.warning(
                        "adopting %s as volume %r: it holds data unknown to %s",
                        path,
                        name,
                        self.state.path,
                    )

        for holders in trash.values():
            for holder in holders:
                self._purge(tdir, holder)  # committed removals

        self._vols = vols
        self._refs = MountRefs(refs)
        if changed or loaded is None:
            self._save(vols)

    def _purge(self, tdir: int, entry: str) -> None:
        path = os.path.join(self._trash_dir, entry)
        try:
            if stat.S_ISDIR(os.stat(entry, dir_fd=tdir, follow_symlinks=False).st_mode):
                import shutil

                shutil.rmtree(entry, dir_fd=tdir)
            else:
                os.unlink(entry, dir_fd=tdir)  # a link is deleted, never followed
        except OSError as exc:
            log.warning("cannot delete %s (a removed volume): %s", path, exc)
        else:
            log.info("deleted %s (a removed volume)", path)

    # --- bind mounts -------------------------------------------------------------------

    def _ensure_bound(self, name: str) -> None:
        dst = self._target(name)
        try:
            with self._open(_VOLUMES) as vdir:
                src = _open_dir(name, vdir, _NOFOLLOW_PATH)
            try:
                os.makedirs(self.mount_dir, exist_ok=True)
                mdir = os.open(self.mount_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    if self._target_ready(mdir, name, os.fstat(src)):
                        return
                    target = _open_dir(name, mdir, _NOFOLLOW_PATH)
                    try:
                        # Both ends by descriptor: what was checked is what is mounted.
                        _bind_mount(f"/proc/self/fd/{src}", f"/proc/self/fd/{target}", dst)
                    finally:
                        os.close(target)
                finally:
                    os.close(mdir)
            finally:
                os.close(src)
        except OSError as exc:
            raise PluginError(f"cannot mount volume {_q(name)}: {_reason(exc)}") from None
        log.info("mounted volume %r on %s", name, dst)

    def _target_ready(self, mdir: int, name: str, src: os.stat_result) -> bool:
        """True when the volume is bound on ``mount_dir/<name>`` already;
        otherwise leave an empty directory there to mount onto."""
        try:
            t = os.stat(name, dir_fd=mdir, follow_symlinks=False)
        except FileNotFoundError:
            os.mkdir(name, dir_fd=mdir)
            return False
        if not stat.S_ISDIR(t.st_mode):
            os.unlink(name, dir_fd=mdir)  # a link or a file: never mount through it
            os.mkdir(name, dir_fd=mdir)
            return False
        # A bind mount shows the source's inode. (os.path.ismount cannot
        # tell: source and target may sit on the same filesystem.)
        if (src.st_dev, src.st_ino) == (t.st_dev, t.st_ino):
            return True
        _detach(self._target(name))  # a stale mount, e.g. of a volume removed since
        return False

    def _unbind(self, name: str) -> None:
        dst = self._target(name)
        try:
            if stat.S_ISDIR(os.lstat(dst).st_mode):
                _detach(dst)
                os.rmdir(dst)
            else:
                os.unlink(dst)  # not something this driver made
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PluginError(f"cannot unmount volume {_q(name)}: {_reason(exc)}") from None


# --- helpers ---------------------------------------------------------------------------


def _q(text: str) -> str:
    """Quote a user-supplied string for a message: escaped, and cut when long."""
    return json.dumps(text if len(text) <= 64 else text[:64] + "...", ensure_ascii=False)


def _no_such(name: str) -> PluginError:
    return PluginError(f"no such volume: {_q(name)}")


def _valid_name(name: str) -> bool:
    # ASCII only (no lookalikes), so characters are bytes.
    return _NAME.fullmatch(name) is not None and len(name) <= MAX_NAME


def _check_name(name: str) -> None:
    # The name becomes a path component: this also refuses "..", "/", NUL.
    if not _valid_name(name):
        raise PluginError(
            f"invalid volume name {_q(name)}: use letters, digits, '_', '.', '-', "
            f"starting with a letter or digit (at most {MAX_NAME} characters)"
        )


def _parse_options(opts: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(opts):
        value = opts[key]
        if key in ("uid", "gid"):
            if not _DECIMAL.fullmatch(value) or int(value) > MAX_ID:
                raise PluginError(
                    f"invalid value for option {_q(key)}: {_q(value)} "
                    f"(expected a decimal number from 0 to {MAX_ID})"
                )
            out[key] = str(int(value))
        elif key == "mode":
            if not _OCTAL.fullmatch(value) or int(value, 8) > 0o7777:
                raise PluginError(
                    f'invalid value for option "mode": {_q(value)} '
                    f"(expected octal permissions from 0000 to 7777, such as 0750)"
                )
            out[key] = f"{int(value, 8):04o}"
        else:
            raise PluginError(f"unknown option {_q(key)} (supported: gid, mode, uid)")
    return out


def _open_dir(name: str, dir_fd: int, flags: int = _NOFOLLOW_DIR) -> int:
    """Open the directory ``name`` in ``dir_fd``; a symbolic link there fails
    (ELOOP, with a message saying so)."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        try:
            link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        if link:
            raise OSError(errno.ELOOP, _LINK_IN_THE_WAY, name) from None
        raise


def _listdir_at(dir_fd: int, name: str) -> list[str]:
    fd = _open_dir(name, dir_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _apply_options(dir_fd: int, name: str, options: Mapping[str, str]) -> None:
    uid, gid = int(options.get("uid", -1)), int(options.get("gid", -1))
    # On a descriptor: a link swapped in since mkdir gets neither chown nor chmod.
    fd = _open_dir(name, dir_fd)
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        # After chown, which clears set-ID bits.
        os.fchmod(fd, int(options.get("mode", f"{DEFAULT_MODE:o}"), 8))
    finally:
        os.close(fd)


def _try(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Undo a step on an error path: a second failure is logged, not raised."""
    try:
        fn(*args, **kwargs)
    except OSError as exc:
        log.error("%s%s failed: %s", fn.__name__, args, exc)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _rfc3339(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith("Z") else value
        try:
            parsed = datetime.datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            return parsed
    raise PluginError(f'"created_at" must be an RFC 3339 time, got {value!r:.40}')


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


@functools.cache
def _libc() -> ctypes.CDLL:
    # The running interpreter's own C library (glibc or musl alike).
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    return libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _bind_mount(src: str, dst: str, shown: str | None = None) -> None:
    """Bind ``src`` onto ``dst`` (both may be /proc/self/fd/N); ``shown`` names
    the target in errors."""
    if _libc().mount(os.fsencode(src), os.fsencode(dst), None, MS_BIND, None) != 0:
        err = _errno()
        raise OSError(err, os.strerror(err), shown or dst)


def _detach(dst: str) -> None:
    """Lazily unmount everything stacked on ``dst``; nothing mounted is fine."""
    for _ in range(16):
        if _libc().umount2(os.fsencode(dst), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
            err = _errno()
            if err == errno.EINVAL:  # not (or no longer) a mount point
                return
            raise OSError(err, os.strerror(err), dst)
