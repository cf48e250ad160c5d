"""``reelgate serve`` and ``reelgate keys``: running the HTTP service and managing caller keys."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from gateway.cli_flags import KEYS, as_flags
from gateway.cli_output import error, make_console
from gateway.errors import InvalidRequest, ReelgateError, StoreUnavailable
from gateway.logs import LEVELS, LOG_LEVEL_ENV, configure, level_from

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.keys import Keys
    from gateway.server.service import Service

T = TypeVar("T")
err = make_console(stderr=True)
keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys for the HTTP service's callers.")
LogLevelOpt = Annotated[str | None, typer.Option(
    "--log-level", help=f"{' | '.join(LEVELS)} (default: ${LOG_LEVEL_ENV}, else info). Logs go to stderr.")]


def sandboxed(settings: Settings) -> Settings:
    """``settings`` for the sandbox: emulated jobs finish in seconds, so poll them on a short schedule."""
    from gateway.config import PollingConfig

    return settings.model_copy(update={"polling": PollingConfig(initial_s=0.2, max_s=1.0)})


def check_port(host: str, port: int) -> None:
    """Bind once and let go, so an address in use is one error line before any banner.
    (``serve_forever`` binds again: the port could still be taken in between, and is reported then.)"""
    from gateway.serving import bind

    try:
        bind(host, port).close()
    except OSError as exc:
        field = "--host" if isinstance(exc, socket.gaierror) else "--port"
        raise InvalidRequest(field, f"cannot listen on {host}:{port}: {exc.strerror}") from None


def start_logging(flag: str | None, *, default: str = "warning") -> None:
    """Structured logs on stderr at the level of ``--log-level``, else ``$REELGATE_LOG_LEVEL``,
    else ``default``. A bad value raises ``InvalidRequest`` naming the flag or variable."""
    configure(level_from(flag, default=default))


def where_state_lives(settings: Settings, home: Path) -> str:
    """For the start line: the home, or the PostgreSQL schema holding jobs and keys (never the
    URL, which may carry a password)."""
    url = settings.service.store_url
    if url is None or url.startswith("sqlite"):
        return f"state in {home}" if url is None else f"jobs in {url.split(':///', 1)[-1]}, keys under {home}"
    return f"jobs and keys in PostgreSQL, schema {settings.service.store_schema}; home {home}"


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    config: Annotated[Path | None, typer.Option("--config", help="reelgate.yaml")] = None,
    sandbox: Annotated[bool, typer.Option("--sandbox",
                                          help="Run the vendor emulators in this process and route to them.")] = False,
    sandbox_url: Annotated[str | None, typer.Option(
        "--sandbox-url", help="Route to the emulators of a running `reelgate sandbox` (several replicas share one).")
    ] = None,
    log_level: LogLevelOpt = None,
    replica_id: Annotated[str | None, typer.Option(
        "--replica-id", help="This replica's id among those sharing the store (default: host-pid-random).")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, max=64, help="Worker processes serving this port, each a replica with its own id "
        "(default: service.workers, else 1).")] = None,
) -> None:
    """Run the HTTP service (OpenAI-compatible /v1/videos and the native API)."""
    from gateway.config import load_settings
    from gateway.emulation.sandbox import BackgroundServer, Sandbox
    from gateway.home import reelgate_home
    from gateway.plugins import discover
    from gateway.server import create_app
    from gateway.server.leases import new_replica_id
    from gateway.server.service import Service
    from gateway.serving import serve_forever
    from gateway.worker_processes import check_workers, serve_workers

    try:
        start_logging(log_level, default="info")
        settings = load_settings(config)
        if workers is not None:
            settings = settings.model_copy(update={"service": settings.service.model_copy(update={"workers": workers})})
        check_workers(settings)
        check_port(host, port)
        check_store(settings, replica_id if settings.service.workers == 1 else None)  # workers: -w<i> ids
        if sandbox and sandbox_url:
            raise InvalidRequest("--sandbox-url", "give --sandbox or --sandbox-url, not both")
    except ReelgateError as exc:
        error(err, exc.message)
        raise typer.Exit(2) from None
    emulators = BackgroundServer(Sandbox.from_providers(discover().providers).app).start() if sandbox else None
    if emulators is not None:  # an external sandbox keeps the config's polling: its timing is set there
        sandbox_url = emulators.url
        settings = sandboxed(settings)

    async def start() -> Service:
        return await Service.start(settings, sandbox_url=sandbox_url, replica_id=replica_id)

    count = settings.service.workers
    err.print(f"reelgate serving on http://{host}:{port} ({where_state_lives(settings, reelgate_home())})"
              + (f" with {count} worker processes" if count > 1 else "")
              + (f"; sandbox emulators at {sandbox_url}" if sandbox_url else ""), highlight=False, markup=False)
    try:
        if count > 1:
            if not serve_workers(settings, host, port, base_id=replica_id or new_replica_id(),
                                 log_level=level_from(log_level, default="info"), sandbox_url=sandbox_url):
                error(err, "a worker failed to start (its log says why); all workers stopped")
                raise typer.Exit(3)
            return
        serve_forever(create_app(start), host, port, lifespan="on")
    except OSError as exc:
        error(err, f"--port: cannot listen on {host}:{port}: {exc.strerror}")
        raise typer.Exit(2) from None
    finally:
        if emulators is not None:
            emulators.stop()


ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="reelgate.yaml: the keys go to the store it names (service.store_url), as `serve` uses.")]


def check_store(settings: Settings, replica_id: str | None = None) -> None:
    """Open the job store once before serving: one that cannot be reached (PostgreSQL down, a
    wrong URL) is then one line and exit 3, not uvicorn's start-up traceback. The service
    opens it again itself; this also runs its migrations, once, before any worker starts.
    A ``--replica-id`` a live replica holds on the store is one line and exit 2 likewise
    (gateway/server/replica_ids.py; the service then holds it for as long as it runs)."""
    import asyncio

    from gateway.home import reelgate_home
    from gateway.permissions import private_dir
    from gateway.server.replica_ids import ReplicaIdInUse, hold_given_id, release_id
    from gateway.server.service import service_store_url
    from gateway.store import open_store

    async def run() -> None:
        url = service_store_url(settings, private_dir(reelgate_home()))
        async with open_store(url, env=os.environ, schema=settings.service.store_schema):
            await release_id(await hold_given_id(settings, url, replica_id))

    try:
        asyncio.run(run())
    except ReplicaIdInUse as exc:
        error(err, exc.message)
        raise typer.Exit(2) from None
    except ReelgateError as exc:
        error(err, f"service.store_url: {exc.message}")
        raise typer.Exit(3) from None


def _with_keys(config: Path | None, act: Callable[[Keys], Awaitable[T]]) -> T:
    """Run ``act`` on the caller keys of the store ``config`` names (a PostgreSQL store's
    api_keys table, else $REELGATE_HOME/keys.db); a bad config or input exits 2 with one line."""
    import asyncio

    from gateway.config import load_settings
    from gateway.home import reelgate_home
    from gateway.keys import open_keys
    from gateway.server.service import service_store_url
    from gateway.store import open_store

    async def run() -> T:
        home = reelgate_home()
        store = open_store(service_store_url(settings, home), env=os.environ, schema=settings.service.store_schema)
        async with store:
            keys = open_keys(store, home, cache_s=0)
            try:
                return await act(keys)
            finally:
                await keys.aclose()

    try:
        settings = load_settings(config)
        return asyncio.run(run())
    except StoreUnavailable as exc:  # its message names the kind of error, never the DSN
        error(err, f"--config: the key store cannot be used: {exc.message}")
        raise typer.Exit(2) from None
    except ReelgateError as exc:
        error(err, as_flags(exc, KEYS).message)
        raise typer.Exit(2) from None
    except Exception as exc:
        if not (isinstance(exc, OSError) or type(exc).__module__.startswith(("psycopg", "sqlite3"))):
            raise
        # the store cannot be reached: say its error's kind, never its DSN (it may hold a password)
        error(err, f"--config: the key store cannot be used ({type(exc).__name__})")
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A name to recognise the key by.")],
    budget: Annotated[float | None, typer.Option("--budget", help="USD per day this key may spend.")] = None,
    provider: Annotated[list[str] | None, typer.Option("--provider", help="Only these providers (repeatable).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key and print it once (it is stored hashed and cannot be shown again)."""
    key, plaintext = _with_keys(config, lambda keys: keys.acreate(name, budget_usd_per_day=budget,
                                                                  allowed_providers=provider))
    err.print(f"created key {key.id} ({key.name}); this is the only time it is shown:", highlight=False)
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
              config: ConfigOpt = None) -> None:
    """Keys by id and name (never the secret)."""
    keys = [k.to_dict() for k in _with_keys(config, lambda store: store.alist())]
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    if not keys:  # on stderr: stdout stays empty for scripts
        err.print("no keys yet: make one with `reelgate keys create --name NAME`", highlight=False, markup=False)
    for k in keys:
        typer.echo(f"{k['id']}  {k['name']}  {'revoked' if k['revoked'] else 'active'}"
                   + (f"  budget ${k['budget_usd_per_day']}/day" if k["budget_usd_per_day"] else "")
                   + (f"  providers {','.join(k['allowed_providers'])}" if k["allowed_providers"] else ""))


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or name.")], config: ConfigOpt = None) -> None:
    """Revoke a key: every replica answers 401 to it within service.key_cache_s (default 2 s)."""
    revoked = _with_keys(config, lambda keys: keys.arevoke(key))
    err.print(f"revoked {revoked.id} ({revoked.name})", highlight=False)
