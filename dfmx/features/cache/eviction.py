"""Keeping a cache folder within its size bound, touching only what the cache wrote.

Only files :mod:`~dfmx.features.cache.layout` proves to be the cache's own count towards the
bound and may be deleted: entries (:func:`~dfmx.features.cache.layout.is_own_entry`), the
temporary files of killed writers and unused lock files. Anything else in the folder is
left alone and not counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from filelock import FileLock, Timeout

from dfmx.features.cache.layout import (
    LOCK_DIR,
    is_lock_name,
    is_own_entry,
    is_temporary_name,
)

log = logging.getLogger(__name__)

__all__ = ["STALE_SECONDS", "cache_size_bytes", "evict", "own_entries"]

#: Temporary files and lock files older than this are leftovers of killed jobs.
STALE_SECONDS = 3600.0


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return [e for e in it if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def own_entries(directory: Path) -> list[Path]:
    """The entries the cache wrote in ``directory``, by name."""
    return sorted(Path(e.path) for e in _listing(directory) if is_own_entry(Path(e.path)))


def _own_files(directory: Path) -> list[tuple[float, int, Path, bool]]:
    """``(atime, size, path, temporary)`` of every entry and temporary file of the cache."""
    found = []
    for e in _listing(directory):
        path = Path(e.path)
        temporary = is_temporary_name(e.name)
        if not temporary and not is_own_entry(path):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        found.append((st.st_atime, st.st_size, path, temporary))
    return found


def cache_size_bytes(directory: Path) -> int:
    """Total size of the cache's own entries and temporary files in ``directory``."""
    return sum(size for _, size, _, _ in _own_files(directory))


def evict(directory: Path, max_bytes: int | None, protect: Path | None = None) -> list[Path]:
    """Delete the least recently used entries until ``directory`` is within ``max_bytes``.

    Also deletes temporary files and unused lock files of killed jobs (older than
    :data:`STALE_SECONDS`). ``protect`` (the entry just written) is never deleted; temporary
    files younger than that are counted but kept (a writer is at work).

    Returns:
        The entries deleted.
    """
    now = time.time()
    found: list[tuple[float, int, Path]] = []
    for atime, size, path, temporary in _own_files(directory):
        if temporary:
            try:
                stale = now - path.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
            if stale:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found.append((float("inf"), size, path))
        else:
            found.append((atime, size, path))
    _remove_stale_locks(directory, now)
    if max_bytes is None:
        return []
    total = sum(size for _, size, _ in found)
    removed: list[Path] = []
    for atime, size, path in sorted(found, key=lambda item: item[0]):
        if total <= max_bytes:
            break
        if path == protect or atime == float("inf"):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # another job evicted it
        except OSError:
            continue
        total -= size
        removed.append(path)
    if removed:
        log.info("feature cache: evicted %d entr%s", len(removed),
                 "y" if len(removed) == 1 else "ies")
    return removed


def _remove_stale_locks(directory: Path, now: float) -> None:
    """Delete the lock files of entries that no longer exist, unused for a while."""
    for e in _listing(directory / LOCK_DIR):
        if not is_lock_name(e.name) or (directory / e.name.removesuffix(".lock")).exists():
            continue
        try:
            if now - e.stat().st_mtime < STALE_SECONDS:
                continue
            with FileLock(e.path, timeout=0):
                os.unlink(e.path)
        except (OSError, Timeout):
            continue
