"""fal.ai provider for reelgate: adapter (``FalAdapter``), emulator and catalog."""

from providers.fal.adapter import FalAdapter

__all__ = ["FalAdapter"]
