"""Durable jobs: the ``JobStore`` interface, SQLite (the embedded default) and PostgreSQL.

``open_store`` builds one from a URL, so configuration names a store as one string:
``sqlite:///abs/path/reelgate.db`` or ``sqlite://~/jobs.db`` (nothing after
``sqlite://``, or no URL, means ``default_sqlite_path(env)``), or a PostgreSQL
``postgresql://user@host/db`` DSN. The PostgreSQL backend is imported only when used,
so the default install needs no PostgreSQL driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.errors import ConfigError
from gateway.store.base import JobStore, LeaseLost
from gateway.store.sqlite import SqliteJobStore, default_sqlite_path

__all__ = ["JobStore", "LeaseLost", "SqliteJobStore", "default_sqlite_path", "open_store"]

_SQLITE = "sqlite://"
_POSTGRES = ("postgresql://", "postgres://")


def open_store(url: str | None, env: Mapping[str, str], *, schema: str | None = None) -> JobStore:
    """The store ``url`` names, not yet opened (``async with store:`` opens it); ``schema``
    is PostgreSQL's (default ``reelgate``)."""
    if not url or url == _SQLITE:
        return SqliteJobStore(default_sqlite_path(env))
    if url.startswith(_SQLITE):
        return SqliteJobStore(Path(url.removeprefix(_SQLITE)).expanduser())
    if url.startswith(_POSTGRES):
        from gateway.store.postgres import PostgresJobStore

        return PostgresJobStore(url) if schema is None else PostgresJobStore(url, schema=schema)
    # only the scheme: a DSN may carry a password
    scheme = url.split(":", 1)[0]
    raise ConfigError(f"unknown store URL scheme {scheme!r}: use sqlite:///path or postgresql://...")
