"""Caller-key checks per second, the way the service makes them, side by side.

    python -m bench.keys [--checks 2000] [--rounds 3] [--pg postgresql://postgres@127.0.0.1/test]

One key, checked ``checks`` times in a row on one event loop, per round, each variant in
turn within a round (so the machine's load falls on all of them alike):

* ``sqlite connect-per-check``: what the service did before: a new SQLite connection (and
  its ``PRAGMA journal_mode``) per request, in a worker thread;
* ``sqlite kept connection``: ``KeyStore`` with ``cache_s=0`` (one connection, a thread hop);
* ``sqlite cached``: ``KeyStore`` with the default ``cache_s`` (2 s);
* ``postgres pool`` / ``postgres cached``: ``PostgresKeys`` over the store's pool, ``cache_s``
  0 and 2 (with ``--pg``; a throwaway schema, dropped after).

Prints the median checks/s per variant and its ratio to connect-per-check.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.keys import Keys, KeyStore, digest


def connect_per_check(path: Path) -> Callable[[str], Awaitable[object]]:
    """The old lookup: open, set WAL, read the row, close, on every check."""
    def check(presented: str) -> object:
        key_id, _, secret = presented[3:].partition("_")
        db = sqlite3.connect(path, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            row = db.execute("SELECT secret_sha256 FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        finally:
            db.close()
        return row is not None and row[0] == digest(secret)

    return lambda presented: asyncio.to_thread(check, presented)


async def rate(check: Callable[[str], Awaitable[object]], presented: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        assert await check(presented)
    return n / (time.perf_counter() - start)


async def main(checks: int, rounds: int, pg: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    lite = KeyStore(folder / "keys.db", cache_s=0)
    _, plaintext = lite.create("bench")
    variants: dict[str, Callable[[str], Awaitable[object]]] = {
        "sqlite connect-per-check": connect_per_check(folder / "keys.db"),
        "sqlite kept connection": lite.averify,
        "sqlite cached": KeyStore(folder / "keys.db").averify,
    }
    closers: list[Keys] = [lite]
    store = None
    schema = f"bench_keys_{uuid.uuid4().hex[:8]}"
    if pg:
        from gateway.store.postgres import PostgresJobStore
        from gateway.store.postgres_keys import PostgresKeys

        store = PostgresJobStore(pg, schema=schema)
        await store.open()
        pg_keys = PostgresKeys(store, cache_s=0)
        _, pg_plain = await pg_keys.acreate("bench")
        cached = PostgresKeys(store)
        variants["postgres pool"] = lambda _p: pg_keys.averify(pg_plain)
        variants["postgres cached"] = lambda _p: cached.averify(pg_plain)
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, check in variants.items():
            results[name].append(await rate(check, plaintext, checks))
    base = statistics.median(results["sqlite connect-per-check"])
    print(f"{checks} checks x {rounds} rounds")
    for name, rates in results.items():
        mid = statistics.median(rates)
        print(f"{name:26} {mid:10.0f} checks/s  x{mid / base:6.1f}   rounds {' '.join(f'{r:.0f}' for r in rates)}")
    for keys in closers:
        await keys.aclose()
    if store is not None:
        import psycopg
        from psycopg import sql

        await store.close()
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.checks, args.rounds, args.pg))
