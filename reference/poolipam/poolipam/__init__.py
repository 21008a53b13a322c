"""poolipam: the kit's reference IPAM plugin (pools from per-host ranges)."""

from .driver import PoolIpam

__all__ = ["PoolIpam"]
