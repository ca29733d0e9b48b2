"""Where a command's wall time goes: named phases, logged at DEBUG, optionally saved.

Phases are timed with :func:`job_timer` (``startup``, ``check``, ``import_experiment``,
``tracking_start``, ``run_experiment``, ``tracking_log``, ...). With the environment
variable ``DFMX_PROFILE=PATH`` set, the process writes them to ``PATH`` as JSON when it
exits: ``{"phases": {name: {"start": epoch seconds, "seconds": duration}}}`` (a phase met
twice, as in a sweep, keeps its first start and sums its durations). The job's own stages
are in its ``metrics.json`` (``time_*``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PROFILE_ENV = "DFMX_PROFILE"

log = logging.getLogger("dfmx.timings")
_phases: dict[str, dict[str, float]] = {}
_lock = threading.Lock()


@contextmanager
def job_timer(name: str) -> Iterator[None]:
    """Time the block as phase ``name`` (thread-safe)."""
    start_epoch, start = time.time(), time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        with _lock:
            phase = _phases.setdefault(name, {"start": start_epoch, "seconds": 0.0})
            phase["seconds"] += seconds


def phases() -> dict[str, dict[str, float]]:
    """A copy of the phases timed so far."""
    with _lock:
        return {k: dict(v) for k, v in _phases.items()}


def log_job_timings() -> None:
    """One DEBUG line with every phase's seconds."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("timings: %s", ", ".join(f"{k} {v['seconds']:.3f} s"
                                           for k, v in phases().items()))


def _save() -> None:
    path = os.environ.get(PROFILE_ENV)
    if path:
        try:
            with open(path, "w") as f:
                json.dump({"phases": phases()}, f)
        except OSError as exc:
            log.warning("could not write %s=%s: %s", PROFILE_ENV, path, exc)


atexit.register(_save)
