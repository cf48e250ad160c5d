"""Translation between OpenAI's Videos API shape and reelgate's neutral model (pure).

Apps written against OpenAI's Videos API work by changing ``base_url``: ``size`` and
``seconds`` map to aspect ratio, resolution and duration; ``model`` names a neutral
family or a route alias from the config; gateway-specific fields ride along as extra
body fields.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.errors import InvalidRequest
from gateway.frames import video_size
from gateway.job import JobStatus, VideoJob
from gateway.request import AspectRatio, ImageInput, ModelFamily, Resolution, VideoRequest
from gateway.request_limits import check_strings, shown

#: every WxH we can honour, e.g. "1280x720" -> (16:9, 720p)
SIZES: dict[str, tuple[AspectRatio, Resolution]] = {
    video_size(a, r): (a, r) for a in AspectRatio for r in Resolution
}
#: the other way, for every video object answered (``video_size`` computes the pixels each time)
_SIZE_OF: dict[tuple[AspectRatio, Resolution], str] = {pair: size for size, pair in SIZES.items()}
#: a job's ``resolution`` (a string) as the enum, without an enum call per answer
_RESOLUTIONS: dict[str, Resolution] = {r.value: r for r in Resolution}
_MODELS: dict[str, ModelFamily] = {m.value: m for m in ModelFamily}

#: body fields beyond OpenAI's that map straight onto ``VideoRequest``
EXTRA_FIELDS = ("aspect_ratio", "resolution", "loop", "end_image", "start_image", "route", "providers",
                "max_cost_usd", "deadline_s", "concepts", "allow", "fallback", "idempotency_key",
                "webhook_url", "metadata", "duration_s")
OPENAI_FIELDS = ("model", "prompt", "seconds", "size", "input_reference")
#: the request's true/false fields: JSON booleans only (``VideoRequest._flag``), so a form's text
#: "true" or "false" (what httpx, and so the openai SDK, sends for a boolean) is read here
_FORM_FLAGS = {"true": True, "false": False}
_EXTRA = frozenset(EXTRA_FIELDS)
_KNOWN_FIELDS = _EXTRA | frozenset(OPENAI_FIELDS)

_STATUS = {
    JobStatus.QUEUED: "queued", JobStatus.SUBMITTED: "queued", JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "failed",
}


def request_from_openai(body: dict[str, Any], settings: Settings, *, image_data_uri: str | None = None) -> VideoRequest:
    """A ``VideoRequest`` from an OpenAI-shaped create body (JSON or form fields)."""
    check_strings(body)  # before any of it is echoed in an error or parsed
    unknown = body.keys() - _KNOWN_FIELDS
    if unknown:
        raise InvalidRequest(min(unknown), "is not a known field")
    # the body's own keys walked (a few), not every extra field looked up in it (16)
    fields: dict[str, Any] = {k: v for k, v in body.items() if v is not None and k in _EXTRA}
    fields["prompt"] = body.get("prompt") if body.get("prompt") is not None else ""
    fields.update(_model(body.get("model"), settings))
    if body.get("size") is not None:
        size = str(body["size"]).strip().lower()
        if size not in SIZES:
            offered = ", ".join(sorted(SIZES))
            raise InvalidRequest("size", f"{shown(body['size'])} is not offered; choose one of {offered}")
        aspect, resolution = SIZES[size]
        fields.setdefault("aspect_ratio", aspect)
        fields.setdefault("resolution", resolution)
    if body.get("seconds") is not None:
        fields["duration_s"] = _seconds(body["seconds"])
    reference = body.get("input_reference")
    if image_data_uri is not None:
        fields["start_image"] = image_data_uri
    elif isinstance(reference, dict):
        if not isinstance(reference.get("image_url"), str):
            raise InvalidRequest("input_reference", "must be an uploaded image or {\"image_url\": \"...\"}")
        if "start_image" in fields:
            raise InvalidRequest("input_reference", "give either input_reference or start_image, not both")
        try:  # a caller's image is a URL, a data URI or an upload, never a file of this server
            fields["start_image"] = ImageInput.parse(reference["image_url"], local_files=False)
        except ValueError as exc:
            raise InvalidRequest("input_reference.image_url", str(exc)) from None
    elif reference is not None:
        raise InvalidRequest("input_reference", "must be an uploaded image or {\"image_url\": \"...\"}")
    return VideoRequest.parse(fields, local_files=False, checked=True)  # made of the checked body


def form_value(name: str, text: str) -> Any:
    """A multipart form field's text as the JSON body would give it: a flag's "true" or
    "false" as the boolean; anything else as sent (``"yes"`` is then refused, naming the field)."""
    if name in ("loop", "fallback"):
        return _FORM_FLAGS.get(text.strip().lower(), text)
    return text


def _model(model: Any, settings: Settings) -> dict[str, Any]:
    if model is None:
        return {}
    name = str(model)
    alias = settings.aliases.get(name)
    if alias is not None:
        return alias.model_dump(exclude_none=True)
    family = _MODELS.get(name)  # a dict read, not an enum call (EnumType.__call__ is Python)
    if family is None:
        known = [m.value for m in ModelFamily] + sorted(settings.aliases)
        raise InvalidRequest("model", f"{shown(name)} is not offered; choose one of {', '.join(known)}")
    return {"model": family}


def _seconds(value: Any) -> int:
    text = str(value).strip().removesuffix("s")
    if text not in ("5", "9"):
        raise InvalidRequest("seconds", f"{shown(value)} is not offered; choose \"5\" or \"9\"")
    return int(text)


def video_object(job: VideoJob) -> dict[str, Any]:
    """The OpenAI ``Video`` object for a job (plus a ``reelgate`` block with the details)."""
    request = job.request
    resolution = (_RESOLUTIONS.get(job.resolution) or Resolution(job.resolution) if job.resolution
                  else request.resolution or Resolution.P720)
    finished = job.updated_at if job.status.terminal else None
    error = None
    if job.status is JobStatus.CANCELLED:
        error = {"code": "cancelled", "message": "the job was cancelled"}
    elif job.status is JobStatus.FAILED:
        err = job.error or {}
        error = {"code": err.get("code", "failed"), "message": err.get("message", "the job failed")}
    return {
        "id": job.id,
        "object": "video",
        "model": str(request.model),  # a StrEnum's value: str() is a C call, ``.value`` a Python property
        "status": _STATUS[job.status],
        "progress": 100 if job.status is JobStatus.SUCCEEDED else int(round((job.progress or 0) * 100)),
        "created_at": int(job.created_at),
        "completed_at": int(finished) if finished else None,
        "expires_at": None,
        "prompt": request.prompt,
        "seconds": f"{job.seconds:g}",  # OpenAI's Video.seconds is any string: an edit's is its source's
        "size": _SIZE_OF.get((request.aspect_ratio, resolution)) or video_size(request.aspect_ratio, resolution),
        "remixed_from_video_id": None,
        "error": error,
        "reelgate": {
            "provider": job.provider,
            "cost_usd": float(job.cost_usd),
            "aspect_ratio": str(request.aspect_ratio),
            "resolution": str(resolution),
            "attempts": [a.to_dict() for a in job.attempts],
        },
    }
