"""Faults of the machine rather than of dfmx, worded as one line the user can act on.

A folder that cannot be written (read-only file system, no permission, a path through a
file), a full disk or quota or a file size limit (``ENOSPC``, ``EDQUOT``, ``EFBIG``: one
class, "no room"), and an allocation that fails (``MemoryError``, torch's CPU allocator or
CUDA out of memory) are :class:`~dfmx.errors.UserError` subclasses here, so the command
line shows them as one line (the traceback with ``debug=true`` / ``--debug``).
"""

from __future__ import annotations

import errno

from dfmx.errors import UserError

__all__ = ["NO_ROOM", "OutOfMemory", "OutputWriteError", "as_user_error", "is_out_of_memory",
           "write_error"]

#: Errors that mean the disk (or the quota, or the file size limit) has no room left.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutputWriteError(UserError, OSError):
    """A result file or folder cannot be written (an ``OSError`` too)."""


class OutOfMemory(UserError, MemoryError):
    """An allocation failed (a ``MemoryError`` too)."""


def write_error(exc: OSError, place: str, way_out: str) -> OutputWriteError:
    """``exc`` (raised writing ``place``) as one line naming the place and ``way_out``."""
    where = f"{place} ({exc.filename})" if exc.filename and str(exc.filename) not in place \
        else place
    reason = exc.strerror or str(exc)
    if exc.errno in NO_ROOM:
        what = (f"no room left to write {where} ({reason}: the disk, the quota or the file "
                "size limit is full); free some space or raise the limit, or")
    else:
        what = f"cannot write {where} ({reason}); "
    error = OutputWriteError(f"{what} {way_out}".replace(";  ", "; "))
    error.errno = exc.errno  # the message stays as it is (no "[Errno N]", no file name)
    return error


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation (numpy, Python, torch on the CPU or a GPU)."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
        or "DefaultCPUAllocator" in text)


def as_user_error(exc: BaseException, place: str, way_out_disk: str,
                  way_out_memory: str) -> BaseException:
    """``exc`` as a one-line user error when it is a fault of the machine, else ``exc``.

    Args:
        exc: the error a job or command ended with.
        place: what was being written (``the run folder /x``), for write errors whose file
            name is all they carry.
        way_out_disk: what to do about a folder that cannot be written or a full disk.
        way_out_memory: what to do about a failed allocation (smaller sizes or batches).
    """
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError) and (exc.errno in NO_ROOM or exc.errno == errno.EROFS):
        return write_error(exc, place, way_out_disk)
    if is_out_of_memory(exc):
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return OutOfMemory(f"out of memory ({first[:200]}); {way_out_memory}")
    return exc
