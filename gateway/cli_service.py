"""``reelgate serve`` and ``reelgate keys``: running the HTTP service and managing caller keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.config import PollingConfig, load_settings
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import ReelgateError
from gateway.home import reelgate_home
from gateway.keys import KeyStore
from gateway.plugins import discover
from gateway.server.service import Service
from gateway.serving import serve_forever

err = Console(stderr=True)
#: emulated jobs finish in seconds, so poll them on a short schedule
SANDBOX_POLLING = PollingConfig(initial_s=0.2, max_s=1.0)
keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys for the HTTP service's callers.")


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    config: Annotated[Path | None, typer.Option("--config", help="reelgate.yaml")] = None,
    sandbox: Annotated[bool, typer.Option("--sandbox",
                                          help="Run the vendor emulators in this process and route to them.")] = False,
) -> None:
    """Run the HTTP service (OpenAI-compatible /v1/videos and the native API)."""
    from gateway.server import create_app

    try:
        settings = load_settings(config)
    except ReelgateError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    emulators = BackgroundServer(Sandbox.from_providers(discover().providers).app).start() if sandbox else None
    sandbox_url = emulators.url if emulators else None
    if sandbox:
        settings = settings.model_copy(update={"polling": SANDBOX_POLLING})

    async def start() -> Service:
        return await Service.start(settings, sandbox_url=sandbox_url)

    err.print(f"reelgate serving on http://{host}:{port} (state in {reelgate_home()})"
              + (f"; sandbox emulators at {sandbox_url}" if sandbox_url else ""), highlight=False)
    try:
        serve_forever(create_app(start), host, port, lifespan="on")
    except OSError as exc:
        err.print(f"[red]error:[/] cannot listen on {host}:{port}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if emulators is not None:
            emulators.stop()


def _keys() -> KeyStore:
    return KeyStore(reelgate_home() / "keys.db")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A name to recognise the key by.")],
    budget: Annotated[float | None, typer.Option("--budget", help="USD per day this key may spend.")] = None,
    provider: Annotated[list[str] | None, typer.Option("--provider", help="Only these providers (repeatable).")] = None,
) -> None:
    """Create a key and print it once (it is stored hashed and cannot be shown again)."""
    try:
        key, plaintext = _keys().create(name, budget_usd_per_day=budget, allowed_providers=provider)
    except ReelgateError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"created key {key.id} ({key.name}); this is the only time it is shown:", highlight=False)
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Keys by id and name (never the secret)."""
    keys = [k.to_dict() for k in _keys().list()]
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    for k in keys:
        typer.echo(f"{k['id']}  {k['name']}  {'revoked' if k['revoked'] else 'active'}"
                   + (f"  budget ${k['budget_usd_per_day']}/day" if k["budget_usd_per_day"] else "")
                   + (f"  providers {','.join(k['allowed_providers'])}" if k["allowed_providers"] else ""))


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or name.")]) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    try:
        revoked = _keys().revoke(key)
    except ReelgateError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"revoked {revoked.id} ({revoked.name})", highlight=False)
