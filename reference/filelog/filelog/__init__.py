"""filelog: container logs in rotated, compressed files on the host."""

from .driver import FileLogs

__all__ = ["FileLogs"]
