"""``reelgate jobs``: the jobs of the service's store, newest first, for an operator.

``--at-risk`` lists only the jobs that may have been billed without a result (an
ambiguous submit, a job the vendor lost): each names the vendor, its job id and the
estimate, so someone can check that vendor's dashboard and ask for a refund.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli_output import error, make_console
from gateway.errors import ReelgateError

if TYPE_CHECKING:
    from gateway.job import VideoJob

err = make_console(stderr=True)


AtRiskOpt = Annotated[bool, typer.Option("--at-risk", help="Only jobs that may have been billed without a result.")]


def jobs(
    at_risk: AtRiskOpt = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many jobs.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="reelgate.yaml")] = None,
) -> None:
    """List the service's jobs, newest first (the store `reelgate serve` uses)."""
    from gateway.config import load_settings
    from gateway.home import reelgate_home

    try:
        settings = load_settings(config)
        url = settings.service.store_url or f"sqlite:///{reelgate_home() / 'reelgate.db'}"
        found = asyncio.run(_list(url, settings.service.store_schema, at_risk=at_risk, limit=limit))
    except ReelgateError as exc:
        error(err, exc.message)
        raise typer.Exit(2) from None
    rows = [summary(job) for job in found]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:  # said on stderr: stdout stays the (empty) list for scripts
        err.print("no jobs at risk" if at_risk else "no jobs in this store", highlight=False, markup=False)
    for row in rows:
        risk = "; ".join(f"{r['provider']} {r['vendor_job_id'] or '(no id)'} ${r['usd']:.2f}" for r in row["at_risk"])
        typer.echo(f"{row['id']}  {row['status']:<9}  {row['provider'] or '-':<9}  ${row['cost_usd']:.2f}"
                   + (f"  at risk ${row['at_risk_usd']:.2f}: {risk}" if risk else ""))


async def _list(url: str, schema: str, *, at_risk: bool, limit: int) -> list[VideoJob]:
    from gateway.store import open_store

    async with open_store(url, os.environ, schema=schema) as store:
        return await store.list_jobs(limit=limit, at_risk=at_risk)


def summary(job: VideoJob) -> dict[str, Any]:
    full = job.to_dict()
    return {k: full[k] for k in ("id", "status", "provider", "cost_usd", "at_risk_usd", "at_risk", "created_at")}
