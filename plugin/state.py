"""A driver's state in one JSON file, replaced whole on every change.

A v2 plugin has no Docker socket to ask what exists: what the daemon told it
(networks, pools, addresses) is known only if the plugin wrote it down, and
it must survive a crash at any instant::

    state = StateFile("/data/state.json", version=1)
    data = state.load() or {"version": 1, "pools": {}}
    ...
    state.save(data)     # committed when it returns; raises OSError otherwise

``save`` writes a temp file in the same directory, fsyncs it, renames it
over the file and fsyncs the directory, so a crash leaves the old state or
the new one, never a torn file. Answer the daemon only after ``save``
returned: then a restart never loses what was answered. ``load`` never reads
through a symbolic link (``save`` would replace the link, not its target).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

__all__ = ["StateError", "StateFile"]

log = logging.getLogger("plugin.state")


class StateError(ValueError):
    """The state file cannot be used as it is; it is left untouched for a
    person to repair. A ValueError, so that ``python -m plugin`` reports it
    as one line (no traceback) in the daemon's log."""


class StateFile:
    """One JSON object, at ``path``, with a ``"version"`` key. Errors name
    ``owner`` ("this localvol reads version 1") and end with ``remedy``."""

    def __init__(
        self,
        path: str,
        version: int,
        *,
        owner: str = "plugin",
        remedy: str = "repair or remove it",
    ) -> None:
        self.path = os.fspath(path)
        self.version = version
        self.owner = owner
        self.remedy = remedy
        self.directory = os.path.dirname(os.path.abspath(self.path))
        # Another state file in the directory has its own temp files.
        self._tmp_prefix = f".{os.path.basename(self.path)}."

    def load(self) -> dict[str, Any] | None:
        """The committed state, or None when there is none yet. Makes the
        directory and removes what an uncommitted write left behind."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            for entry in os.listdir(self.directory):
                if entry.startswith(self._tmp_prefix) and entry.endswith(".tmp"):
                    os.unlink(os.path.join(self.directory, entry))
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise self.corrupt(f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise self.corrupt(f"not a {self.owner} state file (expected a JSON object)")
        if data.get("version") != self.version:
            raise StateError(
                f"{self.path}: unsupported state version {data.get('version')!r} (this "
                f"{self.owner} reads version {self.version}); it was left untouched"
            )
        return data

    def save(self, data: dict[str, Any]) -> None:
        """Commit ``data`` (its ``"version"`` is set). Raises OSError with
        the previous state still in place."""
        data = {**data, "version": self.version}
        tmp = os.path.join(self.directory, f"{self._tmp_prefix}{os.urandom(8).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # The rename is the commit point: a failing directory fsync is only logged.
        try:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            log.warning("fsync of %s failed: %s", self.directory, exc)

    def corrupt(self, problem: str) -> StateError:
        """The error for a state file whose content is wrong."""
        return StateError(f"{self.path}: {problem}; it was left untouched: {self.remedy}")
