"""What one OpenAI-style catalog offers and costs, derived once per catalog object.

A plan asks every provider for its capabilities and a quote on each create; both are data of
the (frozen) catalog and the request's shape alone, so they are computed once here rather than
per create (a dict of the offered models and a Decimal quote each time, ~5 us a plan).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.capabilities import Capabilities
from gateway.pricing import Quote, usd
from gateway.request import ModelFamily, Resolution

if TYPE_CHECKING:
    from providers.openai_video.catalog import OpenAIVideoCatalog


class Offer:
    """The offered models' capabilities and the quote of each shape already asked for."""

    def __init__(self, provider: str, catalog: OpenAIVideoCatalog) -> None:
        self.provider = provider
        self.catalog = catalog
        self.capabilities: dict[ModelFamily, Capabilities] = {
            m: c for m, c in catalog.capabilities.items() if m in catalog.models}
        self._quotes: dict[tuple[ModelFamily, Resolution, int], Quote] = {}

    def quote(self, model: ModelFamily, resolution: Resolution, duration_s: int) -> Quote:
        """The quote of this shape: a frozen value, shared by every request of that shape."""
        key = (model, resolution, duration_s)
        quote = self._quotes.get(key)
        if quote is None:
            quote = self._quotes[key] = self._price(model, resolution, duration_s)
        return quote

    def _price(self, model: ModelFamily, resolution: Resolution, duration_s: int) -> Quote:
        cat = self.catalog
        units = cat.prices[(model, resolution, duration_s)]
        basis = f"{units} {cat.unit_name} x ${cat.usd_per_unit}/credit" if cat.unit_name else f"${units} per clip"
        return Quote(self.provider, model, cat.models[model], resolution, duration_s, usd(units * cat.usd_per_unit),
                     units if cat.unit_name else None, cat.unit_name, basis)
