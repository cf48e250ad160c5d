"""fal's wire shapes as pydantic models. They ignore unknown fields: fal adds fields
over time and an extra key must never break a poll."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Vendor(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SubmitAnswer(_Vendor):
    # fal_client reads all four unconditionally, so they are mandatory here too
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int | None = None


class StatusAnswer(_Vendor):
    status: str
    queue_position: int | None = None
    logs: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    #: present on COMPLETED when the run failed (fal has no FAILED status)
    error: str | None = None
    error_type: str | None = None


class File(_Vendor):
    url: str
    content_type: str | None = None
    file_size: int | None = None


class VideoOutput(_Vendor):
    video: File


class DetailItem(_Vendor):
    """One entry of a pydantic-style ``{"detail": [...]}`` error."""

    loc: list[str | int] = []
    msg: str = ""
    type: str = ""


class ErrorBody(_Vendor):
    """Both of fal's error shapes: ``detail`` as a list (model/validation) or a string
    (infrastructure, with ``error_type``)."""

    detail: list[DetailItem] | str | None = None
    error_type: str | None = None

    def items(self) -> list[DetailItem]:
        return self.detail if isinstance(self.detail, list) else []

    def text(self) -> str:
        if isinstance(self.detail, str):
            return self.detail
        parts = [f"{'.'.join(str(p) for p in i.loc if p != 'body')}: {i.msg}".lstrip(": ") for i in self.items()]
        return "; ".join(parts)
