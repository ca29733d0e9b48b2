"""Ctrl-C (``SIGINT``) and ``SIGTERM`` (``kill``, SLURM, container stops) end a run cleanly.

:func:`install` makes both signals raise :class:`Interrupted` (a ``KeyboardInterrupt``) in
the main thread, so the code that is running unwinds: a job marks its MLflow run
``KILLED`` (:meth:`dfmx.tracking.job_run.JobRun.log_failure`), atomic writes leave no
partial file. Code that started something that must be ended when the process stops (a
sweep's parent run) registers a cleanup with :func:`on_interrupt`; the command line calls
:func:`run_cleanups`, prints one line and exits with the shell's code for the signal:
``128 + signal number`` (130 for ``SIGINT``, 143 for ``SIGTERM``).

Library code that catches ``BaseException``, or turns the exception into another one, can
swallow the interrupt. The signal is therefore also remembered: :func:`as_interrupt` turns
the other exception back into the interrupt, and :func:`check` raises it again at the next
checkpoint (each image batch, the end of a job's work, the start of a sweep's next job),
so a swallowed Ctrl-C still stops the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger(__name__)

_cleanups: list[Callable[[], str | None]] = []
_received: int | None = None  # the first signal received since install()


class Interrupted(KeyboardInterrupt):
    """The process got ``SIGINT`` or ``SIGTERM``; :attr:`exit_code` is ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def _raise(signum: int, frame: object) -> None:
    global _received
    if _received is None:
        _received = signum
    raise Interrupted(signum)


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived since :func:`install`: a no-op
    unless some code swallowed the interrupt raised when it arrived."""
    if _received is not None:
        raise Interrupted(_received)


def as_interrupt(exc: BaseException) -> BaseException:
    """``exc``, or the interrupt it stands for: once a signal has arrived, an exception
    that library code raised in place of the interrupt is the interrupt (matplotlib's C
    extension turns a Ctrl-C during its import into ``ImportError: initialization
    failed``). The new :class:`Interrupted` has ``exc`` as its cause."""
    if isinstance(exc, KeyboardInterrupt) or _received is None:
        return exc
    interrupt = Interrupted(_received)
    interrupt.__cause__ = exc
    return interrupt


def install() -> dict[int, object]:
    """Make ``SIGINT`` and ``SIGTERM`` raise :class:`Interrupted` (main thread only; a
    signal that the parent process set to be ignored stays ignored); returns the handlers
    it replaced, for :func:`restore`."""
    previous: dict[int, object] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN:
                signal.signal(signum, _raise)
                previous[signum] = handler
        except ValueError:  # not the main thread: signals go to the main thread anyway
            break
    return previous


def restore(previous: dict[int, object]) -> None:
    """Put back the handlers :func:`install` replaced (for a ``main()`` called in-process)
    and forget a received signal."""
    global _received
    _received = None
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


def exit_code(exc: KeyboardInterrupt) -> int:
    """The conventional exit status for ``exc``: 130 for Ctrl-C, 143 for ``SIGTERM``."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def exit_now(code: int) -> NoReturn:
    """End the process with ``code``: log handlers and the standard streams flushed, no
    interpreter tear-down. After an interrupt this matters for more than time: a signal
    that cut an import short can leave a C extension half-initialised, and tearing it down
    can abort the process (exit -6, ``Fatal Python error`` while finalizing) instead of
    exiting 130. The command's ordinary exit ends here too (:func:`dfmx.cli.app._exit`)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def signal_name(exc: KeyboardInterrupt) -> str:
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"


def on_interrupt(cleanup: Callable[[], str | None]) -> None:
    """Run ``cleanup`` when the process is interrupted; it may return a few words for the
    final line (``parent MLflow run ... marked KILLED``)."""
    _cleanups.append(cleanup)


def run_cleanups() -> list[str]:
    """Run the registered cleanups (newest first), each once, ignoring further signals
    meanwhile; returns their notes. A failing cleanup is logged, never raised."""
    notes: list[str] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
    except ValueError:
        previous = {}
    try:
        while _cleanups:
            cleanup = _cleanups.pop()
            try:
                note = cleanup()
            except Exception as exc:  # the others still run
                log.warning("cleanup after the interrupt failed: %s: %s",
                            type(exc).__name__, exc)
                continue
            if note:
                notes.append(note)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return notes
