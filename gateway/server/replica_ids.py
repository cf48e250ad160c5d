"""One live process per replica id on a PostgreSQL store.

A replica claims back, at once, the jobs leased under its own id: that is what lets a
restarted replica (or a replaced worker) resume its jobs without waiting ``lease_s``. Two
live processes started with one ``--replica-id`` therefore both followed the same jobs:
run here, a second ``serve --replica-id replica-2`` took 4 of the 10 jobs the first one had
just created and polled them beside it, each saving over the other's record.

So a replica holds a PostgreSQL advisory lock named after its store schema and id, on a
connection of its own, for as long as it runs; a second process asking for a held id waits
up to :data:`WAIT_S` (the lock of a process just killed goes with its connection, within
moments) and is then refused at start, naming ``--replica-id``. A host that dies without
closing the connection leaves the lock until the server notices: the connection asks for
TCP keepalives that find a dead peer within about :data:`DEAD_PEER_S`.

The lock lasts as long as its connection, and a connection can drop while the process runs
(PostgreSQL restarted, a backend terminated): the id is then free for a second process to
take. So each lease round checks the hold (:meth:`IdHold.check`): the connection answers,
or a new one takes the lock back; when another process took it meanwhile, this replica
stops claiming and following jobs, and /readyz says not ready, until it holds the id again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gateway.config import Settings
from gateway.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from psycopg import AsyncConnection

#: how long a start waits for its id to be free (a killed process's connection closing)
WAIT_S = 5.0
#: the server's keepalive probes on the lock's connection: idle 10 s, then 3 probes 5 s apart
DEAD_PEER_S = 25.0
_KEEPALIVES = ("SET tcp_keepalives_idle = 10", "SET tcp_keepalives_interval = 5", "SET tcp_keepalives_count = 3")


class ReplicaIdInUse(ConfigError):
    pass


class IdHold:
    """A replica id held on PostgreSQL: the advisory lock and the connection it lives on."""

    def __init__(self, dsn: str, name: str, conn: AsyncConnection[Any] | None) -> None:
        self._dsn, self._name, self._conn = dsn, name, conn

    async def check(self) -> bool:
        """Whether this process still holds the id: its lock's connection answers, or a new
        connection takes the lock back (the old one dropped: the lock went with it). False
        when another process took it meanwhile; ``StoreUnavailable`` when PostgreSQL does not
        answer (nobody can take the id then, and the round fails as through any outage)."""
        from psycopg import Error

        if self._conn is not None and not self._conn.closed:
            try:
                await self._conn.execute("SELECT 1")
                return True
            except Error:
                pass  # the connection is gone, and the lock with it
        await self.close()
        try:
            self._conn = await _try_lock(self._dsn, self._name)
        except Error as exc:
            raise StoreUnavailable(f"PostgreSQL does not answer ({type(exc).__name__})") from None
        return self._conn is not None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


async def _try_lock(dsn: str, name: str, wait_s: float = 0.0) -> AsyncConnection[Any] | None:
    """A new connection holding the lock ``name``, or None when another session holds it
    for ``wait_s``."""
    from psycopg import AsyncConnection

    conn: AsyncConnection[Any] = await AsyncConnection.connect(dsn, autocommit=True)
    try:
        for statement in _KEEPALIVES:
            await conn.execute(statement)
        deadline = time.monotonic() + wait_s
        while True:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,))).fetchone()
            if row is not None and row[0]:
                return conn
            if time.monotonic() >= deadline:
                await conn.close()
                return None
            await asyncio.sleep(0.2)
    except BaseException:
        await conn.close()
        raise


async def hold_replica_id(dsn: str, schema: str, replica_id: str, *, wait_s: float = WAIT_S) -> IdHold:
    """The hold of ``replica_id`` on the store at ``dsn`` (close it to let go). Raises
    :class:`ReplicaIdInUse` when another live process holds it."""
    name = f"reelgate replica {schema} {replica_id}"
    conn = await _try_lock(dsn, name, wait_s)
    if conn is None:
        raise ReplicaIdInUse(
            f"--replica-id: {replica_id!r} is the id of a replica running on this store now; give each "
            f"replica its own id (reuse one only once its process is gone; a dead host's hold lapses "
            f"within {DEAD_PEER_S:.0f} s)")
    return IdHold(dsn, name, conn)


async def hold_given_id(settings: Settings, store_url: str, replica_id: str | None) -> IdHold | None:
    """The hold on ``replica_id`` when it was given and replicas lease jobs on PostgreSQL (a
    generated id is unique; SQLite's workers get theirs from their supervisor's lock files)."""
    if replica_id is None or not store_url.startswith("postgresql") or settings.service.leases is False:
        return None
    return await hold_replica_id(store_url, settings.service.store_schema, replica_id)


async def release_id(hold: IdHold | None) -> None:
    """Let the id go (at stop; a killed process's goes with its connection)."""
    if hold is not None:
        await hold.close()
