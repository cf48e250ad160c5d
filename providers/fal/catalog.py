"""fal.ai facts as data: endpoints, capabilities, prices, latency priors, option defaults.

Every figure names its source; ``UNCONFIRMED`` marks what no first-party source states
(those are adapter options, so a deployment can correct them without a code change).
Research notes: /work/shared/vendors.md section 1 (read 2026-11-24).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.capabilities import Capabilities
from gateway.operations import Operation
from gateway.provider import Adoption
from gateway.request import AspectRatio, ImageKind, ModelFamily, Resolution

DOCS_URL = "https://docs.fal.ai/model-apis/model-endpoints/queue"
QUEUE_HOST = "https://queue.fal.run"  # FALQ openapi `servers`
I2V_SUFFIX = "/image-to-video"
#: a lost submit answer is found again through the callback: the ``fal_webhook`` URL names
#: the attempt and fal's signed callback names its request id (only with a public URL)
ADOPTION = Adoption.WEBHOOK_ATTEMPT_KEY
#: status, result and cancel live under the app id, the endpoint's first two segments
#: (vendors.md s.1: "submit uses the full id; status/result/cancel use only owner/app")
APP_SEGMENTS = 2

#: neutral family -> text-to-video endpoint id; image-to-video is the same id + I2V_SUFFIX
#: https://fal.ai/models/fal-ai/luma-dream-machine/ray-2-flash/llms.txt and …/ray-2/playground
ENDPOINTS: dict[ModelFamily, str] = {
    ModelFamily.RAY_2_FLASH: "fal-ai/luma-dream-machine/ray-2-flash",
    ModelFamily.RAY_2: "fal-ai/luma-dream-machine/ray-2",
}

#: operation -> the suffix of its endpoint under the family's id (vendors.md s.1.10; the
#: ModifyVideoRequest / ReframeVideoRequest schemas in seed 002, fal's Ray 2 API page)
OPERATION_SUFFIX: dict[Operation, str] = {Operation.MODIFY: "/modify", Operation.REFRAME: "/reframe"}

#: USD per 5 s at 540p, keyed by endpoint id
BASE_USD: dict[str, Decimal] = {
    # https://fal.ai/models/fal-ai/luma-dream-machine/ray-2-flash/llms.txt "$0.2 per 5 seconds"
    "fal-ai/luma-dream-machine/ray-2-flash": Decimal("0.20"),
    # https://fal.ai/models/fal-ai/luma-dream-machine/ray-2-flash/image-to-video/llms.txt
    "fal-ai/luma-dream-machine/ray-2-flash/image-to-video": Decimal("0.20"),
    # https://fal.ai/models/fal-ai/luma-dream-machine/ray-2/playground "$0.5 per 5 second"
    "fal-ai/luma-dream-machine/ray-2": Decimal("0.50"),
    # UNCONFIRMED: fal's page shows no price; third-party catalogues say the t2v figure
    "fal-ai/luma-dream-machine/ray-2/image-to-video": Decimal("0.50"),
    # UNCONFIRMED (all four): fal publishes no Ray 2 modify/reframe price (vendors.md s.1.11 and s.7:
    # "still not found first-hand"). Priced as a 5 s generation at the family's base, per 5 s of
    # source, until a first-party figure exists; the ``base_usd`` option corrects it per endpoint.
    "fal-ai/luma-dream-machine/ray-2-flash/modify": Decimal("0.20"),
    "fal-ai/luma-dream-machine/ray-2-flash/reframe": Decimal("0.20"),
    "fal-ai/luma-dream-machine/ray-2/modify": Decimal("0.50"),
    "fal-ai/luma-dream-machine/ray-2/reframe": Decimal("0.50"),
}
#: endpoints whose price no first-party source states (shown as such in quotes and docs)
UNCONFIRMED_PRICES = frozenset({
    "fal-ai/luma-dream-machine/ray-2/image-to-video",
    *(f"{family}{suffix}" for family in ENDPOINTS.values() for suffix in OPERATION_SUFFIX.values()),
})

#: input schema text: "720p costs 2x more, 1080p costs 4x more" (llms.txt above)
RESOLUTION_FACTOR: dict[Resolution, int] = {Resolution.P540: 1, Resolution.P720: 2, Resolution.P1080: 4}
#: input schema text: "9s costs 2x more"; that it compounds with resolution is UNCONFIRMED (implied)
DURATION_FACTOR: dict[int, int] = {5: 1, 9: 2}

_CAPS_SOURCE = (
    "https://fal.ai/models/fal-ai/luma-dream-machine/ray-2-flash/llms.txt, "
    "…/ray-2-flash/image-to-video/llms.txt, …/ray-2/playground; modify/reframe: the "
    "ModifyVideoRequest/ReframeVideoRequest schemas on fal's Ray 2 API page; "
    "max_prompt_chars UNCONFIRMED (fal states no limit; gateway-wide 4000)"
)


def _caps(model: ModelFamily) -> Capabilities:
    return Capabilities(
        model=model,
        # AspectRatioEnum on every Ray 2 endpoint: no 1:1 (only reframe has it)
        aspect_ratios=frozenset({AspectRatio.R16_9, AspectRatio.R9_16, AspectRatio.R4_3,
                                 AspectRatio.R3_4, AspectRatio.R21_9, AspectRatio.R9_21}),
        resolutions=frozenset(Resolution),
        default_resolution=Resolution.P540,
        resolution_selectable=True,
        durations=frozenset({5, 9}),
        start_image=True,  # image_url on …/image-to-video
        end_image=True,  # end_image_url on …/image-to-video
        loop=True,
        concepts=frozenset(),  # fal's Ray 2 schema has no concepts field
        # fal fetches http(s) URLs and accepts data URIs wherever a file URL goes (FALHDR payloads)
        image_kinds=frozenset({ImageKind.URL, ImageKind.DATA_URI}),
        max_prompt_chars=4000,
        source=_CAPS_SOURCE,
        operations=frozenset({Operation.GENERATE, *OPERATION_SUFFIX}),
        # ReframeVideoRequest's AspectRatioEnum is the only one with 1:1
        reframe_aspect_ratios=frozenset(AspectRatio),
    )


CAPABILITIES: dict[ModelFamily, Capabilities] = {m: _caps(m) for m in ENDPOINTS}

#: expected submit-to-video seconds at 540p / 5 s. UNCONFIRMED: our estimates from
#: fal's model pages calling Flash the fast variant; the router replaces them with
#: observed latencies as jobs finish.
LATENCY_BASE_S: dict[ModelFamily, float] = {ModelFamily.RAY_2_FLASH: 35.0, ModelFamily.RAY_2: 100.0}
LATENCY_RESOLUTION_FACTOR: dict[Resolution, float] = {
    Resolution.P540: 1.0, Resolution.P720: 1.5, Resolution.P1080: 2.5,
}
LATENCY_DURATION_FACTOR: dict[int, float] = {5: 1.0, 9: 1.7}

#: adapter options (``ProviderSettings.options``) and their defaults
DEFAULT_OPTIONS: dict[str, Any] = {
    # endpoint id per "ray-2-flash" / "ray-2-flash/image-to-video" key; overrides ENDPOINTS
    "endpoints": {},
    # USD per 5 s at 540p per endpoint id; overrides BASE_USD (ray-2 i2v is UNCONFIRMED)
    "base_usd": {},
    # error_type values on a COMPLETED status that mean "cancelled", not "failed".
    # UNCONFIRMED: fal does not document what a cancelled request reports later.
    "cancelled_error_types": ["client_cancelled"],
    # ask for logs on status polls (fal-js sends logs=1); costs nothing, helps debugging
    "status_logs": True,
    # hosts besides the base URL's that fal may return in status/response/cancel URLs.
    # The key is sent to those URLs, so any other host is refused (ProtocolError).
    "extra_url_hosts": [],
}
