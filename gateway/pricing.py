"""Quotes: what one request would cost at one provider, in USD and in the vendor's units.

Price tables are data owned by each provider (its ``catalog``); this module only holds
the shapes every provider returns, so the router can compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from gateway.request import ModelFamily, Resolution

CENT = Decimal("0.0001")


def usd(value: Decimal | float | int | str) -> Decimal:
    """Money as a Decimal rounded to 1/100 of a cent: no float drift in budgets."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Quote:
    provider: str
    model: ModelFamily
    #: the vendor's own name for what will run (endpoint id or model id)
    vendor_model: str
    resolution: Resolution
    duration_s: int
    usd: Decimal
    #: the vendor's billing unit, when it is not USD (apiframe credits, railwail credits)
    vendor_units: Decimal | None = None
    unit_name: str | None = None
    #: how the figure was derived, for humans ("$0.20 base x2 720p x2 9s")
    basis: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "model": self.model.value,
            "vendor_model": self.vendor_model,
            "resolution": self.resolution.value,
            "duration_s": self.duration_s,
            "cost_usd": float(self.usd),
            "vendor_units": float(self.vendor_units) if self.vendor_units is not None else None,
            "unit_name": self.unit_name,
            "basis": self.basis,
        }


@dataclass(frozen=True)
class Eligibility:
    """One provider's answer to one request: a quote, or why not."""

    provider: str
    quote: Quote | None
    reasons: tuple[str, ...] = ()
    degradations: tuple[str, ...] = ()
    configured: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def eligible(self) -> bool:
        return self.quote is not None and not self.reasons

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "eligible": self.eligible,
            "configured": self.configured,
            "reasons": list(self.reasons),
            "degradations": list(self.degradations),
            "quote": self.quote.to_dict() if self.quote else None,
        }
