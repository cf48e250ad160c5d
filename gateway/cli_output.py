"""How the CLI shows jobs, quotes and providers (rich for people, JSON for programs).

When a stream is not a terminal, every message is one line however long (rich would
otherwise wrap at 80 columns): a program reading it, or a test, sees one line per event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.cli_flags import Flags, as_flags

if TYPE_CHECKING:
    from gateway.api import Gateway, QuoteReport
    from gateway.errors import ReelgateError
    from gateway.job import VideoJob
    from gateway.sequence_quote import SequenceQuote


def make_console(*, stderr: bool = False) -> Console:
    target = Console(stderr=stderr)
    target.soft_wrap = not target.is_terminal  # no wrapping at 80 columns into a pipe or file
    return target


console = make_console()


def error(target: Console, message: str) -> None:
    """``error: <message>`` on one line; the message is text, never rich markup."""
    target.print(f"[red]error:[/] {escape(message)}", highlight=False)


class Announcer:
    """Says, once per attempt, that a vendor accepted the job (job id, vendor, vendor job id):
    what a user needs to find the job again if this process stops."""

    def __init__(self, target: Console, then: Callable[[VideoJob], None]) -> None:
        self._target = target
        self._then = then
        self._told: set[str] = set()

    def __call__(self, job: VideoJob) -> None:
        attempt = job.current
        if attempt is not None and attempt.vendor_job is not None and attempt.attempt_key not in self._told:
            self._told.add(attempt.attempt_key)
            self._target.print(f"submitted job {job.id} to {attempt.provider} as vendor job "
                               f"{attempt.vendor_job.vendor_id}", highlight=False, markup=False)
        self._then(job)


class JobProgress:
    """A live progress bar fed by the gateway's job updates."""

    def __init__(self, target: Console, *, enabled: bool) -> None:
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), console=target, disable=not enabled, transient=True,
        )
        self._task = self._progress.add_task("queued", total=100)
        self._enabled = enabled

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        # rich's stop() prints an empty line on a console that is not interactive, even for a
        # disabled bar: into a pipe that would be a blank line before the result or the error
        if self._enabled:
            self._progress.stop()

    def update(self, job: VideoJob) -> None:
        where = f" at {job.current.provider}" if job.current else ""
        self._progress.update(self._task, description=f"{job.status.value}{where}",
                              completed=round((job.progress or 0) * 100))


def job_json(job: VideoJob) -> dict[str, Any]:
    data = job.to_dict()
    data["output_path"] = job.output.path if job.output else None
    return data


def print_job(job: VideoJob) -> None:
    from gateway.job import JobStatus

    if job.status is JobStatus.SUCCEEDED:
        assert job.output is not None
        attempt = job.attempts[-1]
        units = f" ({attempt.vendor_units:g} {attempt.unit_name})" if attempt.vendor_units is not None else ""
        console.print(f"[green]✓[/] {job.output.path or job.output.url}", highlight=False)
        # an edit's length and size follow its source: only a generation (or a chain) has them from the request
        edit = job.request.edit
        shape = (f"{job.resolution}, {job.seconds:g}s {job.request.aspect_ratio.value}"
                 if edit is None or edit.operation == "extend"
                 else f"{edit.operation} of {edit.source.describe()}"
                 + (f" to {job.request.aspect_ratio.value}" if edit.operation == "reframe" else ""))
        console.print(f"  made by [bold]{job.provider}[/] ({attempt.vendor_model}), {shape}; "
                      f"cost ${job.cost_usd:.2f}{units}", highlight=False)
    else:
        message = (job.error or {}).get("message", job.status.value)
        console.print(f"[red]✗ job {job.status.value}:[/] {message}", highlight=False)
    for a in job.attempts:
        if a.error:
            console.print(f"  attempt at {a.provider}: {a.outcome.value} — {a.error['class']}: {a.error['message']}",
                          highlight=False)
    for seg in job.plan.get("sequence", {}).get("segments", []):
        console.print(f"  segment {seg['index']}: {seg['duration_s']} s by {seg.get('provider') or '—'}, "
                      f"${seg.get('cost_usd') or 0:.2f} ({seg['job_id']})", highlight=False)
    for d in [*job.degradations, *job.notes]:
        console.print(f"  note: {d}", highlight=False)


def print_quote(report: QuoteReport | SequenceQuote) -> None:
    from gateway.sequence_quote import SequenceQuote

    if isinstance(report, SequenceQuote):
        _print_sequence_quote(report)
        return
    table = Table(title="Quote", show_lines=False)
    for col in ("provider", "eligible", "cost (USD)", "vendor units", "why not"):
        table.add_column(col)
    skipped = report.plan.skipped if report.plan else {}
    for e in report.eligibility:
        q = e.quote
        units = f"{q.vendor_units:g} {q.unit_name}" if q and q.vendor_units is not None else ""
        why = "; ".join(e.reasons) or skipped.get(e.provider, "")
        mark = "[green]yes[/]" if e.eligible and e.provider not in skipped else "[red]no[/]"
        table.add_row(e.provider, mark, f"{q.usd:.2f}" if q else "—", units, why)
    console.print(table)
    if report.chosen and report.plan:
        order = " → ".join(c.provider for c in report.plan.candidates)
        console.print(f"chosen: [bold]{report.chosen}[/] (policy {report.plan.policy.value}; order {order})")
    elif report.error:
        console.print(f"[red]no provider would be chosen:[/] {report.error.message}", highlight=False)


def _print_sequence_quote(report: SequenceQuote) -> None:
    for i, (seconds, segment) in enumerate(report.segments, 1):
        chosen = segment.plan.candidates[0] if segment.plan and segment.plan.candidates else None
        where = f"{chosen.provider} ${chosen.quote.usd:.2f}" if chosen else f"[red]none[/] ({segment.error})"
        console.print(f"segment {i}: {seconds} s → {where}", highlight=False)
    for note in report.notes:
        console.print(f"  note: {note}", highlight=False)
    if report.error is None:
        console.print(f"sequence: {len(report.segments)} clips, [bold]${report.usd:.2f}[/]", highlight=False)
    else:
        console.print(f"[red]the sequence cannot be made:[/] {report.error.message}", highlight=False)


def providers_json(gateway: Gateway) -> dict[str, Any]:
    items = []
    for name, p in gateway.providers.items():
        models = {}
        for family, caps in p.capabilities().items():
            models[family.value] = {
                "aspect_ratios": sorted(a.value for a in caps.aspect_ratios),
                "resolutions": sorted((r.value for r in caps.resolutions), key=lambda r: int(r[:-1])),
                "default_resolution": caps.default_resolution.value,
                "durations": sorted(caps.durations),
                "start_image": caps.start_image, "end_image": caps.end_image, "loop": caps.loop,
                "concepts": len(caps.concepts), "image_inputs": sorted(k.value for k in caps.image_kinds),
            }
        items.append({
            "name": name, "title": type(p).title, "credential_env": type(p).credential_env,
            "credentials_set": p.configured, "credential_source": p.settings.credential_ref,
            "base_url": p.base_url, "docs": type(p).docs_url, "models": models,
        })
    return {"providers": items, "load_failures": gateway.load_failures}


def print_providers(gateway: Gateway) -> None:
    data = providers_json(gateway)
    table = Table(title="Providers")
    for col in ("name", "model", "aspect ratios", "resolutions", "s", "frames", "loop", "concepts", "key"):
        table.add_column(col)
    for p in data["providers"]:
        key = (f"[green]{p['credential_env']} set[/]" if p["credentials_set"]
               else f"[yellow]{p['credential_env']} unset[/]")
        for family, m in p["models"].items():
            frames = "+".join(x for x, ok in (("start", m["start_image"]), ("end", m["end_image"])) if ok) or "—"
            table.add_row(p["name"], family, " ".join(m["aspect_ratios"]), " ".join(m["resolutions"]),
                          "/".join(map(str, m["durations"])), frames, "yes" if m["loop"] else "no",
                          str(m["concepts"]), key)
    console.print(table)
    for name, why in data["load_failures"].items():
        console.print(f"[red]plugin {name} failed to load:[/] {why}", highlight=False)
    if not any(p["credentials_set"] for p in data["providers"]):
        console.print("No vendor keys set: `reelgate generate` uses the built-in sandbox.")


def fail(console: Console, exc: ReelgateError, as_json: bool, flags: Flags | None = None) -> NoReturn:
    """A command's bad input or refusal: one line (or the JSON error), exit 2; a bad field
    named by the flag that filled it, when ``flags`` (gateway.cli_flags) has it."""
    if flags is not None:
        exc = as_flags(exc, flags)
    if as_json:
        typer.echo(json.dumps({"error": exc.to_dict()}, indent=2))
    else:
        error(console, exc.message)
    raise typer.Exit(2)


def finish_quote(report: QuoteReport | SequenceQuote, as_json: bool, flags: Flags) -> NoReturn:
    """A command's quote: printed (or its JSON), its error naming the flag the user typed;
    exit 0 when a provider would be chosen, else 2."""
    if report.error is not None:
        report.error = as_flags(report.error, flags)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_quote(report)
    raise typer.Exit(0 if report.chosen else 2)


def finish(job: VideoJob, as_json: bool) -> NoReturn:
    """A command's job at its end: printed (or its JSON), exit 0 when it succeeded, else 1."""
    from gateway.job import JobStatus

    if as_json:
        typer.echo(json.dumps(job_json(job), indent=2))
    else:
        print_job(job)
    raise typer.Exit(0 if job.status is JobStatus.SUCCEEDED else 1)
