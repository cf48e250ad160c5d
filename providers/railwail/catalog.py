"""railwail's data: endpoints, model ids, capabilities, credits and latency priors.

railwail documents an OpenAI-compatible API (base URL, Bearer keys, OpenAI error
envelope, ``X-RateLimit-*`` headers, a model catalogue with ``pricing.credit_cost_fixed``)
but **no video endpoint**. Everything video-specific below is our best inference (the
OpenAI Videos shape at railwail's base URL) and is marked UNCONFIRMED; each such item can
be overridden through ``ProviderSettings.options`` (listed in docs/providers/railwail.md).
"""

from __future__ import annotations

from decimal import Decimal

from gateway.capabilities import Capabilities
from gateway.errors import AuthenticationFailed, ContentRejected, InsufficientCredits, ProviderRejected, RateLimited
from gateway.provider import Adoption
from gateway.request import AspectRatio, ImageKind, ModelFamily, Resolution
from providers.openai_video.catalog import OpenAIVideoCatalog, Paths

DOCS = "https://railwail.com/en/docs"
#: base URL: https://railwail.com/en/docs/sdk/run (OpenAI SDK ``baseURL``) -- confirmed
BASE_URL = "https://railwail.com/api/v1"
#: railwail lists "Luma Ray Flash 2" (https://railwail.com/en/models/luma-ray-flash-2, seed 003);
#: the API id is UNCONFIRMED: the page's snippet says "luma-ray-flash", the slug says
#: "luma-ray-flash-2". Option ``model_ids``.
MODEL_IDS = {ModelFamily.RAY_2_FLASH: "luma-ray-flash-2"}

#: UNCONFIRMED: no video endpoint is documented; these are the OpenAI Videos paths
#: (https://developers.openai.com/api/docs/guides/video-generation). ``/models/{slug}`` is
#: documented (https://railwail.com/en/docs/api/models). Option ``paths``.
PATHS = Paths()

_F = ModelFamily.RAY_2_FLASH
CAPABILITIES = {
    _F: Capabilities(
        model=_F,
        # UNCONFIRMED: the OpenAI Videos ``size`` knows only landscape and portrait sizes
        # (1280x720, 720x1280, 1792x1024, 1024x1792), so an OpenAI-style endpoint is only
        # trusted with 16:9 and 9:16; square and ultra-wide are not assumed.
        aspect_ratios=frozenset({AspectRatio.R16_9, AspectRatio.R9_16}),
        # UNCONFIRMED: the model page says "720p"; 540p is Ray Flash 2's cheaper tier elsewhere (fal)
        resolutions=frozenset({Resolution.P540, Resolution.P720}),
        default_resolution=Resolution.P720,
        resolution_selectable=True,  # through ``size`` (WxH)
        durations=frozenset({5, 9}),  # UNCONFIRMED: Ray Flash 2's durations; sent as "5"/"9"
        start_image=True,  # seed 003: "Fast affordable video with I2V support"; sent as input_reference
        end_image=False,  # the OpenAI shape has one reference image only
        loop=False,
        concepts=frozenset(),
        image_kinds=frozenset({ImageKind.URL, ImageKind.DATA_URI}),  # OpenAI image_url takes data URLs
        max_prompt_chars=4000,  # UNCONFIRMED: reelgate's own limit; railwail states none
        source="https://railwail.com/en/models/luma-ray-flash-2 (no video API documented: UNCONFIRMED)",
    )
}

#: UNCONFIRMED: railwail publishes no credit figure for Ray Flash 2 (its page shows
#: "€0.000 per 1M input tokens"). We anchor to fal's public price for the same model
#: ($0.20 per 5 s at 540p, x2 at 720p, x2 for 9 s: https://fal.ai/models/fal-ai/luma-dream-machine/ray-2-flash)
#: at 0.01 USD/credit, so an unknown price never looks cheaper than a known one.
#: Live figure: ``GET /models/{slug}`` -> ``pricing.credit_cost_fixed``. Option ``credits``.
CREDITS = {
    (_F, Resolution.P540, 5): Decimal(20),
    (_F, Resolution.P720, 5): Decimal(40),
    (_F, Resolution.P540, 9): Decimal(40),
    (_F, Resolution.P720, 9): Decimal(80),
}
#: UNCONFIRMED: railwail sells credits but states no rate for API use. Option ``usd_per_credit``.
USD_PER_CREDIT = Decimal("0.01")

#: UNCONFIRMED: no railwail figure; Ray Flash 2 is Luma's speed tier (seed 003).
LATENCY_S = {
    (_F, Resolution.P540, 5): 30.0,
    (_F, Resolution.P720, 5): 45.0,
    (_F, Resolution.P540, 9): 50.0,
    (_F, Resolution.P720, 9): 75.0,
}

#: error.code values (https://railwail.com/en/docs/guides/error-codes); a code decides the
#: class before the HTTP status does. ``moderation_blocked`` is OpenAI's (UNCONFIRMED here).
ERROR_CODES = {
    "bad_request": ProviderRejected,
    "invalid_api_key": AuthenticationFailed,
    "insufficient_credits": InsufficientCredits,
    "rate_limit_exceeded": RateLimited,
    "moderation_blocked": ContentRejected,
}
#: failed-video error.code values meaning moderation (UNCONFIRMED: OpenAI's spelling).
#: Option ``content_policy_codes``.
CONTENT_POLICY_CODES = frozenset({"moderation_blocked", "content_policy_violation"})

CATALOG = OpenAIVideoCatalog(
    models=MODEL_IDS,
    capabilities=CAPABILITIES,
    prices=CREDITS,
    usd_per_unit=USD_PER_CREDIT,
    unit_name="credits",
    latency_s=LATENCY_S,
    paths=PATHS,
    error_codes=ERROR_CODES,
    content_policy_codes=CONTENT_POLICY_CODES,
    sources={"api": DOCS, "errors": f"{DOCS}/guides/error-codes", "rate_limits": f"{DOCS}/guides/rate-limits"},
)

#: a lost create answer is found again in the OpenAI-style list, ``GET /videos?order=desc``
#: (https://developers.openai.com/api/reference/python/resources/videos/methods/list: ``after``,
#: ``limit`` 0-100, ``order`` asc|desc; answer ``data``, ``first_id``, ``last_id``, ``has_more``).
#: OpenAI's Video object has no ``metadata`` (id, model, status, progress, created_at, prompt,
#: seconds, size, ...), so a scan matches prompt + model + created time (``gateway.adoption``).
#: railwail's list is UNCONFIRMED like its whole video API.
ADOPTION = Adoption.LIST_SCAN

#: polling guidance: UNCONFIRMED (no video docs); the emulator's openai-poll-after-ms is 2000
POLL_INITIAL_S = 2.0
POLL_MAX_S = 10.0
#: UNCONFIRMED: railwail says nothing on refunds of failed generations; assume they are billed
BILLS_FAILURES = True
#: UNCONFIRMED: no idempotency header is documented
SUPPORTS_IDEMPOTENCY = False
