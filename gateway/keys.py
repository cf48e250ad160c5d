"""API keys for the HTTP service's callers, hashed at rest.

A key reads ``rg_<id>_<secret>``: the id finds the row, the secret is checked against a
SHA-256 digest (a 256-bit random secret needs no slow hash) with a constant-time compare.
The plaintext is shown once, when created, and never stored or logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import InvalidRequest
from gateway.permissions import private_dir, private_file

PREFIX = "rg_"

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


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Keys in one SQLite file (``$REELGATE_HOME/keys.db`` by default)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        # hashed secrets still say who may call: the file is the operator's alone
        private_file(private_dir(self.path.parent) / self.path.name)
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def create(self, name: str, *, budget_usd_per_day: float | None = None,
               allowed_providers: list[str] | None = None) -> tuple[ApiKey, str]:
        """A new key and its plaintext (shown once)."""
        name = name.strip()
        if not name:
            raise InvalidRequest("name", "must not be empty")
        # NaN compares false with everything: without isfinite it would be stored and read as "no limit"
        if budget_usd_per_day is not None and not (math.isfinite(budget_usd_per_day) and budget_usd_per_day > 0):
            raise InvalidRequest("budget", f"must be a finite number of USD more than 0, not {budget_usd_per_day}")
        key = ApiKey(secrets.token_hex(6), name, time.time(), None, budget_usd_per_day,
                     tuple(allowed_providers) if allowed_providers else None)
        secret = secrets.token_urlsafe(32)
        with self._connect() as db:
            try:
                db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL, ?, ?)",
                           (key.id, key.name, _digest(secret), key.created_at, budget_usd_per_day,
                            json.dumps(allowed_providers) if allowed_providers else None))
            except sqlite3.IntegrityError:
                raise InvalidRequest("name", f"a key named {name!r} exists already") from None
        return key, f"{PREFIX}{key.id}_{secret}"

    def list(self) -> list[ApiKey]:
        with self._connect() as db:
            rows = db.execute("SELECT id, name, created_at, revoked_at, budget_usd_per_day, allowed_providers"
                              " FROM api_keys ORDER BY created_at").fetchall()
        return [self._key(r) for r in rows]

    def revoke(self, id_or_name: str) -> ApiKey:
        with self._connect() as db:
            done = db.execute("UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                              (time.time(), id_or_name, id_or_name)).rowcount
        if not done:
            raise InvalidRequest("key", f"no active key with id or name {id_or_name!r}")
        return next(k for k in self.list() if id_or_name in (k.id, k.name))

    def verify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` belongs to, or None."""
        if not presented.startswith(PREFIX):
            return None
        key_id, sep, secret = presented[len(PREFIX):].partition("_")
        if not sep:
            return None
        with self._connect() as db:
            row = db.execute("SELECT id, name, created_at, revoked_at, budget_usd_per_day, allowed_providers,"
                             " secret_sha256 FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None or not hmac.compare_digest(row[6], _digest(secret)):
            return None
        key = self._key(row[:6])
        return key if key.active else None

    async def averify(self, presented: str) -> ApiKey | None:
        return await asyncio.to_thread(self.verify, presented)

    @staticmethod
    def _key(row: tuple[Any, ...]) -> ApiKey:
        providers = tuple(json.loads(row[5])) if row[5] else None
        return ApiKey(row[0], row[1], row[2], row[3], row[4], providers)
