"""The feature cache: verified entries of raw backbone features, shared by parallel jobs.

An entry is a safetensors file (no pickle) whose metadata holds the format version, the
key as JSON, the split and a SHA-256 checksum of the tensors. It is written atomically
(:mod:`dfmx.atomic`) under a ``filelock`` lock of the entry, so parallel jobs needing the
same entry compute it once: the others wait, then read it. An entry that does not load, or
whose metadata or checksum does not match, is a miss: recomputed and overwritten. Reads
set the entry's access time; after a write the least recently used entries are evicted
(:mod:`~dfmx.features.cache.eviction`). Cache I/O errors (a read-only folder, a full disk)
are logged once per cache object (one job) and the job continues without the cache; they
never fail a run.

The jobs of a sweep in one process read the same entries again and again. With
:func:`keep_read_entries` on, an entry this process has read and verified (or written) is
kept in memory with its file held open, and handed out again (as copies) while the name
still leads to that same file: same inode, size and modification time. An open file's inode
cannot be given to another file, and entries are only ever replaced whole (a new file
renamed over the name), so a replaced, evicted or rewritten entry is a miss, never a stale
hit.

Raw features are stored as float32 whatever the compute precision: the extractor returns
float32 maps (bf16 autocast outputs are not all exactly bf16-representable), so storing
them unchanged keeps results with a cache hit bit-identical to results without the cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import Tensor

from dfmx.atomic import atomic_write_bytes
from dfmx.errors import ConfigError
from dfmx.features.cache.eviction import cache_size_bytes, evict, own_entries
from dfmx.features.cache.keys import CACHE_FORMAT_VERSION, canonical_key, tensors_sha256
from dfmx.features.cache.layout import LOCK_DIR, default_feature_cache_dir, entry_name
from dfmx.memo import Memo

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_GB", "CorruptEntryError", "FeatureCache", "keep_read_entries"]

DEFAULT_MAX_GB = 10.0


@dataclass(frozen=True)
class _KeptEntry:
    """A verified entry's tensors and its file, held open while they are kept."""

    tensors: dict[str, Tensor]
    file: BinaryIO


#: Entries kept by :func:`keep_read_entries`: ``(path, key, split, file identity)`` ->
#: the entry; ``None`` while off.
_KEPT: Memo[_KeptEntry] | None = None


def keep_read_entries(max_bytes: int) -> None:
    """Keep the entries this process reads or writes, up to ``max_bytes`` of tensors in
    all, least recently used dropped first (0 turns it off and forgets them)."""
    global _KEPT
    if max_bytes <= 0:
        _KEPT = None
    elif _KEPT is None or _KEPT.size != max_bytes:
        _KEPT = Memo(int(max_bytes), weigh=lambda kept: sum(
            t.numel() * t.element_size() for t in kept.tensors.values()))


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _kept_key(path: Path, key: Mapping[str, Any], split: str,
              stat: os.stat_result) -> tuple[str, str, str, tuple[int, int, int, int]]:
    return str(path), canonical_key(key), split, _identity(stat)


def _keep(path: Path, key: Mapping[str, Any], split: str, tensors: dict[str, Tensor]) -> None:
    """Keep a copy of ``tensors`` as the entry at ``path`` when that name still leads to
    the file they were read from or written to: open it first, then compare the name's
    file with the open one."""
    if _KEPT is None:
        return
    try:
        file = open(path, "rb")  # noqa: SIM115  (held open by the kept entry)
    except OSError:
        return
    try:
        held = os.fstat(file.fileno())
        same = _identity(held) == _identity(os.stat(path))
    except OSError:
        same = False
    if not same:
        file.close()
        return
    kept = _KeptEntry({name: t.clone() for name, t in tensors.items()}, file)
    weakref.finalize(kept, file.close)  # once dropped, or at exit
    _KEPT.put(_kept_key(path, key, split, held), kept)


def _kept(path: Path, key: Mapping[str, Any], split: str) -> dict[str, Tensor] | None:
    """Copies of the entry kept for ``path`` while the name leads to its file; ``None``
    when nothing is kept for it. Raises ``FileNotFoundError`` when the entry is gone."""
    if _KEPT is None:
        return None
    kept = _KEPT.peek(_kept_key(path, key, split, path.stat()))
    return None if kept is None else {name: t.clone() for name, t in kept.tensors.items()}


class CorruptEntryError(ValueError):
    """A cache entry exists but cannot be trusted (unreadable, wrong key or checksum)."""


def _cpu(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}


class FeatureCache:
    """A folder of raw-feature entries, bounded in size, safe under parallel jobs.

    Args:
        directory: the cache folder; ``None`` for
            :func:`~dfmx.features.cache.layout.default_feature_cache_dir`. It is created on
            the first write. It may hold other files: the cache touches only its own.
        max_gb: bound on the total size of entries in GB (10⁹ bytes); ``None`` for no bound.

    Example:
        >>> cache = FeatureCache(tmp_dir, max_gb=1)                      # doctest: +SKIP
        >>> raw, hit = cache.get_or_compute(key, "train", extract)      # doctest: +SKIP
    """

    def __init__(self, directory: str | Path | None = None, max_gb: float | None = DEFAULT_MAX_GB):
        self.directory = (
            Path(directory).expanduser() if directory is not None else default_feature_cache_dir()
        )
        if max_gb is not None and float(max_gb) < 0:
            raise ConfigError(f"cache.max_gb must be >= 0 or null; got {max_gb!r}")
        self.max_bytes: int | None = None if max_gb is None else int(float(max_gb) * 1e9)
        #: Set when the folder proved unusable: the rest of the job runs without the cache.
        self._unusable: str | None = None
        self._warned: set[str] = set()

    @classmethod
    def from_config(cls, node: Any) -> FeatureCache | None:
        """The cache a config's ``cache`` node describes, or ``None`` when it is off.

        ``node`` is a mapping with ``enabled`` (default true), ``dir`` (default ``None``)
        and ``max_gb`` (default :data:`DEFAULT_MAX_GB`); ``None`` (no node) means the
        defaults; ``False``/``"off"``/``"false"`` mean off.
        """
        if node is None:
            node = {}
        if isinstance(node, (bool, str)):
            if str(node).strip().lower() in ("false", "off", "no", "0", "none", "null"):
                return None
            if str(node).strip().lower() in ("true", "on", "yes", "1"):
                node = {}
            else:
                raise ConfigError(f"cache must be a mapping or on/off; got {node!r}")
        if not isinstance(node, Mapping):
            raise ConfigError(f"cache must be a mapping (enabled, dir, max_gb); got {node!r}")
        unknown = set(node) - {"enabled", "dir", "max_gb"}
        if unknown:
            raise ConfigError(f"unknown cache option(s) {sorted(unknown)}; "
                              "the options are enabled, dir, max_gb")
        if not node.get("enabled", True):
            return None
        return cls(node.get("dir"), node.get("max_gb", DEFAULT_MAX_GB))

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        """Log a warning the first time a problem of ``kind`` shows in this cache's life."""
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)

    # ------------------------------------------------------------ naming
    def entry_name(self, key: Mapping[str, Any], split: str) -> str:
        """``<split>-<40 hex of the key's SHA-256>.safetensors``."""
        return entry_name(key, split)

    def entry_path(self, key: Mapping[str, Any], split: str) -> Path:
        """Where the entry of ``(key, split)`` lives (whether or not it exists)."""
        return self.directory / entry_name(key, split)

    def entries(self) -> list[Path]:
        """The entries the cache wrote that are now in its folder."""
        return own_entries(self.directory)

    def size_bytes(self) -> int:
        """Total size of the cache's entries (and temporary files) in the folder."""
        return cache_size_bytes(self.directory)

    # ------------------------------------------------------------ read / write
    def _read(self, path: Path, key: Mapping[str, Any], split: str) -> dict[str, Tensor]:
        """Load and verify one entry; :class:`CorruptEntryError` if it cannot be trusted."""
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        except FileNotFoundError:
            raise
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise CorruptEntryError(f"unreadable cache entry {path}: {exc}") from exc
        if meta.get("format") != str(CACHE_FORMAT_VERSION):
            raise CorruptEntryError(f"cache entry {path} has format {meta.get('format')!r}")
        if meta.get("key") != canonical_key(key) or meta.get("split") != split:
            raise CorruptEntryError(f"cache entry {path} holds another key")
        if meta.get("checksum") != tensors_sha256(tensors):
            raise CorruptEntryError(f"cache entry {path} fails its checksum")
        n_images = key.get("n_images")
        if not tensors or (n_images is not None and any(
                t.ndim < 1 or t.shape[0] != n_images for t in tensors.values())):
            raise CorruptEntryError(f"cache entry {path} holds tensors of the wrong shape")
        return tensors

    def load(self, key: Mapping[str, Any], split: str) -> dict[str, Tensor] | None:
        """The entry's tensors ``{name: tensor}`` (CPU), or ``None`` on a miss.

        A corrupt entry (at the name that is the hash of ``key``) is deleted and counts as a
        miss; a hit updates the access time.
        """
        path = self.entry_path(key, split)
        try:
            tensors = _kept(path, key, split)
            if tensors is None:
                tensors = self._read(path, key, split)
                _keep(path, key, split, tensors)
        except FileNotFoundError:
            return None
        except CorruptEntryError as exc:
            log.warning("%s; recomputing it", exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        self._touch(path)
        return tensors

    @staticmethod
    def _touch(path: Path) -> None:
        """A hit: the entry's access time is now (eviction drops the least recently used)."""
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))

    def store(
        self, key: Mapping[str, Any], split: str, tensors: Mapping[str, Tensor]
    ) -> Path | None:
        """Write an entry atomically, then evict LRU entries; returns its path.

        Returns ``None`` (nothing written) when the entry alone is larger than the bound.
        Raises ``OSError`` when the folder cannot be written.
        """
        tensors = _cpu(tensors)
        metadata = {
            "format": str(CACHE_FORMAT_VERSION),
            "key": canonical_key(key),
            "split": split,
            "checksum": tensors_sha256(tensors),
        }
        data = save_safetensors(tensors, metadata=metadata)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            self._warn_once("too_large", "feature cache: entries larger than cache.max_gb "
                            "(%.3f GB) are not stored; the first was %.3f GB",
                            self.max_bytes / 1e9, len(data) / 1e9)
            return None
        path = atomic_write_bytes(self.entry_path(key, split), data, fsync=True)
        evict(self.directory, self.max_bytes, protect=path)
        _keep(path, key, split, tensors)
        return path

    def evict(self, protect: Path | None = None) -> list[Path]:
        """Delete least recently used entries until the folder is within ``max_gb``
        (:func:`~dfmx.features.cache.eviction.evict`); returns the entries deleted."""
        return evict(self.directory, self.max_bytes, protect)

    # ------------------------------------------------------------ the main entry point
    def _lock(self, path: Path) -> FileLock:
        lock_dir = self.directory / LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{path.name}.lock"))

    def get_or_compute(
        self,
        key: Mapping[str, Any],
        split: str,
        compute: Callable[[], Mapping[str, Tensor]],
    ) -> tuple[dict[str, Tensor], bool]:
        """``(tensors, hit)``: the cached entry, or ``compute()``'s result, then stored.

        Under the entry's lock, so a job that finds another computing the same entry waits
        and reads it. Exceptions from ``compute`` propagate; cache I/O errors are logged
        (once per kind) and the result of ``compute`` is returned uncached; after the folder
        proved unusable the cache stays out of the way. Tensors are returned on the CPU,
        contiguous, exactly as a later hit returns them.
        """
        if self._unusable is not None:
            return _cpu(compute()), False
        try:
            found = self.load(key, split)
        except OSError as exc:
            self._warn_once("unreadable", "feature cache %s unreadable (%s); running without "
                            "it", self, exc)
            found = None
        if found is not None:
            return found, True
        path = self.entry_path(key, split)
        try:
            lock = self._lock(path)
            lock.acquire()
        except OSError as exc:
            self._unusable = str(exc)
            self._warn_once("unusable", "feature cache %s unusable (%s); running without it",
                            self, exc)
            return _cpu(compute()), False
        try:
            found = self.load(key, split)  # another job may have written it meanwhile
            if found is not None:
                return found, True
            tensors = _cpu(compute())
            try:
                self.store(key, split, tensors)
            except OSError as exc:
                self._warn_once("store", "feature cache: could not store %s (%s)",
                                path.name, exc)
            return tensors, False
        finally:
            lock.release()

    def clear(self) -> None:
        """Delete every entry the cache wrote (not the folder, not other files)."""
        for path in self.entries():
            with contextlib.suppress(OSError):
                path.unlink()
