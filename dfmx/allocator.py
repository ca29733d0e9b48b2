"""The C allocator of a dfmx command's process: freed memory is kept for reuse.

A job allocates and frees tensors of tens of MB for every batch (the backbone's
activations, pooled maps, scores). glibc's ``malloc`` serves blocks above its mmap
threshold (128 KiB, raised as such blocks are freed, to at most 32 MiB) with fresh
mappings that it unmaps again at ``free``, and gives the free top of its heap back to the
system beyond 128 KiB: so every batch faults its memory in again, a page at a time, and
the kernel zeroes each page first. :func:`keep_freed_memory` sets the threshold to
256 MiB and the heap's trim threshold to 1 GiB: freed blocks are reused instead, for some
more peak memory (the figures: ``docs/performance.md``, "The allocator").

The commands (``python -m dfmx`` and its jobs, ``dfmx-predict``) call it for their own
process; importing dfmx changes nothing. The user's own settings
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``glibc.malloc`` tunables in
``GLIBC_TUNABLES``) are left alone, and so is every C library but glibc; an allocator put
in glibc's place (jemalloc or tcmalloc through ``LD_PRELOAD``) ignores these settings.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

#: Blocks up to this size come from the heap, and are reused once freed.
MMAP_THRESHOLD = 256 << 20
#: Free memory at the top of the heap kept before any is given back to the system.
TRIM_THRESHOLD = 1 << 30

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Environment variables through which the user sets glibc's malloc themselves.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_done = False


def _user_settings() -> str | None:
    """The user's own allocator setting, if any."""
    for name in _USER_SETTINGS:
        if os.environ.get(name):
            return name
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse in this process (see the module docstring);
    whether it now does. Once per process; never raises."""
    global _done
    if _done:
        return True
    own = _user_settings()
    if own is not None:
        log.debug("allocator left as set by %s", own)
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError) as exc:  # no such symbol: not glibc after all
        log.debug("allocator left as it is: %s", exc)
    return _done
