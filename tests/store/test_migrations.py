"""The migration files themselves: numbered, loadable, and in step across backends."""

from __future__ import annotations

from gateway.store import migrations


def test_both_backends_have_the_same_migrations() -> None:
    sqlite = [(m.version, m.name) for m in migrations.load("sqlite")]
    postgres = [(m.version, m.name) for m in migrations.load("postgres")]
    assert sqlite == postgres
    assert sqlite[:4] == [(1, "jobs"), (2, "at_risk"), (3, "webhook_seen"), (4, "webhook_outbox")]
    assert sqlite[5:7] == [(6, "api_keys"), (7, "vendor_callbacks")]


def test_pending_is_what_comes_after_the_applied_version() -> None:
    loaded = migrations.load("sqlite")
    assert migrations.pending(loaded, 0) == loaded
    assert migrations.pending(loaded, len(loaded)) == []
