"""An OpenAI-style video vendor as data: its model ids, capabilities, prices, latency
priors, endpoint paths and error codes (``OpenAIVideoCatalog``), and how a provider's
``options`` override them. A vendor such as ``providers.railwail`` is one of these plus
the class attributes ``Provider`` requires."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.capabilities import Capabilities
from gateway.errors import ConfigError, ProviderError
from gateway.request import ModelFamily, Resolution

PriceKey = tuple[ModelFamily, Resolution, int]


@dataclass(frozen=True)
class Paths:
    """Endpoint paths under the base URL; ``{video_id}`` / ``{slug}`` are filled in."""

    create: str = "/videos"
    retrieve: str = "/videos/{video_id}"
    content: str = "/videos/{video_id}/content"
    list: str = "/videos"
    delete: str = "/videos/{video_id}"
    model: str = "/models/{slug}"


@dataclass(frozen=True)
class OpenAIVideoCatalog:
    """Everything vendor-specific about an OpenAI-style video API, as data."""

    #: neutral family -> the vendor's model id sent as ``model``
    models: Mapping[ModelFamily, str]
    capabilities: Mapping[ModelFamily, Capabilities]
    #: vendor units (credits, or USD when ``unit_name`` is None) per clip
    prices: Mapping[PriceKey, Decimal]
    usd_per_unit: Decimal
    unit_name: str | None
    #: seconds from submit to a finished video, before any observation
    latency_s: Mapping[PriceKey, float]
    paths: Paths = Paths()
    #: structured ``error.code`` -> class; beats the HTTP status where both speak
    error_codes: Mapping[str, type[ProviderError]] = field(default_factory=dict)
    #: ``error.code`` values on a failed Video that mean moderation, not a crash
    content_policy_codes: frozenset[str] = frozenset({"moderation_blocked"})
    sources: Mapping[str, str] = field(default_factory=dict)
    #: the ``metadata`` key our attempt key is sent under, for a vendor that stores metadata
    #: and echoes it on its Video objects; None (OpenAI's shape has no metadata): the list
    #: scan matches prompt + created time instead
    metadata_key: str | None = None

    def with_options(self, options: Mapping[str, Any]) -> OpenAIVideoCatalog:
        """The catalog with ``ProviderSettings.options`` applied; a typo is a ConfigError,
        not a silently ignored setting."""
        unknown = set(options) - {"model_ids", "paths", "credits", "usd_per_credit", "content_policy_codes"}
        if unknown:
            raise ConfigError(f"unknown options: {', '.join(sorted(unknown))}")
        try:
            cat = self
            if "model_ids" in options:
                ids = {ModelFamily(k): str(v) for k, v in options["model_ids"].items()}
                cat = replace(cat, models={**cat.models, **ids})
            if "paths" in options:
                cat = replace(cat, paths=replace(cat.paths, **dict(options["paths"])))
            if "credits" in options:
                cat = replace(cat, prices={**cat.prices, **_price_keys(options["credits"])})
            if "usd_per_credit" in options:
                cat = replace(cat, usd_per_unit=Decimal(str(options["usd_per_credit"])))
            if "content_policy_codes" in options:
                cat = replace(cat, content_policy_codes=frozenset(options["content_policy_codes"]))
        except (TypeError, ValueError, AttributeError, InvalidOperation) as exc:
            raise ConfigError(f"bad provider option: {exc}") from None
        return cat


def _price_keys(table: Mapping[str, Any]) -> dict[PriceKey, Decimal]:
    """``{"ray-2-flash/720p/5": 40}`` -> ``{(RAY_2_FLASH, P720, 5): Decimal(40)}``."""
    out = {}
    for key, value in table.items():
        family, res, secs = key.split("/")
        out[(ModelFamily(family), Resolution(res), int(secs))] = Decimal(str(value))
    return out
