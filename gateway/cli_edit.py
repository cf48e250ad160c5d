"""``reelgate modify`` and ``reelgate reframe``: an operation on a source video (a finished
job's id, an http(s) URL or a local file), routed, priced and run like ``generate``.

``--quote`` prices the operation at every provider instead of running it (as ``reelgate
quote`` does for a generation): who can do it, for how much, and why the others cannot.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway import cli_output as out
from gateway.cli_flags import EDIT
from gateway.cli_run import make_video, open_gateway
from gateway.cli_service import start_logging
from gateway.errors import ReelgateError

if TYPE_CHECKING:
    from gateway.request import VideoRequest

err = out.make_console(stderr=True)

SourceArg = Annotated[str, typer.Argument(help="The source video: a job id (vid_...), an http(s) URL or a file.")]
PromptOpt = Annotated[str | None, typer.Option("--prompt", help="What to change (optional).")]
ImageOpt = Annotated[str | None, typer.Option("--image", help="First frame of the output: file, URL or data URI.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="ray-2-flash (default) or ray-2")]
ProviderOpt = Annotated[list[str] | None, typer.Option("--provider",
                                                       help="Only these providers, in this order (repeatable).")]
RouteOpt = Annotated[str | None, typer.Option("--route", help="cheapest | fastest | priority")]
MaxCostOpt = Annotated[float | None, typer.Option("--max-cost", help="Refuse anything costing more (USD).")]
DeadlineOpt = Annotated[float | None, typer.Option("--deadline", help="Give up after this many seconds.")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the MP4.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
SandboxOpt = Annotated[bool, typer.Option("--sandbox", help="Use the built-in vendor emulators (no keys, no cost).")]
FaultOpt = Annotated[list[str] | None, typer.Option("--sandbox-fault",
                                                    help="VENDOR=FAULT, e.g. fal=outage (implies --sandbox).")]
QuoteOpt = Annotated[bool, typer.Option("--quote", help="Only price it at every provider; run nothing.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config",
                                                help="reelgate.yaml (default: $REELGATE_CONFIG or ./reelgate.yaml)")]


def edit_request(operation: str, source: str, **opts: Any) -> VideoRequest:
    """The neutral request for one CLI operation (bad input raises InvalidRequest naming the flag's field;
    gateway.cli_flags.EDIT says which flag that is)."""
    from gateway.request import VideoRequest

    edit: dict[str, Any] = {"operation": operation, "source": source}
    if opts.get("mode") is not None:
        edit["mode"] = opts["mode"]
    fields = {
        "prompt": opts.get("prompt"), "start_image": opts.get("image"), "aspect_ratio": opts.get("aspect_ratio"),
        "model": opts.get("model"), "providers": opts.get("provider") or None, "route": opts.get("route"),
        "max_cost_usd": opts.get("max_cost"), "deadline_s": opts.get("deadline"), "edit": edit,
    }
    return VideoRequest(**{k: v for k, v in fields.items() if v is not None})


def _run(operation: str, source: str, opts: dict[str, Any]) -> None:
    from gateway.config import load_settings

    as_json = bool(opts.get("as_json"))
    try:
        start_logging(None)
        settings = load_settings(opts.get("config"))
        request = edit_request(operation, source, **opts)
        if opts.get("quote"):
            with open_gateway(settings, err, sandbox=bool(opts.get("sandbox")), faults={},
                              announce=not as_json) as gateway:
                report = gateway.quote(request)
                asyncio.run(gateway.aclose())
            out.finish_quote(report, as_json, EDIT)
        job = make_video(settings, request, opts.get("output"), err, sandbox=bool(opts.get("sandbox")),
                         sandbox_fault=opts.get("sandbox_fault"), as_json=as_json)
    except ReelgateError as exc:
        out.fail(err, exc, as_json, flags=EDIT)
    out.finish(job, as_json)


def modify(
    source: SourceArg,
    mode: Annotated[str | None, typer.Option("--mode", help="adhere_1..3, flex_1..3, reimagine_1..3 "
                                                            "(default flex_1)")] = None,
    prompt: PromptOpt = None, image: ImageOpt = None, model: ModelOpt = None, provider: ProviderOpt = None,
    route: RouteOpt = None, max_cost: MaxCostOpt = None, deadline: DeadlineOpt = None, output: OutputOpt = None,
    as_json: JsonOpt = False, sandbox: SandboxOpt = False, sandbox_fault: FaultOpt = None, quote: QuoteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Restyle a video, keeping its motion and length; saves the result as an MP4."""
    _run("modify", source, {k: v for k, v in locals().items() if k != "source"})


def reframe(
    source: SourceArg,
    aspect_ratio: Annotated[str, typer.Option("--aspect-ratio", help="Target: 1:1 16:9 9:16 4:3 3:4 21:9 9:21")],
    prompt: PromptOpt = None, image: ImageOpt = None, model: ModelOpt = None, provider: ProviderOpt = None,
    route: RouteOpt = None, max_cost: MaxCostOpt = None, deadline: DeadlineOpt = None, output: OutputOpt = None,
    as_json: JsonOpt = False, sandbox: SandboxOpt = False, sandbox_fault: FaultOpt = None, quote: QuoteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Put a video on a canvas of another aspect ratio; saves the result as an MP4."""
    _run("reframe", source, {k: v for k, v in locals().items() if k != "source"})
