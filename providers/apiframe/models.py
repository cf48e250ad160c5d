"""apiframe v2 response bodies, as the adapter reads them (AF-OAS ``JobAccepted``,
``Job`` and the error bodies). They ignore unknown fields: apiframe may add keys, and
a new key must never break parsing. Field names are spelled as the vendor spells them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Vendor(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class JobAccepted(_Vendor):
    """202 from ``POST /v2/videos/generate``."""

    jobId: str = Field(min_length=1)
    #: "QUEUED" on a fresh submit; may be later on an idempotent replay
    status: str | None = None


class Job(_Vendor):
    """200 from ``GET /v2/jobs/{id}``."""

    id: str = Field(min_length=1)
    status: str
    model: str | None = None
    #: 0-100, or null before the vendor reports any
    progress: float | None = Field(default=None, ge=0, le=100)
    #: video: ``{"videoUrl": ...}``; older docs show a bare URL string
    result: Any = None
    error: str | None = None
    creditCost: float | None = None
    expired: bool = False

    def video_url(self) -> str | None:
        if isinstance(self.result, str) and self.result:
            return self.result
        if isinstance(self.result, dict):
            url = self.result.get("videoUrl")
            if isinstance(url, str) and url:
                return url
        return None


class ErrorBody(_Vendor):
    """Every non-2xx body: ``{"error": ...}`` plus 400 ``details`` or 402 credit numbers."""

    error: str | None = None
    #: Zod validation failures: json path -> messages
    details: dict[str, Any] | None = None
    creditsRequired: float | None = None
    creditsAvailable: float | None = None

    def detail_text(self) -> str:
        """``"lumaParams.resolution: Unrecognized key; prompt: Required"`` (paths sorted)."""
        parts = []
        for path, messages in sorted((self.details or {}).items()):
            text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            parts.append(f"{path}: {text}" if text else path)
        return "; ".join(parts)
