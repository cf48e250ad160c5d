"""apiframe.ai facts as data: model ids, capabilities, credit prices, latency priors and
the adapter's documented option defaults. Every figure names its source.

Sources (read 2026-11-24, see /work/shared/vendors.md section 2):

* AF-OAS  ``apiframe-ai/apiframe-nodejs-sdk`` ``openapi.json`` (server spec v2.0.0)
* AF-DOCS https://apiframe.ai/docs/videos/luma/luma-ray-flash-2 (current site),
  https://docs-v2.apiframe.ai/docs/videos/luma/luma-ray-2 (older copy),
  https://docs-v2.apiframe.ai/docs/faq , https://apiframe.ai/docs/jobs/get

Options (``ProviderSettings.options``), all optional:

``models``          ``{"ray-2-flash": "luma-ray-flash-2", "ray-2": "luma-ray-2"}`` overrides
``credits``         ``{"<model id>": {5: n, 9: n}}`` overrides (keys may be strings: "5")
``usd_per_credit``  USD of one credit, default :data:`USD_PER_CREDIT`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from gateway.capabilities import Capabilities
from gateway.errors import ConfigError
from gateway.provider import Adoption
from gateway.request import AspectRatio, Concept, ImageKind, ModelFamily, Resolution

DOCS_URL = "https://docs-v2.apiframe.ai/docs/videos"
#: a lost submit answer is reconciled by resending with the same Idempotency-Key
ADOPTION = Adoption.IDEMPOTENCY_KEY

#: neutral family -> apiframe ``model`` value (AF-OAS GenerateVideoRequest enum; the SDK's
#: MIGRATION.md spells "ray-flash-2", which is stale -- the spec and docs agree on these)
MODEL_IDS: Mapping[ModelFamily, str] = MappingProxyType({
    ModelFamily.RAY_2_FLASH: "luma-ray-flash-2",
    ModelFamily.RAY_2: "luma-ray-2",
})

#: credits per job, by model id and duration (seconds)
CREDITS: Mapping[str, Mapping[int, int]] = MappingProxyType({
    # https://apiframe.ai/docs/videos/luma/luma-ray-flash-2 (current site): 51 / 92.
    "luma-ray-flash-2": MappingProxyType({5: 51, 9: 92}),
    # UNCONFIRMED: only the docs-v2 copy prices ray-2 (10 / 20), on the older scale where
    # flash cost 5 / 10. Applying flash's rescale (x10.2 at 5 s, x9.2 at 9 s) gives
    # ~102 / ~184; we use the rounder 100 / 180 estimate from vendors.md. Override with
    # the "credits" option, or read live figures from GET /v2/models (costMin/costMax).
    "luma-ray-2": MappingProxyType({5: 100, 9: 180}),
})

#: UNCONFIRMED: apiframe publishes no USD price for a v2 credit (the v1 "$0.04 per image
#: credit" is a different unit). 0.008 makes flash 5 s = 51 x 0.008 = $0.41, in line with
#: what Ray Flash 2 at 720p/5 s costs at fal ($0.20 x2 for 720p = $0.40, vendors.md 1.11),
#: which keeps routing comparisons sane until the operator sets the figure from their plan.
USD_PER_CREDIT = Decimal("0.008")

#: AF-OAS lumaParams.aspect_ratio enum: no 9:21
ASPECT_RATIOS = frozenset({
    AspectRatio.R16_9, AspectRatio.R9_16, AspectRatio.R1_1,
    AspectRatio.R4_3, AspectRatio.R3_4, AspectRatio.R21_9,
})

#: AF-DOCS: both Luma models output 720p and the request has no resolution key (AF-OAS
#: additionalProperties false), so 720p is all we can promise.
RESOLUTION = Resolution.P720

#: AF-OAS lumaParams.duration: number, 5 or 9
DURATIONS = frozenset({5, 9})

#: AF-OAS prompt maxLength
MAX_PROMPT_CHARS = 4000

#: AF-OAS start_image/end_image are ``format: uri``; whether a data: URI is accepted is
#: UNCONFIRMED, so we only send http(s) URLs and a local file is refused before submit.
IMAGE_KINDS = frozenset({ImageKind.URL})

#: expected seconds from submit to finished video. AF-DOCS faq: "typically 1-5 minutes"
#: for video. UNCONFIRMED split inside that range: flash toward the low end, 9 s slower.
LATENCY_PRIOR_S: Mapping[tuple[ModelFamily, int], float] = MappingProxyType({
    (ModelFamily.RAY_2_FLASH, 5): 60.0,
    (ModelFamily.RAY_2_FLASH, 9): 90.0,
    (ModelFamily.RAY_2, 5): 120.0,
    (ModelFamily.RAY_2, 9): 180.0,
})


def capabilities() -> dict[ModelFamily, Capabilities]:
    """Both Luma families offer the same controls on apiframe (AF-OAS lumaParams)."""
    return {
        family: Capabilities(
            model=family,
            aspect_ratios=ASPECT_RATIOS,
            resolutions=frozenset({RESOLUTION}),
            default_resolution=RESOLUTION,
            resolution_selectable=False,
            durations=DURATIONS,
            start_image=True,
            end_image=True,
            loop=True,
            concepts=frozenset(Concept),
            image_kinds=IMAGE_KINDS,
            max_prompt_chars=MAX_PROMPT_CHARS,
            source=f"{DOCS_URL} ; apiframe-nodejs-sdk openapi.json (lumaParams)",
        )
        for family in MODEL_IDS
    }


@dataclass(frozen=True)
class Options:
    """The adapter's validated options (defaults above)."""

    model_ids: Mapping[ModelFamily, str]
    credits: Mapping[str, Mapping[int, int]]
    usd_per_credit: Decimal

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Options:
        unknown = set(options) - {"models", "credits", "usd_per_credit"}
        if unknown:
            raise ConfigError(f"apiframe: unknown option(s) {', '.join(sorted(unknown))}")
        model_ids = dict(MODEL_IDS)
        for family, model_id in dict(options.get("models") or {}).items():
            try:
                model_ids[ModelFamily(family)] = str(model_id)
            except ValueError:
                raise ConfigError(f"apiframe: options.models has unknown family {family!r}") from None
        credits = {m: dict(t) for m, t in CREDITS.items()}
        for model_id, table in dict(options.get("credits") or {}).items():
            credits[str(model_id)] = {**credits.get(str(model_id), {}), **_credit_table(model_id, table)}
        return cls(model_ids, credits, _usd_per_credit(options.get("usd_per_credit", USD_PER_CREDIT)))


def _credit_table(model_id: str, table: Any) -> dict[int, int]:
    try:
        parsed = {int(str(d).rstrip("s")): int(n) for d, n in dict(table).items()}
    except (TypeError, ValueError):
        raise ConfigError(f"apiframe: options.credits.{model_id} must map 5/9 to whole credits") from None
    if any(n < 0 for n in parsed.values()):
        raise ConfigError(f"apiframe: options.credits.{model_id} has a negative price")
    return parsed


def _usd_per_credit(value: Any) -> Decimal:
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"apiframe: options.usd_per_credit {value!r} is not a number") from None
    if not rate.is_finite() or rate < 0:
        raise ConfigError("apiframe: options.usd_per_credit must be a non-negative number")
    return rate
