"""Caller keys in the PostgreSQL store's ``api_keys`` table (migration 0006), read and
written over the store's own connection pool: a lookup never opens a connection."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

from psycopg.errors import UniqueViolation

from gateway.keys import COLUMNS, DEFAULT_CACHE_S, ApiKey, Keys, key_of, name_taken, new_key, no_such_key
from gateway.store.postgres import PostgresJobStore


class PostgresKeys(Keys):
    def __init__(self, store: PostgresJobStore, *, cache_s: float = DEFAULT_CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(cache_s=cache_s, clock=clock)
        self.store = store

    async def acreate(self, name: str, *, budget_usd_per_day: float | None = None,
                      allowed_providers: builtins.list[str] | None = None) -> tuple[ApiKey, str]:
        made = new_key(name, budget_usd_per_day, allowed_providers)
        async with self.store.connection() as conn:
            try:
                await conn.execute(
                    "INSERT INTO api_keys (id, name, secret_sha256, created_at, budget_usd_per_day,"
                    " allowed_providers) VALUES (%s, %s, %s, %s, %s, %s)",
                    (made.key.id, made.key.name, made.digest, made.key.created_at, budget_usd_per_day,
                     made.providers_json))
            except UniqueViolation:
                raise name_taken(name) from None
        return made.key, made.plaintext

    async def alist(self) -> builtins.list[ApiKey]:
        async with self.store.connection() as conn:
            cur = await conn.execute(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id")
            return [key_of(row) for row in await cur.fetchall()]

    async def _arevoke(self, id_or_name: str) -> ApiKey:
        async with self.store.connection() as conn:
            # by id first: a name that happens to equal another key's id must not revoke both
            cur = await conn.execute(
                f"UPDATE api_keys SET revoked_at = %s WHERE id = (SELECT id FROM api_keys"
                f" WHERE (id = %s OR name = %s) AND revoked_at IS NULL ORDER BY id = %s DESC LIMIT 1)"
                f" RETURNING {COLUMNS}", (time.time(), id_or_name, id_or_name, id_or_name))
            row = await cur.fetchone()
        if row is None:
            raise no_such_key(id_or_name)
        return key_of(row)

    async def _afetch(self, key_id: str) -> tuple[ApiKey, str] | None:
        async with self.store.connection() as conn:
            cur = await conn.execute(f"SELECT {COLUMNS}, secret_sha256 FROM api_keys WHERE id = %s", (key_id,))
            row = await cur.fetchone()
        return (key_of(row[:6]), row[6]) if row else None
