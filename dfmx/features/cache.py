"""On-disk cache of raw (unpooled) backbone features, shared by the jobs of a sweep.

Extracting backbone features is the expensive part of a job; pooling, PCA and scoring are
cheap. Jobs that differ only in pooling, PCA level or scorer read the same raw features,
so they are stored once per *(key, split)*, where the key holds everything that determines
them (see :func:`feature_key`): backbone, a fingerprint of its weights, layers, image size,
resize filter, normalisation, precision, device, batch size, library versions, the
:data:`CACHE_FORMAT_VERSION` and the identity of every image file (path, size, mtime).

Layout of a cache folder::

    <dir>/<split>-<sha256 of the key, 40 hex>.safetensors   one entry: {layer: (N, C, h, w)}
    <dir>/.<entry name>.<random>.tmp                         an entry being written
    <dir>/locks/<entry name>.lock                            flock(2) lock of one entry

An entry is a safetensors file (no pickle) whose metadata holds the format version, the
key as JSON, the split and a SHA-256 checksum of the tensors' bytes. Entries are written
to a temporary file in the same folder and renamed into place (``os.replace``), under an
exclusive ``fcntl.flock`` on the entry's lock file, so parallel jobs needing the same entry
compute it once: the others wait, then read it. Any entry that does not load, or whose
metadata or checksum does not match, is treated as a miss, recomputed and overwritten.
Reads set the entry's access time; after a write the least recently used entries are
deleted until the folder is under ``max_gb``. Cache I/O errors (a read-only folder, a full
disk) are logged and the job continues without the cache; they never fail a run.

Raw features are stored as float32 whatever the compute precision: the extractor returns
float32 maps (bf16 autocast outputs are not all exactly bf16-representable), so storing
them unchanged keeps results with a cache hit bit-identical to results without the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import Tensor

from dfmx.data.batches import decoder_versions, files_fingerprint

log = logging.getLogger(__name__)

#: Bump whenever what is stored, or how images become raw features (decoding, resizing,
#: normalisation in dfmx code), changes: old entries then simply stop matching.
CACHE_FORMAT_VERSION = 3
DEFAULT_MAX_GB = 10.0
ENTRY_SUFFIX = ".safetensors"
#: Temporary files and lock files older than this are leftovers of killed jobs.
STALE_SECONDS = 3600.0

__all__ = [
    "CACHE_FORMAT_VERSION",
    "DEFAULT_MAX_GB",
    "FeatureCache",
    "default_feature_cache_dir",
    "feature_key",
    "weights_fingerprint",
]


def default_feature_cache_dir() -> Path:
    """``$DFMX_CACHE_DIR/features`` if the variable is set, else ``~/.cache/dfmx/features``."""
    from dfmx.data.demo import default_cache_dir

    return default_cache_dir() / "features"


# --------------------------------------------------------------------------- key fields


def _tensor_bytes(tensor: Tensor) -> memoryview:
    """The raw bytes of ``tensor`` (any dtype, any shape), from a CPU contiguous copy."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def state_dict_fingerprint(state_dict: Mapping[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


_WEIGHTS_MEMO: dict[tuple[Any, ...], str] = {}
_EXTRACTOR_MEMO: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _weights_memo_key(extractor: Any) -> tuple[Any, ...] | None:
    """A per-process identity of the extractor's weights, or ``None`` when there is none.

    Named sources (a weights package, a file, timm's cache) give the same tensors every
    time within a process, so their hash is memoised; files by size, mtime and inode. Random
    weights depend on the seed: they are hashed every time.
    """
    source = str(extractor.weights_source)
    if source == "random":
        return None
    stat: tuple[int, int, int] | None = None
    for prefix in ("file:", "timm:cache:"):
        if source.startswith(prefix):
            try:
                st = os.stat(source[len(prefix):])
            except OSError:
                return None
            stat = (st.st_size, st.st_mtime_ns, st.st_ino)
    return (extractor.timm_name, tuple(extractor.layers), source, stat)


def weights_fingerprint(extractor: Any) -> str:
    """SHA-256 of the backbone's state dict (weights and buffers), memoised per process.

    Memoised per extractor object, and across objects for named weight sources. (An
    extractor is taken not to change its weights after construction: it is frozen.)

    Args:
        extractor: a :class:`~dfmx.features.FeatureExtractor`.
    """
    known = _EXTRACTOR_MEMO.get(extractor)
    if known is not None:
        return known
    memo_key = _weights_memo_key(extractor)
    fingerprint = _WEIGHTS_MEMO.get(memo_key) if memo_key is not None else None
    if fingerprint is None:
        fingerprint = state_dict_fingerprint(extractor.net.state_dict())
        if memo_key is not None:
            _WEIGHTS_MEMO[memo_key] = fingerprint
    _EXTRACTOR_MEMO[extractor] = fingerprint
    return fingerprint


def _device_id(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{torch.cuda.get_device_name(index)}"
    return device.type


@functools.cache
def _library_versions() -> dict[str, str]:
    import timm

    return {**decoder_versions(), "timm": timm.__version__}


def feature_key(
    extractor: Any,
    paths: Sequence[str | os.PathLike[str]],
    image_size: int | tuple[int, int],
    batch_size: int,
) -> dict[str, Any]:
    """Everything that determines the raw features of ``paths``, as a JSON-able dict.

    Pooling, fusion, PCA level and scorer are not part of it: they act on raw features.
    ``batch_size`` is, because convolution kernels may round differently for a different
    batch size, and a hit must give exactly the features extraction would give.

    Args:
        extractor: the :class:`~dfmx.features.FeatureExtractor` the features come from.
        paths: the image files, in feature order.
        image_size: ``(height, width)`` or one int for a square, as the images are resized.
        batch_size: images per backbone call.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    return {
        "format": CACHE_FORMAT_VERSION,
        "backbone": extractor.timm_name,
        "weights": weights_fingerprint(extractor),
        "layers": sorted(extractor.layers),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "interpolation": str(extractor.interpolation),
        "mean": [float(v) for v in extractor.mean.flatten().tolist()],
        "std": [float(v) for v in extractor.std.flatten().tolist()],
        "precision": str(extractor.precision),
        "channels_last": bool(extractor.channels_last),
        "optimize": str(extractor.optimize),
        "micro_batch": int(extractor.micro_batch),
        "device": _device_id(extractor.device),
        "batch_size": int(batch_size),
        "versions": _library_versions(),
        "n_images": len(paths),
        "data": files_fingerprint(paths),
    }


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def tensors_checksum(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 of names, dtypes, shapes and bytes of ``tensors`` in name order.

    SHA-256 rather than BLAKE2b: CPUs with SHA instructions (x86 since ~2017-2019, ARMv8)
    hash 2.3x faster with it (30 against 69 ms for the 33 MB a Lite0 bottle job reads from
    the cache, every warm job of a sweep).
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


# --------------------------------------------------------------------------- the cache


class CorruptEntryError(ValueError):
    """A cache entry exists but cannot be trusted (unreadable, wrong key or checksum)."""


class FeatureCache:
    """A folder of raw-feature entries, bounded in size, safe under parallel jobs.

    Args:
        directory: the cache folder; ``None`` for :func:`default_feature_cache_dir`. It is
            created on the first write.
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
            raise ValueError(f"cache.max_gb must be >= 0 or null; got {max_gb!r}")
        self.max_bytes: int | None = None if max_gb is None else int(float(max_gb) * 1e9)

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
                raise ValueError(f"cache must be a mapping or on/off; got {node!r}")
        if not isinstance(node, Mapping):
            raise ValueError(f"cache must be a mapping (enabled, dir, max_gb); got {node!r}")
        unknown = set(node) - {"enabled", "dir", "max_gb"}
        if unknown:
            raise ValueError(f"unknown cache option(s) {sorted(unknown)}; "
                             "the options are enabled, dir, max_gb")
        if not node.get("enabled", True):
            return None
        return cls(node.get("dir"), node.get("max_gb", DEFAULT_MAX_GB))

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    # ------------------------------------------------------------ naming
    def entry_name(self, key: Mapping[str, Any], split: str) -> str:
        """``<split>-<40 hex of the key's SHA-256>.safetensors``."""
        if not split or not split.replace("_", "").isalnum():
            raise ValueError(f"split must be a plain name such as 'train'; got {split!r}")
        digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:40]
        return f"{split}-{digest}{ENTRY_SUFFIX}"

    def entry_path(self, key: Mapping[str, Any], split: str) -> Path:
        """Where the entry of ``(key, split)`` lives (whether or not it exists)."""
        return self.directory / self.entry_name(key, split)

    def entries(self) -> list[Path]:
        """The entry files now in the cache folder."""
        try:
            return sorted(p for p in self.directory.iterdir()
                          if p.name.endswith(ENTRY_SUFFIX) and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def size_bytes(self) -> int:
        """Total size of the entries (and temporary files) in the folder."""
        total = 0
        for path in self._files():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def _files(self) -> list[Path]:
        try:
            return [p for p in self.directory.iterdir() if p.is_file()]
        except FileNotFoundError:
            return []

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
        if meta.get("key") != _canonical(key) or meta.get("split") != split:
            raise CorruptEntryError(f"cache entry {path} holds another key")
        if meta.get("checksum") != tensors_checksum(tensors):
            raise CorruptEntryError(f"cache entry {path} fails its checksum")
        n_images = key.get("n_images")
        if not tensors or (n_images is not None and any(
                t.ndim < 1 or t.shape[0] != n_images for t in tensors.values())):
            raise CorruptEntryError(f"cache entry {path} holds tensors of the wrong shape")
        return tensors

    def load(self, key: Mapping[str, Any], split: str) -> dict[str, Tensor] | None:
        """The entry's tensors ``{name: tensor}`` (CPU), or ``None`` on a miss.

        A corrupt entry is deleted and counts as a miss; a hit updates the access time.
        """
        path = self.entry_path(key, split)
        try:
            tensors = self._read(path, key, split)
        except FileNotFoundError:
            return None
        except CorruptEntryError as exc:
            log.warning("%s; recomputing it", exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
        return tensors

    def store(
        self, key: Mapping[str, Any], split: str, tensors: Mapping[str, Tensor]
    ) -> Path | None:
        """Write an entry atomically, then evict LRU entries; returns its path.

        Returns ``None`` (nothing written) when the entry alone is larger than the bound.
        Raises ``OSError`` when the folder cannot be written.
        """
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        metadata = {
            "format": str(CACHE_FORMAT_VERSION),
            "key": _canonical(key),
            "split": split,
            "checksum": tensors_checksum(tensors),
        }
        data = save_safetensors(tensors, metadata=metadata)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            log.warning("feature cache: an entry of %.3f GB exceeds cache.max_gb (%.3f); "
                        "not stored", len(data) / 1e9, self.max_bytes / 1e9)
            return None
        path = self.entry_path(key, split)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would hide it from others
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.evict(protect=path)
        return path

    # ------------------------------------------------------------ locking
    def _lock_path(self, path: Path) -> Path:
        return self.directory / "locks" / f"{path.name}.lock"

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``path``'s lock file (waits for other holders).

        A lock file can be deleted by :meth:`evict` (only while it holds it); a waiter that
        then gets a lock on the deleted file sees that its inode is gone and retries.
        """
        lock_path = self._lock_path(path)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # ------------------------------------------------------------ the main entry point
    def get_or_compute(
        self,
        key: Mapping[str, Any],
        split: str,
        compute: Callable[[], Mapping[str, Tensor]],
    ) -> tuple[dict[str, Tensor], bool]:
        """``(tensors, hit)``: the cached entry, or ``compute()``'s result, then stored.

        Under the entry's lock, so a job that finds another computing the same entry waits
        and reads it. Exceptions from ``compute`` propagate; cache I/O errors are logged
        and the result of ``compute`` is returned uncached. Tensors are returned on the CPU,
        contiguous, exactly as a later hit returns them.
        """
        try:
            found = self.load(key, split)
        except OSError as exc:
            log.warning("feature cache %s unreadable (%s); running without it", self, exc)
            found = None
        if found is not None:
            return found, True
        path = self.entry_path(key, split)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._locked(path))
            except OSError as exc:
                log.warning("feature cache %s unusable (%s); running without it", self, exc)
                return self._normalised(compute()), False
            found = self.load(key, split)  # another job may have written it meanwhile
            if found is not None:
                return found, True
            tensors = self._normalised(compute())
            try:
                self.store(key, split, tensors)
            except OSError as exc:
                log.warning("feature cache: could not store %s (%s)", path.name, exc)
            return tensors, False

    @staticmethod
    def _normalised(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}

    # ------------------------------------------------------------ eviction
    def evict(self, protect: Path | None = None) -> list[Path]:
        """Delete least recently used entries until the folder is within ``max_gb``.

        Also deletes temporary files and unused lock files of killed jobs (older than
        :data:`STALE_SECONDS`). ``protect`` (the entry just written) is never deleted.

        Returns:
            The entries deleted.
        """
        now = time.time()
        found: list[tuple[float, int, Path]] = []
        for path in self._files():
            try:
                st = path.stat()
            except OSError:
                continue
            if path.name.endswith(".tmp"):
                if now - st.st_mtime > STALE_SECONDS:
                    with contextlib.suppress(OSError):
                        path.unlink()
                        continue
                found.append((float("inf"), st.st_size, path))  # in flight: counted, kept
            elif path.name.endswith(ENTRY_SUFFIX):
                found.append((st.st_atime, st.st_size, path))
        self._remove_stale_locks(now)
        if self.max_bytes is None:
            return []
        total = sum(size for _, size, _ in found)
        removed: list[Path] = []
        for _, size, path in sorted(found, key=lambda item: item[0]):
            if total <= self.max_bytes:
                break
            if path == protect or path.name.endswith(".tmp"):
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

    def _remove_stale_locks(self, now: float) -> None:
        lock_dir = self.directory / "locks"
        try:
            locks = list(lock_dir.iterdir())
        except OSError:
            return
        for lock_path in locks:
            entry = self.directory / lock_path.name.removesuffix(".lock")
            try:
                if entry.exists() or now - lock_path.stat().st_mtime < STALE_SECONDS:
                    continue
                fd = os.open(lock_path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock_path.unlink()  # while holding it: waiters re-check the inode
            except OSError:
                pass
            finally:
                os.close(fd)

    def clear(self) -> None:
        """Delete every entry (not the folder)."""
        for path in self.entries():
            with contextlib.suppress(OSError):
                path.unlink()
