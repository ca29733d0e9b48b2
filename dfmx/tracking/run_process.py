"""The MLflow runs of a command, recorded by a process of its own.

Importing MLflow, opening its store and creating a run take seconds of one core, and so
do the imports of torch and timm that the job needs first; threads cannot overlap them
(imports hold the GIL). So a command that may record runs starts
``python -m dfmx.tracking.run_process`` first (:func:`prestart`): it imports MLflow on
the other core while the command composes its config and imports torch. A job then
records its run through a :class:`RunClient`, which has the methods of
:class:`~dfmx.tracking.job_run.JobRun` and has them carried out there, one call at a
time, and a sweep's callback its parent run through :func:`parent_runs`; the command
itself never imports MLflow. The store is opened as soon as the config is composed
(:func:`open_store_early`, from :class:`~dfmx.tracking.callback.TrackingProcessCallback`),
and what logging the results needs is loaded while the first job works.

Only the process that started it uses it: jobs that a launcher runs in other processes
(joblib, Ray, SLURM) record their runs themselves.

The process ends when the command closes its end of the pipes, also when the command is
killed (``SIGKILL``, out of memory): the job's run and a sweep's parent run still open
then end ``FAILED`` with the error :data:`ORPHANED`, where in-process runs would stay
``RUNNING`` (a child forked from the command lets go of the pipes, so it does not keep the
process waiting). It ignores ``SIGINT`` and ``SIGTERM``: the command handles them and has the
runs ended ``KILLED``. Its log records go to the command's log.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from dfmx import startup_gc
from dfmx.errors import traceback_text
from dfmx.tracking.job_context import JobContext
from dfmx.tracking.settings import TrackingSettings, sqlite_path
from dfmx.tracking.store import TrackingUnavailableError

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")
#: The error of a run left open when the command ended.
ORPHANED = "the dfmx command ended before its MLflow run finished"
_ORPHANED_LINE = f"RuntimeError: {ORPHANED}"


class TrackingProcessError(TrackingUnavailableError):
    """The tracking process ended while the command needed it (one line, like a tracking
    server that went away)."""


class RemoteTrackingError(RuntimeError):
    """An error raised in the tracking process. :func:`_remote_error` names a subclass
    after the original class, so messages name it (``MlflowException: ...``)."""


class _RemoteTraceback(Exception):
    """The tracking process's traceback, as the ``__cause__`` of its error here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _remote_error(type_name: str, message: str, remote_traceback: str) -> BaseException:
    cls = type(type_name, (RemoteTrackingError,), {"__module__": __name__})
    exc = cls(message)
    exc.__cause__ = _RemoteTraceback(remote_traceback) if remote_traceback else None
    return exc


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(stream: IO[bytes]) -> Any:
    (n,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return pickle.loads(_read_exact(stream, n))


def _portable(exc: BaseException) -> Any:
    """``exc`` itself when the command can unpickle it without MLflow (dfmx's errors and
    Python's built-in ones), else its class name, message and traceback."""
    module = type(exc).__module__
    if module == "builtins" or module.startswith("dfmx."):
        with contextlib.suppress(Exception):
            pickle.loads(pickle.dumps(exc))
            return exc
    return (type(exc).__name__, str(exc), traceback_text(exc))


# --- the command's side --------------------------------------------------------------

#: Called with the error of a posted call, once its answer (or the process's loss) is seen.
OnError = Callable[[BaseException], None]


class _Channel:
    """The command's ends of the pipes to the tracking process."""

    def __init__(self, proc: subprocess.Popen[bytes], requests: IO[bytes],
                 answers: IO[bytes]) -> None:
        self.proc, self._requests, self._answers = proc, requests, answers
        self.pid = os.getpid()  # a forked child must not use these pipes
        self._lock = threading.Lock()
        self._last_id = 0
        self._pending: dict[int, OnError] = {}  # posted calls whose errors are wanted
        self.has_run = False  # given a job or a parent run: one may be open there

    def call(self, method: str, *args: Any) -> tuple[Any, dict[str, Any]]:
        """``method(*args)`` of the process's run; returns its value and the run's state.
        Answers of earlier posted calls are read first (their errors handed to their
        ``on_error``, after the lock is released); a call cut short here (an interrupt)
        leaves its answer in the pipe, and the next call skips it."""
        failures: list[tuple[OnError, BaseException]] = []
        try:
            with self._lock:
                kind, payload = self._exchange(method, args, failures)
        finally:
            for on_error, exc in failures:
                try:
                    on_error(exc)
                except Exception:  # a failure report must not hide this call's outcome
                    log.exception("could not report an MLflow logging failure")
        value, state = payload
        if kind == "error":
            raise _error(value)
        return value, state

    def _exchange(self, method: str, args: tuple[Any, ...],
                  failures: list[tuple[OnError, BaseException]]) -> tuple[str, Any]:
        self._last_id += 1
        ident = self._last_id
        try:
            _send(self._requests, (ident, method, args))
            while True:
                kind, answer_id, payload = _receive(self._answers)
                if kind == "log":
                    logging.getLogger(payload[0]).log(payload[1], "%s", payload[2])
                elif answer_id == ident:
                    return kind, payload
                else:
                    on_error = self._pending.pop(answer_id, None)
                    if kind == "error" and on_error is not None:
                        failures.append((on_error, _error(payload[0])))
        except (EOFError, OSError) as exc:
            lost = self._lost()
            failures.extend((on_error, lost) for on_error in self._pending.values())
            self._pending.clear()
            raise lost from exc

    def _lost(self) -> TrackingProcessError:
        code = self.proc.poll()
        status = f" (exit status {code})" if code is not None else ""
        return TrackingProcessError(f"the MLflow tracking process ended unexpectedly{status}")

    def post(self, method: str, *args: Any, on_error: OnError | None = None) -> None:
        """``method(*args)`` there without waiting for it. Its answer is read by a later
        :meth:`call` (or :meth:`settle`); ``on_error`` is then given its error, or the
        process's loss."""
        with self._lock:
            self._last_id += 1
            if on_error is not None:
                self._pending[self._last_id] = on_error
            with contextlib.suppress(OSError):  # the process has gone: the next call says
                _send(self._requests, (self._last_id, method, args))

    def settle(self) -> None:
        """Wait for the posted calls whose errors are wanted; their ``on_error`` run."""
        if self._pending:
            with contextlib.suppress(TrackingProcessError):
                self.call("ping")

    def streams(self) -> tuple[IO[bytes], IO[bytes]]:
        return self._requests, self._answers

    def close(self) -> None:
        for stream in self.streams():
            with contextlib.suppress(OSError):
                stream.close()


def _error(value: Any) -> BaseException:
    """The exception of an ``("error", ...)`` answer."""
    return value if isinstance(value, BaseException) else _remote_error(*value)


_channel: _Channel | None = None


def prestart() -> None:
    """Start the tracking process (once). Never raises: without it, the job records its
    run in this process."""
    global _channel
    if _channel is not None:
        return
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dfmx.tracking.run_process", str(to_child_r),
             str(to_parent_w)],
            pass_fds=(to_child_r, to_parent_w), stdin=subprocess.DEVNULL)
    except (OSError, ValueError) as exc:  # no process to start, or no passing of pipes
        for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
            os.close(fd)
        log.debug("no tracking process (%s): the run is recorded in this process", exc)
        return
    os.close(to_child_r)
    os.close(to_parent_w)
    _channel = _Channel(proc, os.fdopen(to_child_w, "wb"), os.fdopen(to_parent_r, "rb"))
    atexit.register(stop)


def _release_in_child() -> None:
    """In a child forked from the command (a fork-based launcher worker, a library that
    forks), let go of the pipes to the tracking process: while a child held them, the
    process would not see the command end (killed, say) before the child ended too. The
    descriptors are pointed at ``/dev/null`` rather than closed, so that the inherited file
    objects, closed later, close nothing of the child's."""
    if _channel is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    try:
        for stream in _channel.streams():
            with contextlib.suppress(OSError, ValueError):  # ValueError: already closed
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_release_in_child)


def stop(timeout: float = 60.0) -> None:
    """Close the pipes and wait (at most ``timeout`` seconds) for the process to finish
    the logging posted to it, end the runs still open ``FAILED`` and exit; a process that
    was never given a run (the command refused its options, or records no run) is ended
    at once instead of being waited for while it imports MLflow."""
    global _channel
    if _channel is not None:
        channel, _channel = _channel, None
        channel.close()
        if channel.pid != os.getpid():  # a forked copy of the command: not its process
            return
        if not channel.has_run:
            with contextlib.suppress(OSError):
                channel.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            channel.proc.wait(timeout)


def open_store_early(settings: TrackingSettings, cwd: str | None) -> None:
    """Have the tracking process open the run's store now, while this process checks the
    options and imports torch: only an existing SQLite store (opening one may create it,
    and a command refused by its checks leaves nothing behind); errors are left for the
    run's start to report."""
    if _channel is None:
        return
    uri = settings.resolved_uri(cwd)
    path = sqlite_path(uri)
    if settings.enabled and path is not None and path.is_file():
        _channel.post("open_store", uri, settings.experiment_name)


def _usable() -> _Channel | None:
    """The channel to a tracking process this process started and that still runs."""
    if _channel is None or _channel.pid != os.getpid() or _channel.proc.poll() is not None:
        return None
    return _channel


def client(settings: TrackingSettings, context: JobContext) -> RunClient | None:
    """A :class:`RunClient` for a job's run when the tracking process runs, else
    ``None`` (the job records its run in this process)."""
    channel = _usable()
    if channel is None:
        settle()  # the logging a lost process still owed fails its jobs now
        return None
    channel.has_run = True
    return RunClient(channel, settings, context)


def settle() -> None:
    """Wait until the tracking process has done the logging posted to it (by
    :meth:`RunClient.log_result_later`), its failures (or the process's loss) reported."""
    if _channel is not None and _channel.pid == os.getpid():
        _channel.settle()


def parent_runs() -> Any:
    """The functions of :mod:`dfmx.tracking.parent_run` (``create``, ``finish``,
    ``end``), carried out by the tracking process when it runs, else here."""
    channel = _usable()
    if channel is None:
        from dfmx.tracking import parent_run

        return parent_run
    channel.has_run = True
    return _ParentClient(channel)


class _ParentClient:
    """:mod:`dfmx.tracking.parent_run` through the tracking process. Ending the parent
    when the process has gone is done here."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def create(self, *args: Any) -> Any:
        return self._channel.call("parent.create", *args)[0]

    def finish(self, *args: Any) -> None:
        self._call_or_here("finish", *args)

    def end(self, *args: Any) -> int:
        return self._call_or_here("end", *args)

    def _call_or_here(self, name: str, *args: Any) -> Any:
        try:
            return self._channel.call(f"parent.{name}", *args)[0]
        except TrackingProcessError:
            from dfmx.tracking import parent_run

            return getattr(parent_run, name)(*args)


class RunClient:
    """One job's MLflow run, recorded by the tracking process: the methods and
    attributes of :class:`~dfmx.tracking.job_run.JobRun` that a job uses."""

    def __init__(self, channel: _Channel, settings: TrackingSettings,
                 context: JobContext) -> None:
        self._channel = channel
        self.settings, self.context = settings, context
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.model_uri: str | None = None
        self._opened = False
        self._open_there = False  # the process holds this run open (last it said)

    def _call(self, method: str, *args: Any) -> Any:
        if not self._opened:
            self._channel.call("open", self.settings, self.context)
            self._opened = True
        try:
            value, state = self._channel.call(method, *args)
        except TrackingProcessError:
            raise
        except Exception:
            if method == "log_result":
                self._open_there = False  # the process has ended the run FAILED
            raise
        self._take(state)
        return value

    def _take(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
        self.tracking_uri = state.get("tracking_uri")
        self.model_uri = state.get("model_uri")
        self._open_there = bool(state.get("open"))

    def find_finished(self, config: dict[str, Any]) -> Any:
        return self._call("find_finished", config)

    def start(self, config: dict[str, Any]) -> str:
        return self._call("start", config)

    def log_result(self, result: Any, config_yaml: str) -> None:
        """As :meth:`~dfmx.tracking.job_run.JobRun.log_result`; when it fails there, the
        process has ended the run ``FAILED`` with that error."""
        from dfmx.tracking.job_run import LoggedResult

        self._call("log_result", LoggedResult.of(result), config_yaml)

    def log_result_later(self, result: Any, config_yaml: str, on_error: OnError) -> None:
        """:meth:`log_result` without waiting for it: the process logs while this one goes
        on. When the logging fails, the run has been ended ``FAILED`` (here, when the
        process was lost) before ``on_error(exc)`` is called, during a later call or
        :func:`settle`."""
        from dfmx.tracking.job_run import LoggedResult

        def failed(exc: BaseException) -> None:
            if self._open_there and isinstance(exc, TrackingProcessError):
                self._record_failure_here(exc)
            self._open_there = False  # ended either way: on_error must not end it again
            on_error(exc)

        self._channel.post("log_result", LoggedResult.of(result), config_yaml,
                           on_error=failed)

    def log_failure(self, exc: BaseException) -> None:
        """As :meth:`~dfmx.tracking.job_run.JobRun.log_failure`; never raises. When the
        tracking process has gone, this process ends the run itself."""
        if self.run_id is None or not self._open_there:
            return
        from dfmx.tracking.job_run import failure_record

        try:
            self._call("record_failure", *failure_record(exc))
        except Exception as log_exc:
            if self._channel.proc.poll() is None:  # the process is there but failed
                log.warning("could not record the failure in MLflow: %s", log_exc)
                return
            self._record_failure_here(exc)

    def _record_failure_here(self, exc: BaseException) -> None:
        from dfmx.tracking.job_run import JobRun, failure_record

        run = JobRun(self.settings, self.context)
        run.run_id = self.run_id
        run.record_failure(*failure_record(exc))


# --- the tracking process's side -----------------------------------------------------

class _Forward(logging.Handler):
    """Sends this process's log records to the command, which logs them as its own."""

    def __init__(self, server: _Server) -> None:
        super().__init__(logging.DEBUG)
        self._server = server

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._server.send(("log", 0, (record.name, record.levelno, record.getMessage())))
        except Exception:  # a log line must not end the process
            self.handleError(record)


class _Server:
    """The runs the command's calls act on: a job's, and a sweep's parent."""

    def __init__(self, answers: IO[bytes]) -> None:
        self._answers = answers
        self._send_lock = threading.Lock()
        self.run: Any = None
        self.open_run = False
        self.parent: Any = None  # a sweep's parent run (ParentInfo) while it is open
        self.sweep_dir: str | None = None

    def send(self, message: Any) -> None:
        with self._send_lock:
            _send(self._answers, message)

    def state(self) -> dict[str, Any]:
        if self.run is None:
            return {}
        return {"run_id": self.run.run_id, "tracking_uri": self.run.tracking_uri,
                "model_uri": self.run.model_uri, "open": self.open_run}

    def handle(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "ping":
            return None
        if method == "open_store":
            from dfmx.tracking.store import open_store

            open_store(*args)
            return None
        if method == "open":
            from dfmx.tracking.job_run import JobRun

            self.run, self.open_run = JobRun(*args), False
            return None
        if method.startswith("parent."):
            return self._parent(method.removeprefix("parent."), args)
        if self.run is None or method not in ("find_finished", "start", "log_result",
                                              "record_failure"):
            raise RuntimeError(f"the tracking process cannot {method!r} now")
        try:
            value = getattr(self.run, method)(*args)
        except Exception as exc:
            if method == "log_result" and self.open_run:  # whoever waits for it or not
                from dfmx.tracking.job_run import failure_record

                self.open_run = False
                self.run.record_failure(*failure_record(exc))  # never raises
            raise
        if method == "start":
            self.open_run = True
        elif method != "find_finished":
            self.open_run = False
        return value

    def _parent(self, name: str, args: tuple[Any, ...]) -> Any:
        from dfmx.tracking import parent_run

        if name not in ("create", "finish", "end"):
            raise RuntimeError(f"the tracking process cannot 'parent.{name}'")
        value = getattr(parent_run, name)(*args)
        if name == "create":
            self.parent, self.sweep_dir = value, args[2].get("dfmx.sweep_dir")
        else:
            self.parent = None
        return value

    def end_orphaned_runs(self) -> None:
        """End the job's run and the sweep's parent run when either is still open."""
        if self.run is not None and self.open_run:
            self.run.record_failure(_ORPHANED_LINE, ORPHANED, False)
        if self.parent is not None:
            from dfmx.tracking import parent_run, sweep_state

            n_jobs = len(sweep_state.read_job_records(self.sweep_dir)) if self.sweep_dir else 0
            parent_run.end(self.parent, n_jobs, "FAILED", _ORPHANED_LINE)


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer the command's calls until it closes the pipe; then end a run still open."""
    from dfmx.tracking.redact import install_log_redaction

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    install_log_redaction()
    server = _Server(answers)
    root = logging.getLogger()
    root.addHandler(_Forward(server))
    root.setLevel(logging.INFO)
    startup_gc.pause()
    import mlflow  # noqa: F401 - the reason this process exists: beside the command's start

    startup_gc.resume()

    while True:
        try:
            ident, method, args = _receive(requests)
        except Exception:  # the command closed its end (EOF), or went away mid-message
            break
        try:
            answer: tuple[Any, ...] = ("ok", ident, (server.handle(method, args),
                                                     server.state()))
        except Exception as exc:  # every error goes back to the command
            answer = ("error", ident, (_portable(exc), server.state()))
        try:
            server.send(answer)
        except OSError:  # the command went away during this call
            break
        if method == "start":
            _prepare_logging()  # while the job works
    server.end_orphaned_runs()


def _prepare_logging() -> None:
    """Load now what logging the results will need: the pyfunc model code. Best effort: a
    failure here only leaves that work for later."""
    with contextlib.suppress(Exception):
        import dfmx.tracking.pyfunc  # noqa: F401


def main(argv: list[str]) -> None:
    requests = os.fdopen(int(argv[0]), "rb")
    answers = os.fdopen(int(argv[1]), "wb")
    try:
        serve(requests, answers)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)  # no interpreter tear-down of MLflow: all is recorded


if __name__ == "__main__":
    main(sys.argv[1:])
