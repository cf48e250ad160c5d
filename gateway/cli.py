"""The ``reelgate`` command: generate | quote | providers | sandbox.

User errors (bad input, nothing can honour a request, bad config) print one line and
exit 2; a job that ends failed exits 1; no traceback reaches the user for either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gateway import cli_output as out
from gateway.api import Gateway
from gateway.cli_jobs import jobs
from gateway.cli_service import SANDBOX_POLLING, keys_app, serve
from gateway.config import Settings, load_settings
from gateway.emulation.faults import FaultSpec, parse_assignment
from gateway.emulation.sandbox import BackgroundServer, Sandbox, serve_forever
from gateway.errors import ReelgateError
from gateway.job import JobStatus
from gateway.plugins import discover
from gateway.request import VideoRequest

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="reelgate: one API for video generation across vendors.")
err = Console(stderr=True)


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="reelgate.yaml (default: $REELGATE_CONFIG or ./reelgate.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
SandboxOpt = Annotated[bool, typer.Option("--sandbox", help="Use the built-in vendor emulators (no keys, no cost).")]
FaultOpt = Annotated[list[str] | None, typer.Option("--sandbox-fault", help="VENDOR=FAULT, e.g. fal=outage (implies --sandbox).")]
ImageOpt = Annotated[str | None, typer.Option("--image", help="Start frame: file path, http(s) URL or data URI.")]
EndImageOpt = Annotated[str | None, typer.Option("--end-image", help="End frame: file path, http(s) URL or data URI.")]
AspectOpt = Annotated[str | None, typer.Option("--aspect-ratio", help="16:9 9:16 1:1 4:3 3:4 21:9 9:21")]
ResolutionOpt = Annotated[str | None, typer.Option("--resolution", help="540p 720p 1080p (default: the provider's)")]
DurationOpt = Annotated[int | None, typer.Option("--duration", help="Seconds: 5 or 9.")]
LoopOpt = Annotated[bool, typer.Option("--loop", help="Blend the end back into the start.")]
ConceptOpt = Annotated[list[str] | None, typer.Option("--concept", help="Camera concept, e.g. dolly_zoom (repeatable).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="ray-2-flash (default) or ray-2")]
ProviderOpt = Annotated[list[str] | None, typer.Option("--provider", help="Only these providers, in this order (repeatable).")]
RouteOpt = Annotated[str | None, typer.Option("--route", help="cheapest | fastest | priority")]
MaxCostOpt = Annotated[float | None, typer.Option("--max-cost", help="Refuse anything costing more (USD).")]
AllowOpt = Annotated[list[str] | None, typer.Option("--allow", help="Allowed degradation, e.g. higher_resolution.")]
DeadlineOpt = Annotated[float | None, typer.Option("--deadline", help="Give up after this many seconds.")]


def main() -> None:
    app()


def _request(prompt: str, **opts: Any) -> VideoRequest:
    fields = {
        "prompt": prompt, "start_image": opts.get("image"), "end_image": opts.get("end_image"),
        "aspect_ratio": opts.get("aspect_ratio"), "resolution": opts.get("resolution"),
        "duration_s": opts.get("duration"), "loop": opts.get("loop") or None,
        "concepts": opts.get("concept") or None, "model": opts.get("model"),
        "providers": opts.get("provider") or None, "route": opts.get("route"),
        "max_cost_usd": opts.get("max_cost"), "allow": opts.get("allow") or None,
        "deadline_s": opts.get("deadline"),
    }
    return VideoRequest(**{k: v for k, v in fields.items() if v is not None})


def _faults(assignments: list[str] | None) -> dict[str, list[FaultSpec]]:
    faults: dict[str, list[FaultSpec]] = {}
    for text in assignments or []:
        try:
            vendor, spec = parse_assignment(text)
        except ValueError as exc:
            raise ReelgateError(f"--sandbox-fault {text}: {exc}") from None
        faults.setdefault(vendor, []).append(spec)
    return faults


@contextlib.contextmanager
def _gateway(settings: Settings, *, sandbox: bool, faults: dict[str, list[FaultSpec]],
             announce: bool = True) -> Iterator[Gateway]:
    """A gateway on real vendors, or on the sandbox: explicitly, or when no key is set at all."""
    if not sandbox:
        gateway = Gateway.from_settings(settings)
        if any(p.configured for p in gateway.providers.values()):
            yield gateway
            return
        if announce:
            names = ", ".join(sorted(type(p).credential_env for p in gateway.providers.values()))
            err.print(f"[yellow]No vendor API key is set ({names}): using the built-in sandbox.[/]")
    plugins = discover()
    try:
        sandbox_app = Sandbox.from_providers(plugins.providers, faults)
    except ValueError as exc:
        raise ReelgateError(f"--sandbox-fault: {exc}") from None
    with BackgroundServer(sandbox_app.app) as server:
        sandboxed = settings.model_copy(update={"polling": SANDBOX_POLLING})
        yield Gateway.from_settings(sandboxed, sandbox_url=server.url)


def _fail(exc: ReelgateError, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": exc.to_dict()}, indent=2))
    else:
        err.print(f"[red]error:[/] {exc.message}", highlight=False)
    raise typer.Exit(2)


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
    try:
        settings = load_settings(config)
        request = _request(prompt, **{k: v for k, v in locals().items() if k != "prompt"})
        faults = _faults(sandbox_fault)
        with _gateway(settings, sandbox=sandbox or bool(faults), faults=faults) as gateway:
            job = asyncio.run(_generate(gateway, request, output, show_progress=not as_json))
    except ReelgateError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        typer.echo(json.dumps(out.job_json(job), indent=2))
    else:
        out.print_job(job)
    raise typer.Exit(0 if job.status is JobStatus.SUCCEEDED else 1)


async def _generate(gateway: Gateway, request: VideoRequest, output: Path | None, *, show_progress: bool):
    async with gateway:
        with out.JobProgress(err, enabled=show_progress) as progress:
            job = await gateway.submit(request, on_update=progress.update)
            job = await gateway.wait(job)
        if job.status is JobStatus.SUCCEEDED:
            await gateway.download(job, output or Path(f"{job.id}.mp4"))
        return job


@app.command()
def quote(
    prompt: str, image: ImageOpt = None, end_image: EndImageOpt = None, aspect_ratio: AspectOpt = None,
    resolution: ResolutionOpt = None, duration: DurationOpt = None, loop: LoopOpt = False,
    concept: ConceptOpt = None, model: ModelOpt = None, provider: ProviderOpt = None, route: RouteOpt = None,
    max_cost: MaxCostOpt = None, allow: AllowOpt = None, as_json: JsonOpt = False, sandbox: SandboxOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Price a request at every provider: who can do it, for how much, and who would be chosen."""
    try:
        settings = load_settings(config)
        request = _request(prompt, **{k: v for k, v in locals().items() if k != "prompt"})
        with _gateway(settings, sandbox=sandbox, faults={}, announce=not as_json) as gateway:
            report = gateway.quote(request)
            asyncio.run(gateway.aclose())
    except ReelgateError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out.print_quote(report)
    raise typer.Exit(0 if report.chosen else 2)


@app.command()
def providers(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Installed provider plugins: models, capabilities, prices' basis, credentials."""
    try:
        gateway = Gateway.from_settings(load_settings(config))
        asyncio.run(gateway.aclose())
    except ReelgateError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        typer.echo(json.dumps(out.providers_json(gateway), indent=2))
    else:
        out.print_providers(gateway)


@app.command("sandbox")
def sandbox_cmd(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    fault: Annotated[list[str] | None, typer.Option("--fault", help="VENDOR=FAULT (repeatable).")] = None,
) -> None:
    """Serve every provider's emulator (no keys, no cost) until interrupted."""
    try:
        sandbox_app = Sandbox.from_providers(discover().providers, _faults(fault))
    except (ReelgateError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"reelgate sandbox on http://{host}:{port} — vendors: {', '.join(sandbox_app.emulators)}; "
              f"stats at /_sandbox/stats", highlight=False)
    try:
        serve_forever(sandbox_app.app, host, port)
    except OSError as exc:
        err.print(f"[red]error:[/] cannot listen on {host}:{port}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None


app.command("serve")(serve)
app.command("jobs")(jobs)
app.add_typer(keys_app, name="keys")

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
