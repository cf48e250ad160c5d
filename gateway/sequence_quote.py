"""What a sequence (extend, ``generate --duration 20``) costs before anything is paid:
each segment quoted as the job it will be, summed (docs/sequences.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway.errors import BudgetExceeded, InvalidRequest, ReelgateError
from gateway.images import ImageInput
from gateway.quote_report import QuoteReport
from gateway.request import VideoRequest
from gateway.sequence import seconds_to_add, segment_lengths, segment_request, spec_of
from gateway.sequence_source import ASSUMED_SOURCE_S, known_duration

if TYPE_CHECKING:
    from gateway.api import Gateway

#: a 1x1 PNG: the start image a quote assumes for a continuing segment (its real one is a
#: frame of the clip before, which does not exist yet)
_PLACEHOLDER_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4"
                    "z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")



@dataclass
class SequenceQuote:
    """A sequence priced as the sum of its segments, each quoted as the job it will be."""

    request: VideoRequest
    segments: list[tuple[int, QuoteReport]] = field(default_factory=list)
    source_s: float | None = None
    notes: list[str] = field(default_factory=list)
    error: ReelgateError | None = None

    @property
    def chosen(self) -> str | None:
        """The provider of the first segment (each segment is routed on its own)."""
        return self.segments[0][1].chosen if self.segments and self.error is None else None

    @property
    def usd(self) -> Decimal:
        return sum((r.plan.candidates[0].quote.usd for _, r in self.segments if r.plan and r.plan.candidates),
                   Decimal(0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen, "operation": "extend", "cost_usd": float(self.usd) if self.error is None else None,
            "source_s": self.source_s, "notes": self.notes,
            "segments": [{"index": i + 1, "duration_s": n, **report.to_dict()}
                         for i, (n, report) in enumerate(self.segments)],
            "error": self.error.to_dict() if self.error else None,
        }


def estimate(gateway: Gateway, request: VideoRequest) -> Decimal:
    """What a sequence reserves before anything is paid: the sum of its segments' quotes;
    the first reason a segment cannot be had is raised."""
    report = quote(gateway, request)
    if report.error is not None:
        raise report.error
    return report.usd


def quote(gateway: Gateway, request: VideoRequest) -> SequenceQuote:
    """Each segment's quote report; ``error`` is the first reason a segment cannot be had."""
    spec = spec_of(request)
    result = SequenceQuote(request)
    try:
        source_s = known_duration(spec.source)
    except ValueError as exc:
        result.error = InvalidRequest("edit.source", str(exc))
        return result
    if source_s is None and (spec.source is not None or spec.source_job is not None):
        source_s = ASSUMED_SOURCE_S
        result.notes.append(f"the source's length is learnt when it is fetched; {ASSUMED_SOURCE_S:g} s assumed")
    result.source_s = source_s
    try:
        lengths = segment_lengths(seconds_to_add(spec, source_s or 0.0))
    except ReelgateError as exc:
        result.error = exc
        return result
    continues = spec.source is not None or spec.source_job is not None
    for i in range(len(lengths)):
        image = ImageInput.parse(_PLACEHOLDER_PNG) if continues or i > 0 else request.start_image
        report = gateway.quote(segment_request(request, i, lengths, image, None))
        assert isinstance(report, QuoteReport)  # a segment is a plain clip
        result.segments.append((lengths[i], report))
        if report.error is not None and result.error is None:
            result.error = report.error
    caps = [c for c in (request.max_cost_usd, gateway.settings.budgets.per_request_usd) if c is not None]
    if result.error is None and caps and result.usd > Decimal(str(min(caps))):
        # the request's budget is the whole sequence's (its segments carry none of their own)
        result.error = BudgetExceeded(f"the sequence of {len(lengths)} clips costs ${result.usd:.2f}, "
                                      f"over max_cost_usd ${min(caps):.2f}")
    return result
