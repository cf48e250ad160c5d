"""API keys for the HTTP service's callers, hashed at rest.

A key reads ``rg_<id>_<secret>``: the id finds the row, the secret is checked against a
SHA-256 digest (a 256-bit random secret needs no slow hash) with a constant-time compare.
The plaintext is shown once, when created, and never stored or logged.

The service checks a key on every request, so ``averify`` remembers the keys it verified
(by a digest of what was presented) for as long as the file has not changed: SQLite's
``PRAGMA data_version`` moves whenever another connection commits (``reelgate keys
revoke`` in another process included), which empties the memory, so a revocation takes
effect on the next request. Asking is a read of shared memory in WAL mode, cheap enough
for the event loop: 7 µs of CPU per request where a thread hop and a new connection took
~400 µs (docs/benchmarks.md, section 6).
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
#: keys remembered as verified at most this long, even when the file says nothing changed
#: (a file replaced wholesale, say, is not seen by ``data_version``)
VERIFIED_MAX_AGE_S = 10.0
#: the most verified keys remembered at once (the memory is emptied when full)
VERIFIED_MAX = 4096

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
        #: digest of a presented key -> (the key, when it was verified); valid for ``_version``
        self._verified: dict[str, tuple[ApiKey, float]] = {}
        self.clock = time.monotonic
        self._version: int | None = None
        #: asks the file whether another connection committed (``data_version``), on the loop
        self._watch: sqlite3.Connection | None = None

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
        """``verify``, answered from memory while the key file has not changed."""
        digest = _digest(presented)
        now = self.clock()
        if self._unchanged():
            hit = self._verified.get(digest)
            if hit is not None and now - hit[1] < VERIFIED_MAX_AGE_S:
                return hit[0]
        key = await asyncio.to_thread(self.verify, presented)
        if key is not None:
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
            self._verified[digest] = (key, now)
        return key

    def _unchanged(self) -> bool:
        """Whether no connection committed to the file since the last look; when one did,
        every remembered key is forgotten."""
        if self._watch is None:
            self._watch = sqlite3.connect(self.path, timeout=1, check_same_thread=False)
        version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return True
        self._version = version
        self._verified.clear()
        return False

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    @staticmethod
    def _key(row: tuple[Any, ...]) -> ApiKey:
        providers = tuple(json.loads(row[5])) if row[5] else None
        return ApiKey(row[0], row[1], row[2], row[3], row[4], providers)
