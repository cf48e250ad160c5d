"""A protocol library for OpenAI-Videos-shaped APIs (not a provider itself: vendors such as
railwail configure it with a catalog and register their own entry point)."""

from providers.openai_video.adapter import OpenAIVideoAdapter
from providers.openai_video.catalog import OpenAIVideoCatalog, Paths

__all__ = ["OpenAIVideoAdapter", "OpenAIVideoCatalog", "Paths"]
