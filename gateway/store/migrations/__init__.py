"""Versioned SQL migrations, one folder per backend (``sqlite/``, ``postgres/``).

A migration is a file ``NNNN_name.sql``; its number is its version. Each backend
applies the ones newer than what its ``schema_version`` table records, in order, in
one transaction, and records each. Migrations are never edited once released: a
change is a new file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load(backend: str) -> list[Migration]:
    """The migrations of ``backend`` in version order; versions must run 1, 2, 3..."""
    folder = resources.files(__name__) / backend
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations must be numbered 1..n without gaps, found {versions}")
    return found


def pending(migrations: list[Migration], applied: int) -> list[Migration]:
    """The migrations after version ``applied``."""
    return [m for m in migrations if m.version > applied]
