"""filelog's options: per container with ``--log-opt``, per host with
``docker plugin set`` (the defaults)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

__all__ = ["DAEMON_OPTIONS", "KNOWN", "Options", "parse_size"]

#: Options the daemon reads itself and passes on to every driver: accepted, unused.
DAEMON_OPTIONS = frozenset(
    {
        "mode",
        "max-buffer-size",
        "cache-disabled",
        "cache-max-size",
        "cache-max-file",
        "cache-compress",
    }
)
KNOWN = ("buffer-size", "compress", "max-file", "max-size")

_SIZE = re.compile(r"([0-9]{1,12})([kmg]?)b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MIN_SIZE = 1 << 10
MIN_BUFFER = 64 << 10
MAX_FILES = 100


def parse_size(text: str) -> int | None:
    """``20m`` -> 20971520 (k, m, g are powers of 1024); None if malformed."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


@dataclass(frozen=True)
class Options:
    """How one container's log is kept.

    ``max_size``: bytes of the current file before it is rotated;
    ``max_file``: files kept, the current one included (1: the current file
    is emptied when full); ``compress``: rotated files are gzipped;
    ``buffer_size``: bytes of log held in memory while the disk is slow,
    after which new lines are dropped (and counted) rather than making the
    container wait.
    """

    max_size: int = 20 << 20
    max_file: int = 5
    compress: bool = True
    buffer_size: int = 8 << 20

    def with_options(self, opts: Mapping[str, str]) -> Options:
        """These defaults overridden by ``opts`` (the ``--log-opt`` values);
        ValueError with the message the user sees."""
        changes: dict[str, object] = {}
        for key, value in sorted(opts.items()):
            if key in DAEMON_OPTIONS:
                continue
            if key == "max-size":
                changes["max_size"] = _size(key, value, MIN_SIZE)
            elif key == "buffer-size":
                changes["buffer_size"] = _size(key, value, MIN_BUFFER)
            elif key == "max-file":
                if not value.isdigit() or not 1 <= int(value) <= MAX_FILES:
                    raise ValueError(
                        f"invalid log opt max-file={value!r}: a whole number from 1 to {MAX_FILES}"
                    )
                changes["max_file"] = int(value)
            elif key == "compress":
                if value.lower() not in ("true", "false"):
                    raise ValueError(f"invalid log opt compress={value!r}: true or false")
                changes["compress"] = value.lower() == "true"
            else:
                raise ValueError(f"unknown log opt {key!r} for filelog (known: {', '.join(KNOWN)})")
        return replace(self, **changes)  # type: ignore[arg-type]


def _size(key: str, value: str, minimum: int) -> int:
    size = parse_size(value)
    if size is None:
        raise ValueError(
            f"invalid log opt {key}={value!r}: a size in bytes with an optional k, m or g "
            "suffix, e.g. 20m"
        )
    if size < minimum:
        raise ValueError(f"invalid log opt {key}={value!r}: at least {minimum // 1024}k")
    return size
