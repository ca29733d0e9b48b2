"""The names in a cache folder, and the proof that a file there is an entry dfmx wrote.

Layout of a cache folder::

    <dir>/<split>-<40 hex>.safetensors              an entry: {layer: (N, C, h, w)}
    <dir>/.<entry name>.<random>.tmp                 an entry being written
    <dir>/locks/<entry name>.lock                    the lock of one entry

The 40 hex digits are the start of the SHA-256 of the entry's key (as
:func:`~dfmx.features.cache.keys.canonical_key` writes it), and the entry's safetensors
metadata holds that key, its split, the format version and a checksum. A file is dfmx's
entry only when all of this agrees (:func:`is_own_entry`): the cache may share its folder
with anything else (a user's weights, other ``*.safetensors``) and never touches those.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfmx.cache_dir import default_cache_dir
from dfmx.features.cache.keys import canonical_key

__all__ = [
    "ENTRY_SUFFIX",
    "LOCK_DIR",
    "default_feature_cache_dir",
    "entry_metadata",
    "entry_name",
    "is_entry_name",
    "is_lock_name",
    "is_own_entry",
    "is_temporary_name",
]

ENTRY_SUFFIX = ".safetensors"
LOCK_DIR = "locks"
_ENTRY = r"[A-Za-z0-9_]+-[0-9a-f]{40}\.safetensors"
_ENTRY_RE = re.compile(r"(?P<split>[A-Za-z0-9_]+)-(?P<digest>[0-9a-f]{40})\.safetensors")
_TEMPORARY_RE = re.compile(rf"\.{_ENTRY}\.[A-Za-z0-9_]+\.tmp")
_LOCK_RE = re.compile(rf"{_ENTRY}\.lock")
#: Metadata fields every entry carries.
_FIELDS = ("format", "key", "split", "checksum")
#: Bound on the JSON header read to check ownership (an entry's header is a few kB).
_MAX_HEADER = 1 << 24


def default_feature_cache_dir() -> Path:
    """``$DFMX_CACHE_DIR/features`` if the variable is set, else ``~/.cache/dfmx/features``."""
    return default_cache_dir() / "features"


def entry_name(key: Mapping[str, Any], split: str) -> str:
    """``<split>-<40 hex of the key's SHA-256>.safetensors``."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", split or ""):
        raise ValueError(f"split must be a plain name such as 'train'; got {split!r}")
    digest = hashlib.sha256(canonical_key(key).encode()).hexdigest()[:40]
    return f"{split}-{digest}{ENTRY_SUFFIX}"


def is_entry_name(name: str) -> bool:
    """Whether ``name`` has the form of an entry's file name."""
    return _ENTRY_RE.fullmatch(name) is not None


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` has the form of an entry being written."""
    return _TEMPORARY_RE.fullmatch(name) is not None


def is_lock_name(name: str) -> bool:
    """Whether ``name`` has the form of an entry's lock file."""
    return _LOCK_RE.fullmatch(name) is not None


def entry_metadata(path: Path) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors file's header, or ``None`` if it has none or the
    file is not a readable safetensors file. Reads the header only (not the tensors)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                return None
            (size,) = struct.unpack("<Q", head)
            if size > _MAX_HEADER:
                return None
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


def is_own_entry(path: Path) -> bool:
    """Whether ``path`` is an entry the cache wrote: its name has the entry form, and its
    metadata holds the entry fields, its split and a key whose hash is the name's digest."""
    match = _ENTRY_RE.fullmatch(path.name)
    if match is None:
        return False
    meta = entry_metadata(path)
    if meta is None or any(not isinstance(meta.get(f), str) for f in _FIELDS):
        return False
    digest = hashlib.sha256(meta["key"].encode()).hexdigest()[:40]
    return meta["split"] == match["split"] and digest == match["digest"]
