"""Where dfmx keeps what it can make again (the demo data set, the feature cache)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV_VAR", "default_cache_dir"]

#: Environment variable naming dfmx's cache folder.
CACHE_ENV_VAR = "DFMX_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$DFMX_CACHE_DIR`` if set and non-empty, else ``~/.cache/dfmx``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dfmx"
