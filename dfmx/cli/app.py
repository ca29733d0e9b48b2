"""The Hydra application: ``python -m dfmx`` / ``dfmx``.

Plugins become config groups at start-up (see :mod:`dfmx.cli.config_store`); each job
hands the resolved config, as a plain dict, to :func:`dfmx.experiment.run.run_experiment`,
and (unless ``tracking=none``) records itself as an MLflow run (:mod:`dfmx.tracking`).

In a ``-m`` sweep a failing job does not stop the others: it is recorded (a ``FAILED``
MLflow run and a job record in the sweep folder) and the sweep callback exits non-zero at
the end with a one-line summary.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dfmx import interrupts, startup_gc
from dfmx.allocator import keep_freed_memory
from dfmx.cli.compose import compose_sweep_jobs_once, share_config_store
from dfmx.cli.config_store import register_plugins, register_resolvers
from dfmx.cli.overrides import exit_on_bad_overrides
from dfmx.cli.timings import job_timer, log_job_timings
from dfmx.errors import USER_ERRORS, ConfigError, describe, traceback_text
from dfmx.tracking import run_process, sweep_state
from dfmx.tracking.job_context import JobContext
from dfmx.tracking.redact import (
    install_log_redaction,
    redact_config,
    redact_override,
    redact_text,
)
from dfmx.tracking.settings import TrackingSettings

log = logging.getLogger("dfmx")
register_resolvers()  # here, so that a launcher's worker process has it too

#: The fitted PCAs a sweep's process (each worker process of a parallel launcher) keeps
#: for its later jobs (``dfmx.engine.fit_sharing``): a Lite0 job's two PCAs at
#: ``pooling.kernel_size=1`` and 256 px are about 100 MB.
SWEEP_SHARED_FIT_BYTES = 512 << 20
#: The feature cache entries a sweep's process keeps in memory for its later jobs
#: (``dfmx.features.cache.store.keep_read_entries``): a Lite0 job's at 256 px are about
#: 150 MB in all, a Wide-ResNet-50 job's training entry about 650 MB.
SWEEP_KEPT_ENTRY_BYTES = 1 << 30


def _summary(result: Any, cfg: dict[str, Any]) -> str:
    from dfmx.cli.summary_table import summary_table

    extra = {
        "backbone": f"{cfg['backbone']['arch']} ({result.model.feature_extractor.weights_source})",
        "layers": ",".join(result.model.layers),
        "pooling": f"{cfg['pooling']['name']} k={cfg['pooling'].get('kernel_size', 1)}",
        "scorer": cfg["scorer"]["name"],
        "data": (f"{cfg['data']['name']}: {result.n_train} train / "
                 f"{getattr(result, 'n_val', 0)} val / {result.n_test} test"),
        "output": str(result.output_dir),
        **getattr(result, "notes", {}),
    }
    return summary_table(result.metrics, extra)


def _record(context: JobContext, status: str, run_id: str | None,
            metrics: dict[str, float] | None = None, error: str | None = None) -> None:
    """Leave the job's outcome in the sweep folder for the sweep callback."""
    if not (context.multirun and context.sweep_dir is not None):
        return
    sweep_state.write_job_record(context.sweep_dir, sweep_state.JobRecord(
        num=context.job_num if context.job_num is not None else -1,
        overrides=context.overrides, status=status, run_id=run_id,
        metrics={k: float(v) for k, v in (metrics or {}).items() if v is not None},
        error=error, output_dir=str(context.output_dir),
    ))


def _selected(metrics: dict[str, float], plain: dict[str, Any]) -> float | None:
    """The value of the config's ``select_metric``: what Hydra's sweepers maximise."""
    from dfmx.experiment.job_config import DEFAULT_SELECT_METRIC

    value = metrics.get(str(plain.get("select_metric") or DEFAULT_SELECT_METRIC))
    return float(value) if value is not None else None


def _skip_finished(context: JobContext, prior: Any, plain: dict[str, Any]) -> float | None:
    """``resume=true`` found this job's config finished before (a
    :class:`~dfmx.tracking.job_run.FinishedRun`): record it, do nothing."""
    log.info("skipped: this configuration already finished as MLflow run %s (resume=true)",
             prior.run_id)
    _record(context, "FINISHED", prior.run_id, metrics=prior.metrics)
    return _selected(prior.metrics, plain)


def _unresolved(exc: OmegaConfBaseException) -> ConfigError:
    """The user's error of a config value that cannot be resolved, in one line."""
    key = getattr(exc, "full_key", None)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"cannot resolve {key or 'the config'}: {message}")


def _failed(context: JobContext, plain: dict[str, Any], exc: Exception, run_id: str | None,
            logged: bool = False) -> None:
    """A job failed: in a sweep, record it and let the others go on (the callback reports
    at the end); alone, one clear line for the user's own errors and exit status 1, and
    any other error raised for :func:`_run` to report (its traceback, secrets hidden)."""
    from dfmx.system_errors import as_user_error

    exc = as_user_error(exc, f"the run folder {context.output_dir}",
                        "write elsewhere with hydra.run.dir=<a folder with room>",
                        "use a smaller image_size or batch_size")
    one_line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    show_traceback = bool(plain.get("debug")) or not isinstance(exc, USER_ERRORS)
    if context.multirun:
        _record(context, "FAILED", run_id, error=one_line)
        if not logged and show_traceback:  # in the message: the log redaction covers it
            log.error("job %s failed\n%s", context.job_num, traceback_text(exc).rstrip())
        elif not logged:
            log.error("job %s failed: %s", context.job_num, describe(exc))
        return None
    if not logged and show_traceback:
        raise exc
    if not logged:
        log.error(describe(exc))
    sys.exit(1)


def _not_logged(context: JobContext, plain: dict[str, Any], tracker: Any, exc: Exception,
                output_dir: Path) -> None:
    """The job's results could not go to MLflow: say where they are, end its run
    ``FAILED`` (where that is not done yet) and fail the job."""
    log.error("could not record the run in MLflow (%s: %s); its results are saved in %s",
              type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", output_dir)
    tracker.log_failure(exc)
    return _failed(context, plain, exc, tracker.run_id, logged=True)


def _start_tracking(tracker: Any, plain: dict[str, Any], started: Future) -> None:
    """Open the store and create the run (or find the finished one, ``resume=true``) in a
    thread, beside the import of the experiment code in the caller's thread (a
    :class:`~dfmx.tracking.run_process.RunClient` has it done by the tracking process; a
    job in a launcher's worker process imports MLflow here).

    ``started`` gets the finished prior run or ``None``. The caller holds it before the
    thread exists, so an interrupt at any point leaves it either cancelled (the thread
    then creates no run) or running (the caller waits for the run, then ends it).
    """

    def start() -> None:
        if not started.set_running_or_notify_cancel():
            return
        try:
            with job_timer("tracking_start"):
                prior = tracker.find_finished(plain) if plain.get("resume") else None
                if prior is None:
                    tracker.start(plain)  # fails fast when the tracking server is unreachable
        except BaseException as exc:
            started.set_exception(exc)
        else:
            started.set_result(prior)

    threading.Thread(target=start, name="dfmx-tracking").start()


def _note_interrupt(context: JobContext, tracker: Any) -> None:
    """Say on the final line of an interrupted job where its files are, and its run."""
    run = f"MLflow run {tracker.run_id} marked KILLED; " if tracker and tracker.run_id else ""
    interrupts.on_interrupt(lambda: f"{run}files written so far are in {context.output_dir}")


def _exit_unexpected(exc: BaseException, overrides: list[str]) -> NoReturn:
    """A single run ended by an error that is not the user's (a bug): the report Hydra
    would print (the overrides, then the whole traceback), with secrets hidden in both,
    and exit status 1. Hydra's own report writes both to stderr as they are, past the log
    redaction."""
    from dfmx.path_text import text_safe

    shown = [redact_override(item) for item in overrides]
    sys.stderr.write(f"Error executing job with overrides: {shown}\n"
                     + text_safe(redact_text(traceback_text(exc))))
    sys.stderr.flush()
    sys.exit(1)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _run(cfg: DictConfig) -> float | None:
    try:
        return _job(cfg)
    except Exception as exc:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweep's launcher reports it; the
            raise  # sweep callback hides the secrets in the overrides it prints
        _exit_unexpected(exc, list(hydra_cfg.overrides.task))


def _job(cfg: DictConfig) -> float | None:
    """One job: the task of :func:`_run`."""
    install_log_redaction()  # again: a launcher's worker process did not run main()
    interrupts.install()
    keep_freed_memory()  # this process's own allocator: the job's tensors reuse memory
    startup_gc.resume()  # where the option checks did not (a config without them)
    context = JobContext.from_hydra(HydraConfig.get())
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:  # pca_level='${oops}', a value left at ???
        debug = OmegaConf.select(cfg, "debug", default=False, throw_on_resolution_failure=False)
        return _failed(context, {"debug": debug is True}, _unresolved(exc), None)
    settings = TrackingSettings.from_config(plain.get("tracking"))
    tracker = run_process.client(settings, context) if settings.enabled else None
    if tracker is None:
        if not context.multirun:  # a sweep's process may hold its parent run
            run_process.stop()  # not given this job's run: it holds none
        if settings.enabled:
            from dfmx.tracking.job_run import JobRun

            tracker = JobRun(settings, context)
    # A sweep's tracking process logs a job while the next one works: that job's run is
    # created meanwhile too, and waited for only before its own logging (unless resume).
    deferred = context.multirun and isinstance(tracker, run_process.RunClient)
    wait_before_work = not deferred or bool(plain.get("resume"))
    started: Future | None = None
    try:
        if tracker is not None:
            started = Future()
            _start_tracking(tracker, plain, started)
        with job_timer("import_experiment"):
            from dfmx.experiment.run import run_experiment
        if context.multirun:  # later jobs read the same features, fit the same PCAs
            from dfmx.engine.fit_sharing import share_fits
            from dfmx.features.cache import keep_read_entries

            share_fits(SWEEP_SHARED_FIT_BYTES)
            keep_read_entries(SWEEP_KEPT_ENTRY_BYTES)
        if started is not None and wait_before_work:
            with job_timer("tracking_wait"):
                prior = started.result()  # before any data is read: a dead server stops here
            if prior is not None:
                return _skip_finished(context, prior, plain)
        with job_timer("run_experiment"):
            result = run_experiment(plain, context.output_dir)
        if started is not None:
            started.result()
        interrupts.check()  # a Ctrl-C that library code swallowed ends the job KILLED
    except BaseException as caught:
        exc = interrupts.as_interrupt(caught)
        if started is not None and not started.cancel():
            wait([started])  # a run being created is marked failed, not left running
        if tracker is not None:
            tracker.log_failure(exc)
        if isinstance(exc, KeyboardInterrupt):
            _note_interrupt(context, tracker)
        if exc is not caught:
            raise exc from caught
        if not isinstance(exc, Exception):  # interrupts and exits go through
            raise
        return _failed(context, plain, exc, tracker.run_id if tracker else None)
    run_id = tracker.run_id if tracker else None
    # The summary first: the results are on disk; MLflow gets them next, and a job whose
    # logging fails (or is interrupted) still ends as a FAILED run with exit status 1.
    with job_timer("summary"):
        print(_summary(result, plain), flush=True)
    if tracker is not None:
        config_yaml = OmegaConf.to_yaml(redact_config(plain))
        try:
            with job_timer("tracking_log"):
                if deferred:
                    tracker.log_result_later(result, config_yaml, lambda exc: _not_logged(
                        context, plain, tracker, exc, result.output_dir))
                else:
                    tracker.log_result(result, config_yaml)
        except BaseException as caught:  # the server went away: the results are on disk
            exc = interrupts.as_interrupt(caught)
            if not isinstance(exc, Exception):  # an interrupt: the results are on disk
                tracker.log_failure(exc)
                if isinstance(exc, KeyboardInterrupt):
                    _note_interrupt(context, tracker)
                if exc is not caught:
                    raise exc from caught
                raise
            return _not_logged(context, plain, tracker, exc, result.output_dir)
    _record(context, "FINISHED", run_id, metrics=result.metrics)
    log_job_timings()
    return _selected(result.metrics, plain)


#: Options after which the command shows something and runs no job, or records no run.
_NO_RUNS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--version",
            "--shell-completion", "-sc", "tracking=none")


def _may_record_runs(args: list[str]) -> bool:
    """Whether the command line may record MLflow runs (a job's, or a sweep's), whose
    MLflow work then goes to :mod:`dfmx.tracking.run_process`."""
    return not any(a in _NO_RUNS or a.startswith(("--cfg=", "--info=")) for a in args)


def main() -> None:
    """Console entry point: register plugin configs, then run the Hydra app."""
    startup_gc.pause()  # until the options are checked: start-up is imports
    interrupts.install()  # Ctrl-C and SIGTERM end the MLflow runs and exit 130 / 143
    install_log_redaction()  # secrets and non-UTF-8 file names, in every log line
    try:  # an interrupt during start-up (plugin imports) is one line too
        with job_timer("startup"):
            # First: the tracking process imports MLflow while this one imports the
            # plugins (torch and timm, where their configs are not described yet).
            if _may_record_runs(sys.argv[1:]):
                run_process.prestart()
            share_config_store()
            compose_sweep_jobs_once()
            register_plugins()
            exit_on_bad_overrides()
        # Warnings (e.g. "image AUROC is undefined") become log lines in the run's log.
        logging.captureWarnings(True)
        _run()
    except KeyboardInterrupt as exc:
        notes = interrupts.run_cleanups()
        print(f"dfmx: stopped by {interrupts.signal_name(exc)}"
              + "".join(f"; {n}" for n in notes), file=sys.stderr, flush=True)
        interrupts.exit_now(interrupts.exit_code(exc))
    except SystemExit as exc:
        _exit(exc.code)
    _exit(0)


def _exit(code: object) -> NoReturn:
    """End the command as ``sys.exit(code)`` would (other threads joined, atexit handlers
    run, streams flushed) but without tearing the interpreter down: unloading torch, timm
    and MLflow module by module is about half a second of every command, for nothing.
    Under a profiler or a debugger, which have work to do after ``main`` returns, it is
    ``sys.exit(code)``."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)  # a profiler (python -m cProfile) or debugger writes after main
    # What the interpreter's own exit does first: the shutdown hooks of thread pools
    # (concurrent.futures, joblib's loky), then every other non-daemon thread joined.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    interrupts.exit_now(status)


if __name__ == "__main__":
    main()
