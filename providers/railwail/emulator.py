"""railwail's emulator: the generic OpenAI-Videos emulator with railwail's catalog, its
60 requests/minute paid-tier limit in ``X-RateLimit-*`` headers, and its error codes
(https://railwail.com/en/docs/guides/rate-limits, …/guides/error-codes)."""

from __future__ import annotations

from providers.openai_video.emulator import OpenAIVideoEmulator
from providers.railwail.catalog import CATALOG


class RailwailEmulator(OpenAIVideoEmulator):
    name = "railwail"
    catalog = CATALOG
    rate_limit_per_min = 60
