"""What ``reelgate generate`` and ``quote`` do around a gateway: check the output path before
anything is paid for, pick real vendors or the sandbox, run the job, and say what was left
running when the user pressed Ctrl-C.

The heavy parts (the gateway, the sandbox's server) are imported where they are used, so
``reelgate --help`` loads none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from gateway.errors import InvalidRequest, ReelgateError

if TYPE_CHECKING:
    from gateway.api import Gateway
    from gateway.config import Settings
    from gateway.emulation.faults import FaultSpec
    from gateway.job import VideoJob
    from gateway.request import VideoRequest


def check_output(output: Path | None) -> None:
    """Refuse an output path that cannot take the MP4, before any vendor is paid to make it."""
    if output is None:  # the default, ./<job id>.mp4
        if not os.access(Path.cwd(), os.W_OK):
            raise InvalidRequest("--output", f"the current directory {Path.cwd()} is not writable; pass --output")
        return
    target = output.expanduser()
    if target.is_dir():
        raise InvalidRequest("--output", f"{output} is a directory; name the .mp4 file to write")
    if not target.parent.is_dir():
        raise InvalidRequest("--output", f"directory {target.parent} does not exist")
    existed = target.exists()
    try:
        # open it as the download will: permissions, read-only mounts and odd files all show here
        with open(target, "ab"):
            pass
    except OSError as exc:
        raise InvalidRequest("--output", f"{output} cannot be written: {exc.strerror}") from None
    if not existed:
        target.unlink(missing_ok=True)


def parse_faults(assignments: list[str] | None, flag: str) -> dict[str, list[FaultSpec]]:
    from gateway.emulation.faults import parse_assignment

    faults: dict[str, list[FaultSpec]] = {}
    for text in assignments or []:
        try:
            vendor, spec = parse_assignment(text)
        except ValueError as exc:
            raise InvalidRequest(flag, f"{text}: {exc}") from None
        faults.setdefault(vendor, []).append(spec)
    return faults


@contextlib.contextmanager
def open_gateway(settings: Settings, err: Console, *, sandbox: bool, faults: dict[str, list[FaultSpec]],
                 announce: bool = True) -> Iterator[Gateway]:
    """A gateway on real vendors, or on the sandbox: explicitly, or when no key is set at all."""
    from gateway.api import Gateway

    if not sandbox:
        gateway = Gateway.from_settings(settings)
        if any(p.configured for p in gateway.providers.values()):
            yield gateway
            return
        if announce:
            names = ", ".join(sorted(type(p).credential_env for p in gateway.providers.values()))
            err.print(f"[yellow]No vendor API key is set ({names}): using the built-in sandbox.[/]", highlight=False)
    from gateway.cli_service import sandboxed
    from gateway.emulation.sandbox import BackgroundServer, Sandbox
    from gateway.plugins import discover

    try:
        sandbox_app = Sandbox.from_providers(discover().providers, faults)
    except ValueError as exc:
        raise InvalidRequest("--sandbox-fault", str(exc)) from None
    with BackgroundServer(sandbox_app.app) as server:
        yield Gateway.from_settings(sandboxed(settings), sandbox_url=server.url)


async def generate(gateway: Gateway, request: VideoRequest, output: Path | None, err: Console, *,
                   show_progress: bool) -> VideoJob:
    from gateway import cli_output as out
    from gateway.job import JobStatus

    async with gateway:
        # a live bar is for a person at a terminal; into a pipe it would leave a blank line
        with out.JobProgress(err, enabled=show_progress and err.is_terminal) as progress:
            job = await gateway.submit(request, on_update=out.Announcer(err, progress.update))
            job = await gateway.wait(job)
        if job.status is JobStatus.SUCCEEDED:
            target = output or Path(f"{job.id}.mp4")
            try:
                await gateway.download(job, target)
            except OSError as exc:  # checked before the submit; the disk may still fill up since
                raise ReelgateError(f"job {job.id} succeeded but {target} cannot be written ({exc.strerror}); "
                                    f"its video is at {job.output.url if job.output else 'the vendor'}") from None
        return job


def interrupted(gateway: Gateway) -> str:
    """What a user who pressed Ctrl-C must know: which job, where it runs, what to do now."""
    job = next(reversed(gateway.jobs.values()), None)
    if job is None:
        return "interrupted before any job was submitted: nothing was started or billed"
    attempt = job.current
    if attempt is None:
        return f"interrupted: job {job.id} was not yet sent to any vendor: nothing was started or billed"
    provider = gateway.providers[attempt.provider]
    if provider.settings.sandbox:
        where = "the built-in sandbox stopped with this process, so nothing is left running or billed"
    else:
        where = (f"it may still run and be billed there; `reelgate generate` keeps no record to resume from, so "
                 f"check or cancel it with {attempt.provider} ({type(provider).docs_url}) by that id, or run jobs "
                 f"through `reelgate serve`, whose GET and DELETE /v1/jobs/<id> follow and cancel them")
    if attempt.vendor_job is None:
        return (f"interrupted: job {job.id} had a submit to {attempt.provider} in flight (no vendor job id came "
                f"back, a job may exist there); {where}")
    return (f"interrupted: job {job.id} ({job.status.value}) is vendor job {attempt.vendor_job.vendor_id} at "
            f"{attempt.provider}; {where}")


def run_generate(gateway: Gateway, request: VideoRequest, output: Path | None, err: Console, *,
                 show_progress: bool) -> VideoJob:
    """Run the job to its end; on Ctrl-C, say what was left where and exit 130."""
    import typer

    try:
        return asyncio.run(generate(gateway, request, output, err, show_progress=show_progress))
    except KeyboardInterrupt:
        err.print(interrupted(gateway), highlight=False, markup=False)
        raise typer.Exit(130) from None


def make_video(settings: Settings, request: VideoRequest, output: Path | None, err: Console, *,
               sandbox: bool, sandbox_fault: list[str] | None, as_json: bool) -> VideoJob:
    """What ``generate``, ``extend``, ``modify`` and ``reframe`` share: the output path checked
    before anything is paid for, the gateway opened (in the sandbox when asked, or when faults
    are injected, which only the sandbox can), and the job run to its end."""
    check_output(output)
    faults = parse_faults(sandbox_fault, "--sandbox-fault")
    with open_gateway(settings, err, sandbox=sandbox or bool(faults), faults=faults) as gateway:
        return run_generate(gateway, request, output, err, show_progress=not as_json)
