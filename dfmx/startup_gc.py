"""The cyclic garbage collector during a command's start-up.

Start-up is imports (Hydra, then torch and timm for the option checks; MLflow in the
tracking process): hundreds of thousands of objects that live as long as the process. The
collector scans them again and again as they come, and in the command every scan is on
the critical path, before the job can start (the figures: ``docs/performance.md``). So
:func:`pause` (the command's first step) turns the collector off, and :func:`resume`
(once the options are checked, the imports done) turns it on again, with everything alive
then set aside for good (``gc.freeze``: modules and classes, never garbage, are not
scanned again either).
"""

from __future__ import annotations

import gc

__all__ = ["pause", "resume"]

_paused = False


def pause() -> None:
    """Turn the collector off for the start-up (where it is on)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Turn the collector on again after :func:`pause`, the start-up's objects frozen;
    without a pause, nothing."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
