"""bridgenet: the kit's reference network plugin (a Linux bridge per network)."""

from .driver import BridgeNetworks

__all__ = ["BridgeNetworks"]
