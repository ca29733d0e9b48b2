"""Where dfmx keeps what it can make again (the demo data set, the feature cache, the
described plugin configs, the kept backbones, the file checks' results), the JSON records
it keeps there, and their bound."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from dfmx.atomic import atomic_write_text

__all__ = ["CACHE_ENV_VAR", "default_cache_dir", "evict_least_recent", "read_record",
           "write_record"]

#: Environment variable naming dfmx's cache folder.
CACHE_ENV_VAR = "DFMX_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$DFMX_CACHE_DIR`` if set and non-empty, else ``~/.cache/dfmx``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dfmx"


def read_record(path: Path, version: int) -> dict[str, Any] | None:
    """The JSON object :func:`write_record` wrote at ``path`` with ``version``; ``None``
    when it is missing, unreadable or of another version (what it records is made again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == version else None


def write_record(path: Path, data: Mapping[str, Any], version: int) -> None:
    """Write ``data`` with ``"format": version`` at ``path`` as JSON, whole or not at all;
    a cache folder that cannot be written only costs making the record again."""
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps({"format": version, **data}, sort_keys=True))


def evict_least_recent(files: Iterable[Path], budget: int, keep: Collection[Path] = (),
                       record_of: Callable[[Path], Path] | None = None) -> None:
    """Remove the least recently used of ``files`` (by modification time: a reader that
    uses one touches it) until the rest take at most ``budget`` bytes; those in ``keep``
    stay whatever their size. With ``record_of``, each file's record is removed before
    it, so that a reader meets a miss, never a record without its file."""
    found = []
    for path in files:
        with contextlib.suppress(OSError):
            st = path.stat()
            found.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in found)
    for _, size, path in sorted(found):
        if total <= budget:
            break
        if path in keep:
            continue
        with contextlib.suppress(OSError):
            if record_of is not None:
                record_of(path).unlink(missing_ok=True)
            path.unlink()
            total -= size
