"""The ``reelgate`` command: generate | modify | reframe | quote | providers | sandbox | serve | keys.

User errors (bad input, nothing can honour a request, bad config, a bad flag) print one
line and exit 2; a job that ends failed exits 1; Ctrl-C during a job says what was left
running and exits 130; no traceback reaches the user for any of them. The gateway, the
sandbox and the HTTP service are imported by the commands that use them, so
``reelgate --help`` loads none of them (no FastAPI, no PyAV).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway import __version__
from gateway import cli_output as out
from gateway.cli_edit import modify, reframe
from gateway.cli_extend import extend as extend_cmd
from gateway.cli_flags import GENERATE, quote_flags
from gateway.cli_jobs import jobs
from gateway.cli_run import make_video, open_gateway, parse_faults
from gateway.cli_service import LogLevelOpt, check_port, keys_app, serve, start_logging
from gateway.errors import InvalidRequest, ReelgateError

if TYPE_CHECKING:
    from gateway.request import VideoRequest

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="reelgate: one API for video generation across vendors.")
err = out.make_console(stderr=True)
#: click's base of usage errors, wherever this typer takes click from (newer typers vendor it)
_ClickError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"reelgate {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """reelgate: one API for video generation across vendors."""


ConfigOpt = Annotated[Path | None, typer.Option("--config",
                                                help="reelgate.yaml (default: $REELGATE_CONFIG or ./reelgate.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
SandboxOpt = Annotated[bool, typer.Option("--sandbox", help="Use the built-in vendor emulators (no keys, no cost).")]
FaultOpt = Annotated[list[str] | None, typer.Option("--sandbox-fault",
                                                    help="VENDOR=FAULT, e.g. fal=outage (implies --sandbox).")]
ImageOpt = Annotated[str | None, typer.Option("--image", help="Start frame: file path, http(s) URL or data URI.")]
EndImageOpt = Annotated[str | None, typer.Option("--end-image", help="End frame: file path, http(s) URL or data URI.")]
AspectOpt = Annotated[str | None, typer.Option("--aspect-ratio", help="16:9 9:16 1:1 4:3 3:4 21:9 9:21")]
ResolutionOpt = Annotated[str | None, typer.Option("--resolution", help="540p 720p 1080p (default: the provider's)")]
DurationOpt = Annotated[int | None, typer.Option("--duration",
                                                 help="Seconds: 5 or 9, or 10 to 30 as a chain of clips.")]
LoopOpt = Annotated[bool, typer.Option("--loop", help="Blend the end back into the start.")]
ConceptOpt = Annotated[list[str] | None, typer.Option("--concept",
                                                      help="Camera concept, e.g. dolly_zoom (repeatable).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="ray-2-flash (default) or ray-2")]
ProviderOpt = Annotated[list[str] | None, typer.Option("--provider",
                                                       help="Only these providers, in this order (repeatable).")]
RouteOpt = Annotated[str | None, typer.Option("--route", help="cheapest | fastest | priority")]
MaxCostOpt = Annotated[float | None, typer.Option("--max-cost", help="Refuse anything costing more (USD).")]
AllowOpt = Annotated[list[str] | None, typer.Option("--allow", help="Allowed degradation, e.g. higher_resolution.")]
DeadlineOpt = Annotated[float | None, typer.Option("--deadline", help="Give up after this many seconds.")]


def main() -> None:
    """The console script: click's usage errors (a bad flag value, a missing argument) become
    one ``error:`` line and exit 2, like every other bad input."""
    try:
        code = app(standalone_mode=False)
    except _ClickError as exc:
        out.error(err, exc.format_message())  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:  # Ctrl-C at a prompt or outside a job
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _request(prompt: str, **opts: Any) -> VideoRequest:
    from gateway.request import VideoRequest

    fields = {
        "prompt": prompt, "start_image": opts.get("image"), "end_image": opts.get("end_image"),
        "aspect_ratio": opts.get("aspect_ratio"), "resolution": opts.get("resolution"),
        "loop": opts.get("loop") or None,
        "concepts": opts.get("concept") or None, "model": opts.get("model"),
        "providers": opts.get("provider") or None, "route": opts.get("route"),
        "max_cost_usd": opts.get("max_cost"), "allow": opts.get("allow") or None,
        "deadline_s": opts.get("deadline"), "edit": opts.get("edit"),
    }
    if opts.get("duration") is not None:
        edit = opts.get("edit")
        source_flag = "--extend" if opts.get("extend") is not None else f"--{edit['operation']}" if edit else None
        fields.update(_duration_fields(opts["duration"], source_flag))
    if opts.get("extend") is not None:
        from gateway.cli_extend import extend_request

        # no PROMPT is extend's default prompt, as in `reelgate extend` (an empty one was refused)
        return extend_request(opts["extend"], opts.get("seconds") or 0, [prompt] if prompt else [],  # type: ignore[no-any-return]
                              config=opts.get("config"), **{k: v for k, v in fields.items() if k != "prompt"})
    return VideoRequest(**{k: v for k, v in fields.items() if v is not None})


def _duration_fields(seconds: int, source_flag: str | None) -> dict[str, Any]:
    """``--duration`` as request fields: one clip, or past the longest clip the length of a chain
    of clips (gateway.sequence). Its range is checked here, where it is made of two fields'
    ranges, so the error gives the whole of it; either field alone would give half."""
    from gateway.operations import MAX_EXTEND_SECONDS
    from gateway.sequence import CLIP_SECONDS

    longest = max(CLIP_SECONDS)
    if seconds in CLIP_SECONDS:
        return {"duration_s": seconds}
    if not longest < seconds <= MAX_EXTEND_SECONDS:
        clips = " or ".join(map(str, CLIP_SECONDS))
        raise InvalidRequest("--duration", f"{seconds} seconds is not offered; choose {clips} for one clip, "
                                           f"or {longest + 1} to {MAX_EXTEND_SECONDS} for a chain of clips")
    if source_flag is not None:  # the chain would replace the edit: the source would be dropped unseen
        raise InvalidRequest("--duration", f"more than {longest} seconds is a chain of clips made from the prompt "
                                           f"and cannot go with {source_flag}"
                                           + ("; give the whole length with --seconds" if source_flag == "--extend"
                                              else ""))
    return {"edit": {"operation": "extend", "target_seconds": seconds}}


@app.command()
def generate(
    prompt: str, image: ImageOpt = None, end_image: EndImageOpt = None, aspect_ratio: AspectOpt = None,
    resolution: ResolutionOpt = None, duration: DurationOpt = None, loop: LoopOpt = False,
    concept: ConceptOpt = None, model: ModelOpt = None, provider: ProviderOpt = None, route: RouteOpt = None,
    max_cost: MaxCostOpt = None, allow: AllowOpt = None, deadline: DeadlineOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the MP4.")] = None,
    as_json: JsonOpt = False, sandbox: SandboxOpt = False, sandbox_fault: FaultOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Generate a video and save it as an MP4."""
    opts = {k: v for k, v in locals().items() if k != "prompt"}
    from gateway.config import load_settings

    try:
        start_logging(None)
        settings = load_settings(config)
        request = _request(prompt, **opts)
        job = make_video(settings, request, output, err, sandbox=sandbox, sandbox_fault=sandbox_fault,
                         as_json=as_json)
    except ReelgateError as exc:
        out.fail(err, exc, as_json, flags=GENERATE)
    out.finish(job, as_json)


@app.command()
def quote(
    prompt: Annotated[str, typer.Argument(help="What to generate (optional with --modify/--reframe/--extend).")] = "",
    image: ImageOpt = None, end_image: EndImageOpt = None, aspect_ratio: AspectOpt = None,
    resolution: ResolutionOpt = None, duration: DurationOpt = None, loop: LoopOpt = False,
    concept: ConceptOpt = None, model: ModelOpt = None, provider: ProviderOpt = None, route: RouteOpt = None,
    max_cost: MaxCostOpt = None, allow: AllowOpt = None, as_json: JsonOpt = False, sandbox: SandboxOpt = False,
    config: ConfigOpt = None,
    modify: Annotated[str | None, typer.Option("--modify", help="Price a modify of this SOURCE instead.")] = None,
    reframe: Annotated[str | None, typer.Option("--reframe", help="Price a reframe of this SOURCE instead.")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="With --modify: adhere_1..reimagine_3.")] = None,
    extend: Annotated[str | None, typer.Option("--extend", help="Price `reelgate extend SOURCE` instead.")] = None,
    seconds: Annotated[int | None, typer.Option("--seconds", help="With --extend: the whole length.")] = None,
) -> None:
    """Price a request at every provider: who can do it, for how much, and who would be chosen."""
    opts = {k: v for k, v in locals().items() if k not in ("prompt", "modify", "reframe", "mode")}
    sources = [f for f, v in (("--modify", modify), ("--reframe", reframe), ("--extend", extend)) if v is not None]
    flags = quote_flags(sources[0] if sources else None)
    from gateway.config import load_settings

    try:
        settings = load_settings(config)
        _check_quote_flags(sources, mode=mode, seconds=seconds)
        if modify is not None or reframe is not None:
            # an operation on a source video: any generation-only flag given is a reason, not dropped
            opts["edit"] = {"operation": "modify" if modify is not None else "reframe",
                            "source": modify or reframe, **({"mode": mode} if mode is not None else {})}
        request = _request(prompt, **opts)
        with open_gateway(settings, err, sandbox=sandbox, faults={}, announce=not as_json) as gateway:
            report = gateway.quote(request)
            asyncio.run(gateway.aclose())
    except ReelgateError as exc:
        out.fail(err, exc, as_json, flags=flags)
    out.finish_quote(report, as_json, flags)


def _check_quote_flags(sources: list[str], *, mode: str | None, seconds: int | None) -> None:
    """At most one operation on a source, with only its own options: a second one, or an option
    of another, was dropped unseen and a different request priced."""
    if len(sources) > 1:
        raise InvalidRequest(sources[0], f"give one of --modify, --reframe or --extend, not {' and '.join(sources)}")
    if mode is not None and sources != ["--modify"]:
        raise InvalidRequest("--mode", "only goes with --modify")
    if seconds is None and sources == ["--extend"]:
        raise InvalidRequest("--seconds", "must be given with --extend: the whole length, the source included")
    if seconds is not None and sources != ["--extend"]:
        raise InvalidRequest("--seconds", "only goes with --extend (a generation's length is --duration)")


@app.command()
def providers(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Installed provider plugins: models, capabilities, prices' basis, credentials."""
    from gateway.api import Gateway
    from gateway.config import load_settings

    try:
        gateway = Gateway.from_settings(load_settings(config))
        asyncio.run(gateway.aclose())
    except ReelgateError as exc:
        out.fail(err, exc, as_json)
        return
    if as_json:
        typer.echo(json.dumps(out.providers_json(gateway), indent=2))
    else:
        out.print_providers(gateway)


@app.command("sandbox")
def sandbox_cmd(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    fault: Annotated[list[str] | None, typer.Option("--fault", help="VENDOR=FAULT (repeatable).")] = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Serve every provider's emulator (no keys, no cost) until interrupted."""
    from gateway.emulation.sandbox import Sandbox
    from gateway.plugins import discover
    from gateway.serving import serve_forever

    try:
        start_logging(log_level, default="info")
        sandbox_app = Sandbox.from_providers(discover().providers, parse_faults(fault, "--fault"))
        check_port(host, port)
    except ReelgateError as exc:
        out.error(err, exc.message)
        raise typer.Exit(2) from None
    except ValueError as exc:
        out.error(err, f"--fault: {exc}")
        raise typer.Exit(2) from None
    err.print(f"reelgate sandbox on http://{host}:{port} — vendors: {', '.join(sandbox_app.emulators)}; "
              f"stats at /_sandbox/stats", highlight=False, markup=False)
    try:
        serve_forever(sandbox_app.app, host, port)
    except OSError as exc:
        out.error(err, f"--port: cannot listen on {host}:{port}: {exc.strerror}")
        raise typer.Exit(2) from None


app.command("modify")(modify)
app.command("reframe")(reframe)
app.command("extend")(extend_cmd)
app.command("serve")(serve)
app.command("jobs")(jobs)
app.add_typer(keys_app, name="keys")

if __name__ == "__main__":  # pragma: no cover
    main()
