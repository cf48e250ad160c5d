"""One settings object, built from one YAML file plus the environment, passed down.

No globals: ``load_settings()`` returns a value; gateways, CLIs and servers are built
from it, so tests can build many isolated ones.

Secrets: each provider's key is read from its environment variable (``FAL_KEY``,
``APIFRAME_API_KEY``, ``RAILWAIL_API_KEY`` -- or the one named by ``api_key_env``),
or from ``api_key`` in the file when the operator chooses so. A key is wrapped in
:class:`~gateway.provider.Secret` at once and never printed.

Example ``reelgate.yaml``::

    default_route: cheapest          # cheapest | fastest | priority
    fallback_order: [fal, apiframe, railwail]
    providers:
      fal: {}                        # key from FAL_KEY
      apiframe:
        options: {usd_per_credit: 0.008}
      railwail:
        enabled: false
    retry: {submit_retries: 2, max_retry_after_s: 30}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError
from gateway.provider import ProviderSettings, Secret
from gateway.request import ModelFamily, RoutePolicy
from gateway.routing.circuit import CircuitSettings
from gateway.storage import StorageConfig

CONFIG_ENV = "REELGATE_CONFIG"
DEFAULT_CONFIG_NAMES = ("reelgate.yaml", "reelgate.yml")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    base_url: str | None = None
    #: environment variable to read the key from (default: the adapter's own)
    api_key_env: str | None = None
    #: a key written in the file; the environment wins when both are set
    api_key: str | None = Field(default=None, repr=False)
    options: dict[str, Any] = Field(default_factory=dict)
    #: jobs this account may run at once at the vendor; ``fastest`` penalises a full provider
    concurrency_limit: int | None = Field(default=None, ge=1)
    #: share of traffic under the ``weighted`` route (A/B tests, quota sharing)
    weight: float = Field(default=1.0, ge=0)


class _Defaults(ProviderConfig):
    """A provider the file does not name: the defaults, one frozen instance shared by every
    read (a plan reads a provider's settings twice; a new model each time was ~13 k instructions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_UNCONFIGURED = _Defaults()


class BudgetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: applies when a request names no ``max_cost_usd`` (and caps one that names more)
    per_request_usd: float | None = Field(default=None, gt=0)
    #: estimated + settled spend per UTC day, across all jobs of this gateway
    per_day_usd: float | None = Field(default=None, gt=0)


class HedgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: off by default: a hedge may pay for two videos
    enabled: bool = False
    #: for ``fastest``: if the chosen vendor has not started running the job after this
    #: many seconds, submit to the next candidate too and keep whichever finishes first
    after_s: float = Field(default=30.0, gt=0)


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: extra submit calls to the same vendor when it rejected the call (429, 5xx)
    submit_retries: int = Field(default=2, ge=0, le=10)
    #: extra submit calls across all of one job's attempts (a flaky minute costs latency, not hours)
    request_retry_budget: int = Field(default=6, ge=0, le=50)
    #: a Retry-After longer than this falls back at once instead of waiting
    max_retry_after_s: float = Field(default=30.0, ge=0)
    base_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    #: consecutive failed polls before an attempt is given up (the job is not resubmitted blindly)
    poll_error_budget: int = Field(default=20, ge=1)


class PollingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: override every provider's first poll interval / cap (seconds); None keeps the vendor's
    initial_s: float | None = Field(default=None, gt=0)
    max_s: float | None = Field(default=None, gt=0)


class AliasConfig(BaseModel):
    """A name apps may pass as ``model`` (e.g. ``fast``) standing for routing choices."""

    model_config = ConfigDict(extra="forbid")

    model: ModelFamily | None = None
    route: RoutePolicy | None = None
    providers: list[str] | None = None


class ServiceConfig(BaseModel):
    """``reelgate serve``: where state lives and what callers may send."""

    model_config = ConfigDict(extra="forbid")

    #: the job store: ``sqlite:///path`` (default: $REELGATE_HOME/reelgate.db) or ``postgresql://...``
    store_url: str | None = None
    #: the PostgreSQL schema holding the store's tables (two deployments, or test runs,
    #: can share one database); ignored for SQLite
    store_schema: str = Field(default="reelgate", min_length=1, max_length=63)
    #: this service's public base URL, given to vendors for completion webhooks (None: poll only)
    public_url: str | None = None
    #: the largest request body or upload accepted
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    #: refuse callers without an API key (off only for a local, single-user service)
    require_api_key: bool = True
    #: the longest pause while a request body arrives (like nginx's client_body_timeout):
    #: a half-sent body gets 408 and its connection is closed
    body_timeout_s: float = Field(default=30.0, gt=0)
    #: browser origins (``https://app.example.com``) allowed to call the API across origins;
    #: empty: none (no CORS headers, cross-origin writes refused with 403); ``["*"]``: any
    cors_allow_origins: list[str] = Field(default_factory=list)
    #: replicas share the store and lease its jobs (docs/deploy.md); None: on for PostgreSQL,
    #: off for SQLite (one process owns the store and resumes every unfinished job at start)
    leases: bool | None = None
    #: how long a replica's lease on a job lasts unrenewed: a dead replica's jobs move on after it
    lease_s: float = Field(default=30.0, gt=0)
    #: the most jobs one replica follows that it claimed from others (its own submits not counted)
    max_claimed_jobs: int = Field(default=1000, gt=0)
    #: how long a replica trusts a caller key it has verified without asking the store again:
    #: the longest a ``reelgate keys revoke`` takes to reach every replica (0: every request asks)
    key_cache_s: float = Field(default=2.0, ge=0, le=300)
    #: worker processes serving one port on this host (``reelgate serve --workers``), each a
    #: replica with its own id, sharing the store through leases (docs/deploy.md); 1: one process
    workers: int = Field(default=1, ge=1, le=64)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_route: RoutePolicy = RoutePolicy.CHEAPEST
    #: the order ``priority`` uses, and the tie-break elsewhere
    fallback_order: list[str] = Field(default_factory=list)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    polling: PollingConfig = Field(default_factory=PollingConfig)
    #: after an ambiguous submit at a vendor that cannot deduplicate, may we try another
    #: vendor even though the first may also bill? Off: the job fails and says why.
    allow_duplicate_spend: bool = False
    #: seconds after a submit whose answer was lost during which the vendor's job may still
    #: be adopted (a fal callback naming the attempt); then the attempt fails, at risk
    adoption_window_s: float = Field(default=300.0, ge=0)
    #: after a vendor's moderation rejects a job, try the next vendor (off: stop there)
    content_rejection_fallback: bool = False
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    hedging: HedgeConfig = Field(default_factory=HedgeConfig)
    #: seconds one HTTP call to a vendor may take
    http_timeout_s: float = Field(default=30.0, gt=0)
    #: names apps may use as ``model`` for routing choices (OpenAI-compatible clients)
    aliases: dict[str, AliasConfig] = Field(default_factory=dict)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    #: where finished videos are kept (the service always keeps them; vendor URLs expire)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    #: Redis shared by replicas for circuits, budgets and concurrency slots (docs/deploy.md);
    #: also ``REELGATE_REDIS_URL``. None: all of it in this process
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://", repr=False)

    def provider(self, name: str) -> ProviderConfig:
        return self.providers.get(name) or _UNCONFIGURED


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, as ``line 3, column 5: expected ',' or '}'``. Never the snippet of the
    file PyYAML's own message quotes: the line may hold a key (``providers.fal.api_key``)."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    problem = "".join(c for c in str(problem) if c.isprintable())[:120]
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def load_settings(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``path``, else ``$REELGATE_CONFIG``, else ./reelgate.yaml, else defaults."""
    env = os.environ if env is None else env
    candidate = path or env.get(CONFIG_ENV)
    if candidate is None:
        candidate = next((p for p in DEFAULT_CONFIG_NAMES if Path(p).is_file()), None)
    if candidate is None:
        return Settings()
    file = Path(candidate).expanduser()
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(file)!r} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid YAML: {_yaml_problem(exc)}") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(file)!r} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(file)!r} must hold a mapping at the top level")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"config file {str(file)!r}: {where}: {err['msg']}") from None


def provider_settings(
    name: str, credential_env: str, settings: Settings, *, env: Mapping[str, str] | None = None
) -> ProviderSettings:
    """What one adapter is built with: its key (env first, then file), URL and options."""
    env = os.environ if env is None else env
    conf = settings.provider(name)
    var = conf.api_key_env or credential_env
    if env.get(var):
        key, ref = Secret(env[var]), f"env:{var}"
    elif conf.api_key:
        key, ref = Secret(conf.api_key), "config"
    else:
        key, ref = None, "none"
    return ProviderSettings(name=name, api_key=key, credential_ref=ref, base_url=conf.base_url,
                            options=dict(conf.options))
