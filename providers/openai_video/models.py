"""The OpenAI Videos API's objects as this adapter reads them (openai-python
``types/video.py``), and the ``GET /models/{slug}`` pricing railwail adds. They ignore
unknown fields: vendors add them freely."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VideoError(_Loose):
    code: str | None = None
    message: str | None = None


class Video(_Loose):
    id: str
    status: str
    model: str | None = None
    progress: float | None = None
    seconds: str | int | None = None
    size: str | None = None
    error: VideoError | None = None
    created_at: float | None = None
    prompt: str | None = None
    metadata: dict[str, Any] | None = None


class VideoList(_Loose):
    data: list[Video]
    has_more: bool = False
    last_id: str | None = None


class ErrorBody(_Loose):
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None


class ModelPricing(_Loose):
    credit_cost_fixed: Decimal | None = None
    credit_cost_input_per_1k: Decimal | None = None
    credit_cost_output_per_1k: Decimal | None = None
    currency: str | None = None
