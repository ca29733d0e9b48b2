"""Atomic file writes: a file appears at its path complete or not at all.

Every writer makes a temporary file in the target's folder (``.<name>.<random>.tmp``),
writes it, then renames it onto the target with :func:`os.replace` (atomic on one file
system). On any exception the temporary file is deleted and the target is left as it was,
so a killed or failing job never leaves a half-written file where a result is expected.

The temporary file is created with mode ``0o666`` filtered by the process umask, the mode a
plain ``open(path, "w")`` gives (``0o644`` under the usual umask ``022``), so teammates who
may read the folder may read the files; :func:`tempfile.mkstemp` would make them ``0o600``.
Every writer takes ``mode=`` to give the file other permission bits instead (e.g. those
of the file it replaces).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _create_temporary(path: Path) -> tuple[Path, int]:
    """Create an empty ``.<name>.<random>.tmp`` beside ``path`` with the umask's mode;
    returns it and that mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, mode


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    For writers that take a file name (``Figure.savefig``, ``safetensors.save_file``). The
    temporary file exists (empty) when the block starts; the writer may overwrite it, even
    replace it with a file of its own mode (``safetensors.save_file`` makes ``0o600``
    files): the file's mode is set again before the rename, the umask's or ``mode`` (the
    permission bits, e.g. ``0o640``) when given. The parent folder is created when
    missing.
    """
    target = Path(path)
    tmp, umask_mode = _create_temporary(target)
    mode = umask_mode if mode is None else stat.S_IMODE(mode)
    try:
        if mode != umask_mode:  # before any data is written
            os.chmod(tmp, mode)
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
    fsync: bool = False,
    file_mode: int | None = None,
) -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only once the block succeeds.

    Args:
        path: the target file.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: text encoding (ignored for ``"wb"``).
        newline: as for :func:`open` (``""`` for the :mod:`csv` module).
        fsync: flush the data to the disk before the rename (for files that must survive a
            power cut, such as cache entries).
        file_mode: the file's permission bits (``mode=`` of the other writers); ``None``:
            the umask's.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, mode=file_mode) as tmp:
        if mode == "wb":
            handle: IO[Any] = open(tmp, "wb")  # noqa: SIM115 - closed below
        else:
            handle = open(tmp, "w", encoding=encoding, newline=newline)  # noqa: SIM115
        with handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False,
                       mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically, with the permission bits ``mode`` (``None``:
    the umask's); returns ``path`` as a :class:`~pathlib.Path`."""
    with atomic_open(path, "wb", fsync=fsync, file_mode=mode) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *,
                      mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, with the permission bits ``mode``
    (``None``: the umask's); returns ``path`` as a Path."""
    with atomic_open(path, "w", file_mode=mode) as handle:
        handle.write(text)
    return Path(path)
