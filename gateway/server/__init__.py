"""``reelgate serve``: the HTTP service (OpenAI-compatible /v1/videos and the native API)."""

from gateway.server.app import create_app

__all__ = ["create_app"]
