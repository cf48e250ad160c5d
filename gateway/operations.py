"""Operations beyond generating one clip: modify, reframe and extend a *source video*.

A request carries one :class:`Operation`; every operation but ``generate`` carries its own
validated spec (:class:`ModifySpec`, :class:`ReframeSpec`, :class:`ExtendSpec`). Whether a
provider can run an operation is provider data (``Capabilities.operations``), so the core
judges every provider by the same rule and names the reason ("cannot modify").
"""

from __future__ import annotations

import base64
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.media import Media, from_caller

MAX_VIDEO_BYTES = 100 * 1024 * 1024
#: an inlined video is capped far lower than a file: it travels inside a JSON request
MAX_VIDEO_DATA_URI_BYTES = 20 * 1024 * 1024
#: the longest sequence ``extend`` may ask for (Ray Flash 2's page: "~20-second sequences")
MAX_EXTEND_SECONDS = 30
NO_LOCAL_VIDEO_FILES = ("must be a job id, an http(s) URL or a data:video/...;base64 URI; "
                        "server file paths are not accepted")


class Operation(StrEnum):
    GENERATE = "generate"
    MODIFY = "modify"
    REFRAME = "reframe"
    EXTEND = "extend"


class ModifyMode(StrEnum):
    """Luma Ray 2's modify strengths, from closest to the source to freest (fal ModifyVideoRequest)."""

    ADHERE_1 = "adhere_1"
    ADHERE_2 = "adhere_2"
    ADHERE_3 = "adhere_3"
    FLEX_1 = "flex_1"
    FLEX_2 = "flex_2"
    FLEX_3 = "flex_3"
    REIMAGINE_1 = "reimagine_1"
    REIMAGINE_2 = "reimagine_2"
    REIMAGINE_3 = "reimagine_3"


class VideoKind(StrEnum):
    URL = "url"
    DATA_URI = "data_uri"
    PATH = "path"
    #: a finished job of this gateway, resolved to its video's URL before any vendor is called
    JOB = "job"


#: the gateway's job ids (``VideoJob.id``): ``vid_`` and 32 hex digits
JOB_ID = re.compile(r"vid_[0-9a-f]{32}")


def sniff_video_type(data: bytes) -> str | None:
    """The video MIME type from magic bytes (MP4, QuickTime MOV, WebM), or None."""
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:12] == b"qt  " else "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


VIDEO = Media(type="video", formats="an MP4, MOV or WebM video", sniff=sniff_video_type,
              max_data_uri_bytes=MAX_VIDEO_DATA_URI_BYTES, max_file_bytes=MAX_VIDEO_BYTES,
              no_local_files=NO_LOCAL_VIDEO_FILES)


class SourceVideo(BaseModel):
    """The video an operation works on: an http(s) URL, a ``data:video/...;base64,`` URI, a
    finished job's id (``vid_...``) or a local file (checked when the request is built:
    exists, within the size cap, really a video)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: VideoKind
    value: str

    @classmethod
    def parse(cls, value: str | Path | SourceVideo, *, local_files: bool = True) -> SourceVideo:
        """``local_files=False`` (the HTTP service) refuses a server path without looking at it."""
        if isinstance(value, SourceVideo):
            if value.kind is VideoKind.PATH and not local_files:
                raise ValueError(NO_LOCAL_VIDEO_FILES)
            return value
        text = str(value).strip()
        if JOB_ID.fullmatch(text) and not (local_files and Path(text).exists()):
            return cls(kind=VideoKind.JOB, value=text)
        kind, parsed = VIDEO.classify(text, local_files=local_files)
        return cls(kind=VideoKind(kind), value=parsed)

    def describe(self) -> str:
        """A log-safe description (a data URI is never printed whole)."""
        if self.kind is VideoKind.DATA_URI:
            return f"data URI ({len(self.value)} chars)"
        return self.value

    def as_data_uri(self) -> str:
        """The video inlined as a data URI (a local file for a vendor that takes data URIs)."""
        if self.kind is VideoKind.DATA_URI:
            return self.value
        if self.kind is VideoKind.PATH:
            data, mime = VIDEO.read_file(Path(self.value))
            if len(data) > MAX_VIDEO_DATA_URI_BYTES:
                raise ValueError(f"file {self.value!r} is larger than the "
                                 f"{MAX_VIDEO_DATA_URI_BYTES // (1024 * 1024)} MiB a vendor takes inline")
            return f"data:{mime};base64,{base64.b64encode(data).decode()}"
        raise ValueError(f"a {self.kind.value} source cannot be inlined")


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    source: SourceVideo

    @field_validator("source", mode="before")
    @classmethod
    def _parse_source(cls, v: object) -> object:
        if v is None or isinstance(v, (SourceVideo, dict)):  # None: only ExtendSpec allows it
            return v
        if isinstance(v, (str, Path)):
            return SourceVideo.parse(v)
        raise ValueError("must be a job id, a URL, a data:video/... URI or a file path")


class ModifySpec(_Spec):
    """Restyle a video, keeping its motion; the request's ``start_image`` is the optional first frame."""

    operation: Literal["modify"] = "modify"
    mode: ModifyMode = ModifyMode.FLEX_1


class GridPosition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    x: int = Field(ge=0)
    y: int = Field(ge=0)


class CropBox(BaseModel):
    """Where the source sits in the reframed canvas, in pixels (fal's x_start..y_end)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x_start: int = Field(ge=0)
    x_end: int = Field(gt=0)
    y_start: int = Field(ge=0)
    y_end: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> CropBox:
        if self.x_end <= self.x_start or self.y_end <= self.y_start:
            raise ValueError("x_end must exceed x_start and y_end must exceed y_start")
        return self


class ReframeSpec(_Spec):
    """Change a video's aspect ratio; the request's ``aspect_ratio`` is the target."""

    operation: Literal["reframe"] = "reframe"
    grid_position: GridPosition | None = None
    crop_box: CropBox | None = None


class ExtendSpec(_Spec):
    """Continue a video, or build one from nothing, as a chain of clips (``gateway.sequence``).

    The source is a video (``source``), a finished job of this gateway (``source_job``), or
    neither: then the chain starts from the request's prompt and ``start_image``, which is
    how ``generate --duration 20`` is spelt. The length is the whole result's
    (``target_seconds``, the source included) or what is added to the source (``added_seconds``,
    OpenAI's ``/videos/extensions`` ``seconds``). Clip *n* uses ``prompts[n]``, or the
    request's prompt past the end of the list.
    """

    operation: Literal["extend"] = "extend"
    source: SourceVideo | None = None  # type: ignore[assignment]  # optional here alone
    source_job: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")
    target_seconds: int | None = Field(default=None, gt=5, le=MAX_EXTEND_SECONDS)
    added_seconds: int | None = Field(default=None, gt=0, le=MAX_EXTEND_SECONDS)
    prompts: tuple[Annotated[str, Field(min_length=1, max_length=4000)], ...] = Field(default=(), max_length=8)

    @model_validator(mode="after")
    def _one_length_and_source(self) -> ExtendSpec:
        if (self.target_seconds is None) == (self.added_seconds is None):
            raise ValueError("give exactly one of target_seconds (the whole length) or added_seconds")
        if self.source is not None and self.source_job is not None:
            raise ValueError("give a source video or a source_job, not both")
        if self.source is None and self.source_job is None and self.target_seconds is None:
            raise ValueError("a chain without a source video needs target_seconds")
        return self


OperationSpec = Annotated[ModifySpec | ReframeSpec | ExtendSpec, Field(discriminator="operation")]


def remote_only_spec(data: object) -> object:
    """The spec's source parsed as a job id, a URL or a data URI only (the HTTP service), before the model sees it."""
    if not isinstance(data, dict) or data.get("source") is None:
        return data
    source = from_caller(data["source"], lambda v: SourceVideo.parse(v, local_files=False), NO_LOCAL_VIDEO_FILES)
    return {**data, "source": source}
