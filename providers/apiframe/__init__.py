"""apiframe.ai (API v2) provider: Luma Ray 2 / Ray Flash 2 billed in credits."""

from providers.apiframe.adapter import ApiframeAdapter

__all__ = ["ApiframeAdapter"]
