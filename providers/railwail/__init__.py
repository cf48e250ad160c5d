"""railwail: video through railwail's OpenAI-compatible API (video endpoint UNCONFIRMED)."""

from providers.railwail.adapter import RailwailAdapter

__all__ = ["RailwailAdapter"]
