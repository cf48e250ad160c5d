"""``reelgate extend SOURCE --seconds 20``: continue a video past one clip (``gateway.sequence``).

SOURCE is a video file, an http(s) URL, a data URI, or the id of a finished job of the
service (``reelgate serve``'s store under ``REELGATE_HOME``), whose kept video is used.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway import cli_output as out
from gateway.cli_flags import EXTEND
from gateway.errors import InvalidRequest, ReelgateError

#: the prompt of every clip when none is given
DEFAULT_PROMPT = "continue the shot seamlessly"


def resolve_source(source: str, config: Path | None) -> dict[str, Any]:
    """The ``edit`` fields naming the source: a job id becomes its kept video."""
    from gateway.sequence import JOB_ID

    if not JOB_ID.match(source):
        return {"source": source}
    from gateway.config import load_settings
    from gateway.home import reelgate_home
    from gateway.store import open_store

    settings = load_settings(config)
    url = settings.service.store_url or f"sqlite:///{reelgate_home() / 'reelgate.db'}"

    async def find() -> Any:
        async with open_store(url, os.environ) as store:
            return await store.get(source)

    job = asyncio.run(find())
    if job is None or job.output is None:
        raise InvalidRequest("SOURCE", f"there is no finished job {source} in {url.split('?')[0]}")
    if job.output.uri and job.output.uri.startswith("file://"):
        from urllib.parse import urlsplit
        from urllib.request import url2pathname

        return {"source": url2pathname(urlsplit(job.output.uri).path)}
    return {"source": job.output.path or job.output.url}


def shape_of(source: str) -> tuple[str | None, str | None]:
    """(aspect ratio, resolution) of a local source file, when they are ones a request can name."""
    from gateway import joining
    from gateway.operations import SourceVideo, VideoKind

    try:
        parsed = SourceVideo.parse(source)  # what it is, checked before PyAV looks at it
    except ValueError as exc:
        raise InvalidRequest("SOURCE", str(exc)) from None
    if parsed.kind is not VideoKind.PATH:
        return None, None
    path = Path(parsed.value)
    from gateway.request import AspectRatio, Resolution

    try:
        info = joining.probe(path)
    except ValueError as exc:
        raise InvalidRequest("SOURCE", str(exc)) from None
    ratio = info.width / info.height
    aspect = min(AspectRatio, key=lambda a: abs(a.ratio[0] / a.ratio[1] - ratio))
    lines = f"{min(info.width, info.height)}p"
    return aspect.value, lines if lines in {r.value for r in Resolution} else None


def extend(
    source: Annotated[str, typer.Argument(help="Video file, http(s) URL, data URI, or a finished job's id.")],
    seconds: Annotated[int, typer.Option("--seconds", help="Length of the whole result, the source included.")],
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="Prompt of the clips; repeat it to give "
                                                      "each clip its own (then the first again).")] = None,
    aspect_ratio: Annotated[str | None, typer.Option("--aspect-ratio", help="Default: the source's.")] = None,
    resolution: Annotated[str | None, typer.Option("--resolution", help="Default: the source's.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="ray-2-flash (default) or ray-2")] = None,
    provider: Annotated[list[str] | None, typer.Option("--provider", help="Only these providers (repeatable).")] = None,
    route: Annotated[str | None, typer.Option("--route", help="cheapest | fastest | priority")] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", help="Refuse a sequence costing more (USD).")] = None,
    deadline: Annotated[float | None, typer.Option("--deadline", help="Give up after this many seconds.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the MP4.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Use the built-in vendor emulators.")] = False,
    sandbox_fault: Annotated[list[str] | None, typer.Option("--sandbox-fault", help="VENDOR=FAULT.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="reelgate.yaml")] = None,
) -> None:
    """Extend a video to --seconds by chaining clips (each starts on the last frame of the one before)."""
    from gateway.cli import err
    from gateway.cli_run import make_video
    from gateway.cli_service import start_logging
    from gateway.config import load_settings

    try:
        start_logging(None)
        settings = load_settings(config)
        request = extend_request(source, seconds, prompt or [], config=config, aspect_ratio=aspect_ratio,
                                 resolution=resolution, model=model, providers=provider, route=route,
                                 max_cost_usd=max_cost, deadline_s=deadline)
        job = make_video(settings, request, output, err, sandbox=sandbox, sandbox_fault=sandbox_fault,
                         as_json=as_json)
    except ReelgateError as exc:
        out.fail(err, exc, as_json, flags=EXTEND)
    out.finish(job, as_json)


def extend_request(source: str, seconds: int, prompts: list[str], *, config: Path | None = None,
                   **fields: Any) -> Any:
    """The neutral request of ``reelgate extend`` (and ``quote --extend``)."""
    from gateway.request import VideoRequest

    edit = {"operation": "extend", "target_seconds": seconds, "prompts": prompts[1:] and prompts,
            **resolve_source(source, config)}
    aspect, lines = shape_of(edit["source"])
    fields["aspect_ratio"] = fields.get("aspect_ratio") or aspect
    fields["resolution"] = fields.get("resolution") or lines
    data = {"prompt": prompts[0] if prompts else DEFAULT_PROMPT, "edit": edit,
            **{k: v for k, v in fields.items() if v is not None and v != []}}
    return VideoRequest(**data)
