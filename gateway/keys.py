"""API keys for the HTTP service's callers, hashed at rest, in the store the service uses.

A key reads ``rg_<id>_<secret>``: the id finds the row, the secret is checked against a
SHA-256 digest (a 256-bit random secret needs no slow hash) with a constant-time compare.
The plaintext is shown once, when created, and never stored or logged.

Where keys live follows the job store (``open_keys``): with a PostgreSQL store, its
``api_keys`` table (gateway/store/postgres_keys.py), so a key made once works on every
replica; with SQLite, ``$REELGATE_HOME/keys.db`` as always (``KeyStore`` below).

A verified key is remembered for ``cache_s`` seconds: a request then costs no store
round trip, and a revocation reaches every replica within that bound (docs/deploy.md).
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import functools
import hashlib
import hmac
import json
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidRequest
from gateway.permissions import private_dir, private_file
from gateway.store.sqlite_setup import until_unlocked

if TYPE_CHECKING:
    from gateway.store.base import JobStore

PREFIX = "rg_"
#: how long a verified key is trusted without asking the store again (the longest a
#: revocation takes to reach a replica that has just seen the key)
DEFAULT_CACHE_S = 2.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    budget_usd_per_day REAL,
    allowed_providers TEXT
)
"""
#: the columns of an ApiKey, in its field order, then the digest
COLUMNS = "id, name, created_at, revoked_at, budget_usd_per_day, allowed_providers"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    created_at: float
    revoked_at: float | None = None
    budget_usd_per_day: float | None = None
    allowed_providers: tuple[str, ...] | None = field(default=None)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "created_at": self.created_at, "revoked": not self.active,
                "budget_usd_per_day": self.budget_usd_per_day,
                "allowed_providers": list(self.allowed_providers) if self.allowed_providers else None}


@dataclass(frozen=True)
class NewKey:
    """A key about to be stored: its record, the digest kept, and the plaintext shown once."""
    key: ApiKey
    digest: str
    plaintext: str

    @property
    def providers_json(self) -> str | None:
        return json.dumps(list(self.key.allowed_providers)) if self.key.allowed_providers else None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(name: str, budget_usd_per_day: float | None, allowed_providers: builtins.list[str] | None) -> NewKey:
    """A fresh id and secret for ``name``, the inputs checked (400 naming the field)."""
    name = name.strip()
    if not name:
        raise InvalidRequest("name", "must not be empty")
    # NaN compares false with everything: without isfinite it would be stored and read as "no limit"
    if budget_usd_per_day is not None and not (math.isfinite(budget_usd_per_day) and budget_usd_per_day > 0):
        raise InvalidRequest("budget", f"must be a finite number of USD more than 0, not {budget_usd_per_day}")
    key = ApiKey(secrets.token_hex(6), name, time.time(), None, budget_usd_per_day,
                 tuple(allowed_providers) if allowed_providers else None)
    secret = secrets.token_urlsafe(32)
    return NewKey(key, digest(secret), f"{PREFIX}{key.id}_{secret}")


def name_taken(name: str) -> InvalidRequest:
    return InvalidRequest("name", f"a key named {name.strip()!r} exists already")


def no_such_key(id_or_name: str) -> InvalidRequest:
    return InvalidRequest("key", f"no active key with id or name {id_or_name!r}")


def key_of(row: tuple[Any, ...]) -> ApiKey:
    """An ApiKey from the ``COLUMNS`` of a row."""
    providers = tuple(json.loads(row[5])) if row[5] else None
    return ApiKey(row[0], row[1], row[2], row[3], row[4], providers)


class Keys(abc.ABC):
    """The caller keys of one deployment, whatever holds them. Verifying goes through a
    cache of ``cache_s`` seconds (0: ask the store every time)."""

    def __init__(self, *, cache_s: float = DEFAULT_CACHE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache_s = cache_s
        self._clock = clock
        #: key id -> (record, digest, when read); unknown ids are never cached
        self._cache: dict[str, tuple[ApiKey, str, float]] = {}
        #: key id -> its store read under way, which every request needing it then awaits
        self._reading: dict[str, asyncio.Task[tuple[ApiKey, str] | None]] = {}

    @abc.abstractmethod
    async def acreate(self, name: str, *, budget_usd_per_day: float | None = None,
                      allowed_providers: builtins.list[str] | None = None) -> tuple[ApiKey, str]:
        """A new key and its plaintext (shown once)."""

    @abc.abstractmethod
    async def alist(self) -> builtins.list[ApiKey]:
        """Every key, oldest first (never a secret)."""

    @abc.abstractmethod
    async def _arevoke(self, id_or_name: str) -> ApiKey:
        """Mark the key revoked; ``no_such_key`` when none is active."""

    @abc.abstractmethod
    async def _afetch(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The record and digest of ``key_id``, from the store."""

    async def arevoke(self, id_or_name: str) -> ApiKey:
        revoked = await self._arevoke(id_or_name)
        self._cache.pop(revoked.id, None)
        self._reading.pop(revoked.id, None)  # begun before: a request from now on reads anew
        return revoked

    async def averify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` belongs to, or None."""
        parsed = _parse(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is None or now - cached[2] >= self.cache_s:
            found = await self._read(key_id)
            if found is None:
                self._cache.pop(key_id, None)
                return None
            cached = (*found, now)
            if self.cache_s > 0:
                self._cache[key_id] = cached
        key, stored, _ = cached
        if not hmac.compare_digest(stored, digest(secret)):
            return None
        return key if key.active else None

    async def _read(self, key_id: str) -> tuple[ApiKey, str] | None:
        """``_afetch(key_id)``, one read at a time per key: when the cache entry of a busy
        key expires, the requests in flight with it (64 at once under the service's bench)
        all missed together, each a read of its own and, on SQLite, a thread hop (~0.1 per
        job; docs/benchmarks.md, section 6.gcloop). The read is a task of its own, so one
        caller going away (a client hanging up) does not cancel it for the others."""
        reading = self._reading.get(key_id)
        if reading is None:
            reading = asyncio.get_running_loop().create_task(self._afetch(key_id), name="reelgate-key-read")
            self._reading[key_id] = reading
            reading.add_done_callback(functools.partial(self._read_done, key_id))
        return await asyncio.shield(reading)

    def _read_done(self, key_id: str, reading: asyncio.Task[tuple[ApiKey, str] | None]) -> None:
        if self._reading.get(key_id) is reading:
            del self._reading[key_id]
        if not reading.cancelled():
            reading.exception()  # retrieved: its waiters may all have gone (they had it raised)

    async def aclose(self) -> None:
        """Let go of what this holds of its own (the job store's pool is the store's to close)."""
        self._cache.clear()


class KeyStore(Keys):
    """Keys in one SQLite file (``$REELGATE_HOME/keys.db``), through one connection kept
    open (a connection per request was a third of a busy service's time)."""

    def __init__(self, path: str | Path, *, cache_s: float = DEFAULT_CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(cache_s=cache_s, clock=clock)
        self.path = Path(path).expanduser()
        # hashed secrets still say who may call: the file is the operator's alone
        private_file(private_dir(self.path.parent) / self.path.name)
        self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        # one connection for every thread: sqlite3 objects must not be used at once
        self._lock = threading.Lock()
        with self._lock:
            # workers of one `serve --workers` open a new file at once: switching it to WAL
            # answers "locked" at once (no busy wait) to all but one, so try again
            until_unlocked(self._use_wal, 10)
            self._db.execute(_SCHEMA)

    def _use_wal(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def create(self, name: str, *, budget_usd_per_day: float | None = None,
               allowed_providers: builtins.list[str] | None = None) -> tuple[ApiKey, str]:
        """A new key and its plaintext (shown once)."""
        made = new_key(name, budget_usd_per_day, allowed_providers)
        try:
            self._query("INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL, ?, ?)",
                        (made.key.id, made.key.name, made.digest, made.key.created_at, budget_usd_per_day,
                         made.providers_json))
        except sqlite3.IntegrityError:
            raise name_taken(name) from None
        return made.key, made.plaintext

    def list(self) -> builtins.list[ApiKey]:
        return [key_of(r) for r in self._query(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at")]

    def revoke(self, id_or_name: str) -> ApiKey:
        with self._lock:
            done = self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR name = ?)"
                                    " AND revoked_at IS NULL", (time.time(), id_or_name, id_or_name)).rowcount
        if not done:
            raise no_such_key(id_or_name)
        self._cache.clear()
        return next(k for k in self.list() if id_or_name in (k.id, k.name))

    def fetch(self, key_id: str) -> tuple[ApiKey, str] | None:
        rows = self._query(f"SELECT {COLUMNS}, secret_sha256 FROM api_keys WHERE id = ?", (key_id,))
        return (key_of(rows[0][:6]), rows[0][6]) if rows else None

    def verify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` belongs to, or None (no cache: for tools)."""
        parsed = _parse(presented)
        found = self.fetch(parsed[0]) if parsed else None
        if parsed is None or found is None or not hmac.compare_digest(found[1], digest(parsed[1])):
            return None
        return found[0] if found[0].active else None

    async def acreate(self, name: str, *, budget_usd_per_day: float | None = None,
                      allowed_providers: builtins.list[str] | None = None) -> tuple[ApiKey, str]:
        return await asyncio.to_thread(self.create, name, budget_usd_per_day=budget_usd_per_day,
                                       allowed_providers=allowed_providers)

    async def alist(self) -> builtins.list[ApiKey]:
        return await asyncio.to_thread(self.list)

    async def _arevoke(self, id_or_name: str) -> ApiKey:
        return await asyncio.to_thread(self.revoke, id_or_name)

    async def _afetch(self, key_id: str) -> tuple[ApiKey, str] | None:
        return await asyncio.to_thread(self.fetch, key_id)

    async def aclose(self) -> None:
        await super().aclose()
        with self._lock:
            self._db.close()


def _parse(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a key in the ``rg_<id>_<secret>`` form, else None."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX):].partition("_")
    return (key_id, secret) if sep else None


def open_keys(store: JobStore, home: Path, *, cache_s: float = DEFAULT_CACHE_S) -> Keys:
    """The keys that go with an opened ``store``: in PostgreSQL beside its jobs (over the
    store's pool), else in ``home/keys.db``."""
    from gateway.store.sqlite import SqliteJobStore

    if not isinstance(store, SqliteJobStore):
        from gateway.store.postgres import PostgresJobStore
        from gateway.store.postgres_keys import PostgresKeys

        if isinstance(store, PostgresJobStore):
            return PostgresKeys(store, cache_s=cache_s)
    return KeyStore(home / "keys.db", cache_s=cache_s)
