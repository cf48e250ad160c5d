"""OpenAI's ``POST /v1/videos/extensions`` in reelgate's neutral terms (pure).

The body, as OpenAI's API reference gives it ("Create a video extension": ``client.videos.extend``,
``POST /videos/extensions``, https://developers.openai.com/api/reference/go/resources/videos/methods/extend/)
and the generated clients spell it (``CreateVideoExtendJsonBody``: ``video`` -- a
``VideoReferenceInputParam``, ``{"id": "video_..."}`` -- ``prompt`` and ``seconds``), is what
LiteLLM's proxy forwards for its videos routes. ``seconds`` is what the extension adds. reelgate
also takes ``video`` as a URL or data URI (or ``{"url": ...}``), ``target_seconds`` for the whole
length, ``prompts`` (one per clip) and the routing fields of ``POST /v1/videos``.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.errors import InvalidRequest
from gateway.request import VideoRequest
from gateway.request_limits import check_strings, shown
from gateway.server.openai_compat import request_from_openai

#: the fields of this route beyond those ``POST /v1/videos`` takes
_OWN_FIELDS = ("video", "seconds", "target_seconds", "prompts")


def extension_from_openai(body: dict[str, Any], settings: Settings) -> VideoRequest:
    check_strings(body)
    if "video" not in body:
        raise InvalidRequest("video", 'is required: {"id": "<a finished video id>"} or a URL')
    edit: dict[str, Any] = {"operation": "extend", **_source(body["video"])}
    if body.get("target_seconds") is not None:
        edit["target_seconds"] = body["target_seconds"]
    else:
        edit["added_seconds"] = _seconds(body.get("seconds"))
    if body.get("prompts") is not None:
        edit["prompts"] = body["prompts"]
    rest = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
    request = request_from_openai(rest, settings)
    # the spec is validated as the request's field, so an error names edit.<field>
    checked = VideoRequest.parse({"prompt": request.prompt, "edit": edit}, local_files=False)
    return request.model_copy(update={"edit": checked.edit})


def _source(video: Any) -> dict[str, str]:
    if isinstance(video, dict) and set(video) == {"id"} and isinstance(video["id"], str):
        return {"source_job": video["id"]}
    if isinstance(video, dict) and set(video) == {"url"} and isinstance(video["url"], str):
        return {"source": video["url"]}
    if isinstance(video, str):
        return {"source": video}
    raise InvalidRequest("video", 'must be {"id": "<video id>"}, {"url": "https://..."} or a URL')


def _seconds(value: Any) -> int:
    text = str(value).strip().removesuffix("s") if value is not None else ""
    if not text.isdigit() or not 0 < int(text) <= 30:
        raise InvalidRequest("seconds", f"{shown(value)} is not a length to add: give whole seconds, 1 to 30")
    return int(text)
