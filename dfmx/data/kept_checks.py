"""Results of the file checks (:func:`dfmx.data.validation.check_image`) kept for later
processes, so that a command does not read every image of its data set again to verify
it when the files have not changed since an earlier command did (PIL's ``verify()`` reads
the whole file: about 1 ms per MVTec image, 0.3 s of every bottle command, seconds for
data sets of thousands of images).

Kept under ``$DFMX_CACHE_DIR/checked-files/``: one JSON record per folder of files (and per
``decode`` setting, Pillow version and version of the checks' code), mapping each file's
name to its identity and its result. A file's identity is its size, modification and
status-change times and its inode and device: a file written again, replaced, touched or
renamed over is checked again (the status-change time cannot be set back). A record that
is missing, unreadable or of another version is checked anew. A record read or made in a
process stays in its memory, so the jobs of a sweep check each file once even where the
cache folder cannot be written. The records take at most
:data:`KEPT_RECORD_BYTES`, the least recently used removed first; removing the folder is
always safe.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from dfmx.cache_dir import default_cache_dir, evict_least_recent, read_record, write_record

__all__ = ["Identity", "Result", "flush", "identity", "lookup", "remember"]

FORMAT = 1
#: The most bytes of check records kept (about 100 bytes a file).
KEPT_RECORD_BYTES = 64 << 20
#: The most file results held in memory before records not waiting to be written are let go.
_HELD_MAX = 200_000

#: ``(size, mtime_ns, ctime_ns, inode, device)`` of a file.
Identity = tuple[int, int, int, int, int]
#: ``(width, height)`` of a readable image, else why it cannot be used.
Result = tuple[int, int] | str


def identity(st: os.stat_result) -> Identity:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


@functools.cache
def _version() -> str:
    """What made the results: this format, the checks' code and Pillow's version."""
    import PIL

    digest = hashlib.sha256(f"{FORMAT} {PIL.__version__}".encode())
    digest.update(Path(__file__).with_name("validation.py").read_bytes())
    return digest.hexdigest()


def _root() -> Path:
    return default_cache_dir() / "checked-files"


@dataclass
class _Folder:
    path: Path  # the record's file
    files: dict[str, list] = field(default_factory=dict)  # name -> [*identity, result]
    dirty: bool = False


_folders: dict[tuple[str, bool], _Folder] = {}
_lock = threading.Lock()


def _folder(folder: str, decode: bool) -> _Folder:
    """The record of ``folder`` (read once per process)."""
    key = (folder, decode)
    if key not in _folders:
        if sum(len(f.files) for f in _folders.values()) > _HELD_MAX:
            for k in [k for k, f in _folders.items() if not f.dirty]:
                del _folders[k]
        name = hashlib.sha256(json.dumps([_version(), folder, decode]).encode()).hexdigest()
        path = _root() / f"{name[:32]}.json"
        record = read_record(path, FORMAT)
        files = record.get("files") if record is not None and record.get("folder") == folder \
            else None
        _folders[key] = _Folder(path, files if isinstance(files, dict) else {})
        if files:
            with contextlib.suppress(OSError):
                os.utime(path)  # used now: the last to go
    return _folders[key]


def lookup(path: str, ident: Identity, decode: bool) -> Result | None:
    """The kept result of the file at ``path`` (absolute) when its identity is still
    ``ident``, else ``None``."""
    folder, name = os.path.split(path)
    with _lock:
        entry = _folder(folder, decode).files.get(name)
    if not isinstance(entry, list) or len(entry) != 6 or tuple(entry[:5]) != ident:
        return None
    result = entry[5]
    if isinstance(result, str):
        return result
    if isinstance(result, list) and len(result) == 2 and all(isinstance(v, int) for v in result):
        return result[0], result[1]
    return None


def remember(path: str, ident: Identity, decode: bool, result: Result) -> None:
    """Keep ``result`` for the file at ``path`` (absolute), written by :func:`flush`."""
    folder, name = os.path.split(path)
    with _lock:
        record = _folder(folder, decode)
        record.files[name] = [*ident, result if isinstance(result, str) else list(result)]
        record.dirty = True


def flush() -> None:
    """Write the records that have new results (a cache folder that cannot be written
    only costs checking the files again)."""
    with _lock:
        dirty = [(folder, record) for (folder, _), record in _folders.items() if record.dirty]
        for folder, record in dirty:
            record.files = {name: entry for name, entry in record.files.items()
                            if os.path.lexists(os.path.join(folder, name))}
            write_record(record.path, {"folder": folder, "files": record.files}, FORMAT)
            record.dirty = False
    if dirty:
        evict_least_recent(_root().glob("*.json"), KEPT_RECORD_BYTES,
                           keep={record.path for _, record in dirty})
