"""A single run's MLflow run, recorded by a process of its own.

Importing MLflow, opening its store and creating the run take seconds of one core, and so
do the imports of torch and timm that the job needs first; threads cannot overlap them
(imports hold the GIL). So a command that will run one tracked job starts
``python -m dfmx.tracking.run_process`` first (:func:`prestart`): it imports MLflow on
the other core while the command composes its config and imports torch. The job then
records its run through a :class:`RunClient`, which has the methods of
:class:`~dfmx.tracking.job_run.JobRun` and has them carried out there, one call at a
time; the command itself never imports MLflow. The store is opened as soon as the config
is composed (:func:`open_store_early`, from
:class:`~dfmx.tracking.callback.TrackingProcessCallback`), and what logging the results
needs is loaded while the job works.

The process ends when the command closes its end of the pipes, also when the command is
killed (``SIGKILL``, out of memory): a run still open then ends ``FAILED`` with the error
:data:`ORPHANED`, where an in-process run would stay ``RUNNING``. It ignores ``SIGINT``
and ``SIGTERM``: the command handles them and has the run ended ``KILLED``. Its log
records go to the command's log.

Sweeps (``-m``) record their runs in the processes that run their jobs: the launching
process opens the store for the parent run anyway.
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
from typing import IO, Any

from dfmx.errors import traceback_text
from dfmx.tracking.job_context import JobContext
from dfmx.tracking.settings import TrackingSettings, sqlite_path
from dfmx.tracking.store import TrackingUnavailableError

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")
#: The error of a run left open when the command ended.
ORPHANED = "the dfmx command ended before its MLflow run finished"


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

class _Channel:
    """The command's ends of the pipes to the tracking process."""

    def __init__(self, proc: subprocess.Popen[bytes], requests: IO[bytes],
                 answers: IO[bytes]) -> None:
        self.proc, self._requests, self._answers = proc, requests, answers
        self._lock = threading.Lock()
        self._last_id = 0
        self.has_run = False  # a RunClient was made: a run may be open there

    def call(self, method: str, *args: Any) -> tuple[Any, dict[str, Any]]:
        """``method(*args)`` of the process's run; returns its value and the run's ids.
        A call cut short here (an interrupt) leaves its answer in the pipe; the next call
        skips it."""
        with self._lock:
            self._last_id += 1
            ident = self._last_id
            try:
                _send(self._requests, (ident, method, args))
                while True:
                    kind, answer_id, payload = _receive(self._answers)
                    if kind == "log":
                        logging.getLogger(payload[0]).log(payload[1], "%s", payload[2])
                    elif answer_id == ident:
                        break
            except (EOFError, OSError) as exc:
                code = self.proc.poll()
                status = f" (exit status {code})" if code is not None else ""
                raise TrackingProcessError(
                    f"the MLflow tracking process ended unexpectedly{status}") from exc
        value, state = payload
        if kind == "error":
            raise value if isinstance(value, BaseException) else _remote_error(*value)
        return value, state

    def post(self, method: str, *args: Any) -> None:
        """``method(*args)`` there without waiting for it; the next :meth:`call` skips
        its answer."""
        with self._lock:
            self._last_id += 1
            with contextlib.suppress(OSError):
                _send(self._requests, (self._last_id, method, args))

    def close(self) -> None:
        for stream in (self._requests, self._answers):
            with contextlib.suppress(OSError):
                stream.close()


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


def stop(timeout: float = 60.0) -> None:
    """Close the pipes and wait (at most ``timeout`` seconds) for the process to end a
    run still open ``FAILED`` and exit; a process that was never given a run (the
    command refused its options, or records no run) is ended at once instead of being
    waited for while it imports MLflow."""
    global _channel
    if _channel is not None:
        channel, _channel = _channel, None
        channel.close()
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


def client(settings: TrackingSettings, context: JobContext) -> RunClient | None:
    """A :class:`RunClient` for a single run when the tracking process runs, else
    ``None`` (the job records its run in this process)."""
    if _channel is None or context.multirun or _channel.proc.poll() is not None:
        return None
    _channel.has_run = True
    return RunClient(_channel, settings, context)


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

    def _call(self, method: str, *args: Any) -> Any:
        if not self._opened:
            self._channel.call("open", self.settings, self.context)
            self._opened = True
        value, state = self._channel.call(method, *args)
        self.run_id = state.get("run_id")
        self.tracking_uri = state.get("tracking_uri")
        self.model_uri = state.get("model_uri")
        return value

    def find_finished(self, config: dict[str, Any]) -> Any:
        return self._call("find_finished", config)

    def start(self, config: dict[str, Any]) -> str:
        return self._call("start", config)

    def log_result(self, result: Any, config_yaml: str) -> None:
        from dfmx.tracking.job_run import LoggedResult

        self._call("log_result", LoggedResult.of(result), config_yaml)

    def log_failure(self, exc: BaseException) -> None:
        """As :meth:`~dfmx.tracking.job_run.JobRun.log_failure`; never raises. When the
        tracking process has gone, this process ends the run itself."""
        if self.run_id is None:
            return
        from dfmx.tracking.job_run import JobRun, failure_record

        failure = failure_record(exc)
        try:
            self._call("record_failure", *failure)
            return
        except Exception as log_exc:
            if self._channel.proc.poll() is None:  # the process is there but failed
                log.warning("could not record the failure in MLflow: %s", log_exc)
                return
        run = JobRun(self.settings, self.context)
        run.run_id = self.run_id
        run.record_failure(*failure)


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
    """The run the command's calls act on."""

    def __init__(self, answers: IO[bytes]) -> None:
        self._answers = answers
        self._send_lock = threading.Lock()
        self.run: Any = None
        self.open_run = False

    def send(self, message: Any) -> None:
        with self._send_lock:
            _send(self._answers, message)

    def state(self) -> dict[str, Any]:
        if self.run is None:
            return {}
        return {"run_id": self.run.run_id, "tracking_uri": self.run.tracking_uri,
                "model_uri": self.run.model_uri}

    def handle(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "open_store":
            from dfmx.tracking.store import open_store

            open_store(*args)
            return None
        if method == "open":
            from dfmx.tracking.job_run import JobRun

            self.run, self.open_run = JobRun(*args), False
            return None
        if self.run is None or method not in ("find_finished", "start", "log_result",
                                              "record_failure"):
            raise RuntimeError(f"the tracking process cannot {method!r} now")
        value = getattr(self.run, method)(*args)
        if method == "start":
            self.open_run = True
        elif method != "find_finished":
            self.open_run = False
        return value

    def end_orphaned_run(self) -> None:
        if self.run is not None and self.open_run:
            self.run.record_failure(f"RuntimeError: {ORPHANED}", ORPHANED, False)


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
    import mlflow  # noqa: F401 - the reason this process exists: beside the command's start

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
    server.end_orphaned_run()


def _prepare_logging() -> None:
    """Load now what logging the results will need: the pyfunc model code, and MLflow's
    map of installed distributions, which it builds (reading every distribution's file
    list, about a second) to check the model's requirements. Best effort: a failure
    here only leaves that work for later."""
    with contextlib.suppress(Exception):
        import dfmx.tracking.pyfunc  # noqa: F401
    with contextlib.suppress(Exception):  # MLflow's cache of the map: not public API
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()


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
