"""State under ``REELGATE_HOME`` is the operator's alone: the directory 0700, its files
(job store, caller keys, kept videos) 0600, whatever the process's umask says.

``mode`` arguments are masked by the umask, which can only take bits away, so creating
with 0700/0600 is enough for new paths; an existing path this code created is tightened
when it is more open than that (an older version made them 0755/0644).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (its parents as the umask says)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    _tighten(path, DIR_MODE)
    return path


def private_dirs(path: Path) -> Path:
    """``path`` and every missing directory above it created 0700 (``mkdir(parents=True)``
    would give the parents the umask's mode); existing ones are left as they are."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner can read (created empty when missing)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    _tighten(path, FILE_MODE)
    return path


def open_private(path: Path) -> int:
    """A new file at ``path`` (which must not exist) opened for writing, mode 0600."""
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) & ~mode:
        path.chmod(mode)
