"""reelgate: one provider-neutral API for video generation.

The core imports no vendor: adapters arrive as plugins (``gateway.plugins``).
"""

from gateway.api import Gateway, QuoteReport
from gateway.config import Settings, load_settings
from gateway.errors import ReelgateError
from gateway.job import Attempt, AttemptOutcome, JobStatus, VideoJob
from gateway.request import AspectRatio, Concept, ImageInput, ModelFamily, Resolution, RoutePolicy, VideoRequest
from gateway.sync_facade import SyncGateway

__all__ = [
    "AspectRatio", "Attempt", "AttemptOutcome", "Concept", "Gateway", "ImageInput", "JobStatus",
    "ModelFamily", "QuoteReport", "ReelgateError", "Resolution", "RoutePolicy", "Settings",
    "SyncGateway", "VideoJob", "VideoRequest", "load_settings",
]
