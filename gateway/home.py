"""Where reelgate keeps its state by default: ``$REELGATE_HOME``, else ``~/.reelgate``.

The SQLite job store, the service's API keys and mirrored videos live under it unless
the configuration names other places.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

HOME_ENV = "REELGATE_HOME"
DEFAULT_HOME = "~/.reelgate"


def reelgate_home(env: Mapping[str, str] | None = None) -> Path:
    """``$REELGATE_HOME`` from ``env`` (default: the process environment), else ``~/.reelgate``."""
    env = os.environ if env is None else env
    return Path(env.get(HOME_ENV) or DEFAULT_HOME).expanduser()
