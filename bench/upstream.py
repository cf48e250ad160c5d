"""The upstream ``bench.service`` measures against: an OpenAI-style video API that does no
work, so the upstream is never the bottleneck. ``python -m bench.service --upstream-port N``
serves it (bench/vendorcalls.py, bench/keep.py and bench/floor.py start it that way too)."""

from __future__ import annotations

import contextlib
import json
import time

#: the smallest body the mirror takes for an MP4 (an ``ftyp`` box), padded to 1 KiB
FAKE_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(1000)
#: the upstream's API key (loopback only, never a real one)
UPSTREAM_KEY = "sk-bench"


async def upstream_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """OpenAI's ``/videos`` shape, under ``/api/v1`` (railwail's base) and ``/v1`` (LiteLLM's
    ``openai/`` provider); every video is finished when created. A bare ASGI app under
    uvicorn (httptools): on two shared cores every millisecond the upstream spends is taken
    from the service under test, and this costs about half of what aiohttp.web did."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path, method = scope["path"], scope["method"]
    base, _, rest = path.partition("/videos")
    if method == "POST" and rest == "" and base in ("/api/v1", "/v1"):
        model = "luma-ray-flash-2"
        with contextlib.suppress(ValueError, AttributeError):
            model = json.loads(body).get("model") or model
        await _answer(send, _video(f"video_{next(_ids):x}", model))
    elif method == "GET" and rest.endswith("/content") and base in ("/api/v1", "/v1"):
        await _answer(send, FAKE_MP4, b"video/mp4")
    elif method == "GET" and rest.startswith("/") and base in ("/api/v1", "/v1"):
        await _answer(send, _video(rest[1:]))
    elif method == "GET" and (path.startswith(("/api/v1/models/", "/v1/models/")) or path == "/_sandbox/stats"):
        await _answer(send, {"id": "luma-ray-flash-2", "pricing": {"credit_cost_fixed": 20}})  # "up?" too
    else:
        await _answer(send, {"error": {"message": f"no route {method} {path}"}}, status=404)


_ids = iter(range(1, 1 << 62))


def _video(video_id: str, model: str = "luma-ray-flash-2") -> dict[str, object]:
    now = int(time.time())
    return {"id": video_id, "object": "video", "model": model, "status": "completed", "progress": 100,
            "created_at": now, "completed_at": now, "expires_at": None, "prompt": "bench", "seconds": "5",
            "size": "960x540", "remixed_from_video_id": None, "error": None}


async def _answer(send, body: object, content_type: bytes = b"application/json", status: int = 200) -> None:  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
