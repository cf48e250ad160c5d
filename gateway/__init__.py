"""reelgate: one provider-neutral API for video generation.

The core imports no vendor: adapters arrive as plugins (``gateway.plugins``).

The error classes and ``__version__`` load with the package; the gateway itself (httpx,
aiohttp, pydantic models) loads on first use of one of its names, so ``import gateway``
-- and ``reelgate --help`` -- stay cheap.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import (
    AmbiguousSubmit,
    AuthenticationFailed,
    BudgetExceeded,
    ConfigError,
    ContentRejected,
    DeadlineExceeded,
    GenerationFailed,
    InsufficientCredits,
    InvalidRequest,
    NoRouteAvailable,
    ProtocolError,
    ProviderError,
    ProviderRejected,
    RateLimited,
    ReelgateError,
    StorageError,
    Unavailable,
    Unsupported,
    WebhookRejected,
)

if TYPE_CHECKING:
    from gateway.api import Gateway, QuoteReport
    from gateway.config import Settings, load_settings
    from gateway.job import Attempt, AttemptOutcome, JobStatus, VideoJob
    from gateway.request import AspectRatio, Concept, ImageInput, ModelFamily, Resolution, RoutePolicy, VideoRequest
    from gateway.sync_facade import SyncGateway


def _version() -> str:
    """The installed distribution's version; from pyproject.toml in a source tree that was
    never installed."""
    try:
        return metadata.version("reelgate")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _version()

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "Gateway": "gateway.api", "QuoteReport": "gateway.api",
    "Settings": "gateway.config", "load_settings": "gateway.config",
    "Attempt": "gateway.job", "AttemptOutcome": "gateway.job", "JobStatus": "gateway.job", "VideoJob": "gateway.job",
    "AspectRatio": "gateway.request", "Concept": "gateway.request", "ImageInput": "gateway.request",
    "ModelFamily": "gateway.request", "Resolution": "gateway.request", "RoutePolicy": "gateway.request",
    "VideoRequest": "gateway.request",
    "SyncGateway": "gateway.sync_facade",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


__all__ = [
    "AmbiguousSubmit", "AspectRatio", "Attempt", "AttemptOutcome", "AuthenticationFailed", "BudgetExceeded",
    "Concept", "ConfigError", "ContentRejected", "DeadlineExceeded", "Gateway", "GenerationFailed", "ImageInput",
    "InsufficientCredits", "InvalidRequest", "JobStatus", "ModelFamily", "NoRouteAvailable", "ProtocolError",
    "ProviderError", "ProviderRejected", "QuoteReport", "RateLimited", "ReelgateError", "Resolution", "RoutePolicy",
    "Settings", "StorageError", "SyncGateway", "Unavailable", "Unsupported", "VideoJob", "VideoRequest",
    "WebhookRejected", "__version__", "load_settings",
]
