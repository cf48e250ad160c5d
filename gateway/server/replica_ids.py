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
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gateway.config import Settings
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

#: how long a start waits for its id to be free (a killed process's connection closing)
WAIT_S = 5.0
#: the server's keepalive probes on the lock's connection: idle 10 s, then 3 probes 5 s apart
DEAD_PEER_S = 25.0
_KEEPALIVES = ("SET tcp_keepalives_idle = 10", "SET tcp_keepalives_interval = 5", "SET tcp_keepalives_count = 3")


class ReplicaIdInUse(ConfigError):
    pass


async def hold_replica_id(dsn: str, schema: str, replica_id: str, *,
                          wait_s: float = WAIT_S) -> AsyncConnection[Any]:
    """The connection holding ``replica_id`` on the store at ``dsn`` (close it to let go).
    Raises :class:`ReplicaIdInUse` when another live process holds it."""
    from psycopg import AsyncConnection

    conn: AsyncConnection[Any] = await AsyncConnection.connect(dsn, autocommit=True)
    try:
        for statement in _KEEPALIVES:
            await conn.execute(statement)
        deadline = time.monotonic() + wait_s
        name = f"reelgate replica {schema} {replica_id}"
        while True:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,))).fetchone()
            if row is not None and row[0]:
                return conn
            if time.monotonic() >= deadline:
                raise ReplicaIdInUse(
                    f"--replica-id: {replica_id!r} is the id of a replica running on this store now; give each "
                    f"replica its own id (reuse one only once its process is gone; a dead host's hold lapses "
                    f"within {DEAD_PEER_S:.0f} s)")
            await asyncio.sleep(0.2)
    except BaseException:
        await conn.close()
        raise


async def hold_given_id(settings: Settings, store_url: str, replica_id: str | None) -> AsyncConnection[Any] | None:
    """The hold on ``replica_id`` when it was given and replicas lease jobs on PostgreSQL (a
    generated id is unique; SQLite's workers get theirs from their supervisor's lock files)."""
    if replica_id is None or not store_url.startswith("postgresql") or settings.service.leases is False:
        return None
    return await hold_replica_id(store_url, settings.service.store_schema, replica_id)


async def release_id(hold: AsyncConnection[Any] | None) -> None:
    """Let the id go (at stop; a killed process's goes with its connection)."""
    if hold is not None:
        await hold.close()
