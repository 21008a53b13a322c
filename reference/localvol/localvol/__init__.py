"""localvol: local directory volumes, the kit's reference volume plugin."""

from .driver import LocalVolumes

__all__ = ["LocalVolumes"]
