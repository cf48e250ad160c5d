"""railwail: the generic OpenAI-style video adapter configured with railwail's catalog.

Endpoints (UNCONFIRMED for video; railwail documents no video API, see docs/providers/railwail.md):
``POST https://railwail.com/api/v1/videos``, ``GET …/videos/{id}``, ``GET …/videos/{id}/content``,
and the documented ``GET …/models/{slug}`` for credit prices.
Reference: https://railwail.com/en/docs (error codes: …/guides/error-codes, limits: …/guides/rate-limits).

railwail's envelope nuances live in its catalog: the structured ``error.code`` values it
documents (``invalid_api_key``, ``insufficient_credits``, ``rate_limit_exceeded``) decide the
error class before the status does, and a 429 without ``Retry-After`` falls back to
``X-RateLimit-Reset`` (a unix timestamp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from providers.openai_video.adapter import OpenAIVideoAdapter
from providers.railwail import catalog as rw

if TYPE_CHECKING:  # the emulator (PyAV, numpy, starlette) loads only when asked for
    from providers.railwail.emulator import RailwailEmulator


class RailwailAdapter(OpenAIVideoAdapter):
    name = "railwail"
    title = "railwail (OpenAI-compatible; video endpoint inferred, UNCONFIRMED)"
    credential_env = "RAILWAIL_API_KEY"
    default_base_url = rw.BASE_URL
    docs_url = rw.DOCS
    # OpenAI's DELETE /videos/{id} deletes a video; nothing says it stops (or refunds) a
    # running one, so we do not pretend it cancels.
    supports_idempotency = rw.SUPPORTS_IDEMPOTENCY
    adoption = rw.ADOPTION
    bills_failures = rw.BILLS_FAILURES
    poll_initial_s = rw.POLL_INITIAL_S
    poll_max_s = rw.POLL_MAX_S
    catalog = rw.CATALOG

    @classmethod
    def emulator(cls, **options: Any) -> RailwailEmulator:
        from providers.railwail.emulator import RailwailEmulator

        return RailwailEmulator(**options)
