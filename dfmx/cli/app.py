"""The Hydra application: ``python -m dfmx`` / ``dfmx``.

Plugins become config groups at start-up (see :mod:`dfmx.cli.config_store`); each job
hands the resolved config, as a plain dict, to :func:`dfmx.experiment.run.run_experiment`,
and (unless ``tracking=none``) records itself as an MLflow run (:mod:`dfmx.tracking`).

In a ``-m`` sweep a failing job does not stop the others: it is recorded (a ``FAILED``
MLflow run and a job record in the sweep folder) and the sweep callback exits non-zero at
the end with a one-line summary.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dfmx.cli.config_store import register_plugins
from dfmx.cli.overrides import exit_on_bad_overrides
from dfmx.errors import USER_ERRORS, describe
from dfmx.tracking import sweep_state
from dfmx.tracking.job_context import JobContext
from dfmx.tracking.redact import install_log_redaction, redact_config
from dfmx.tracking.settings import TrackingSettings

log = logging.getLogger("dfmx")


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
    """``resume=true`` found this job's config finished before: record it, do nothing."""
    metrics = dict(prior.data.metrics)
    log.info("skipped: this configuration already finished as MLflow run %s (resume=true)",
             prior.info.run_id)
    _record(context, "FINISHED", prior.info.run_id, metrics=metrics)
    return _selected(metrics, plain)


def _failed(context: JobContext, plain: dict[str, Any], exc: Exception, run_id: str | None,
            logged: bool = False) -> None:
    """A job failed: in a sweep, record it and let the others go on (the callback reports
    at the end); alone, one clear line for the user's own errors and exit status 1."""
    one_line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    show_traceback = bool(plain.get("debug")) or not isinstance(exc, USER_ERRORS)
    if context.multirun:
        _record(context, "FAILED", run_id, error=one_line)
        if not logged and show_traceback:
            log.exception("job %s failed", context.job_num)
        elif not logged:
            log.error("job %s failed: %s", context.job_num, describe(exc))
        return None
    if not logged and show_traceback:
        raise exc
    if not logged:
        log.error(describe(exc))
    sys.exit(1)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _run(cfg: DictConfig) -> float | None:
    from dfmx.experiment.run import run_experiment

    install_log_redaction()  # again: a launcher's worker process did not run main()
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    context = JobContext.from_hydra(HydraConfig.get())
    settings = TrackingSettings.from_config(plain.get("tracking"))
    tracker = None
    if settings.enabled:
        from dfmx.tracking.job_run import JobRun

        tracker = JobRun(settings, context)
    try:
        if tracker is not None and plain.get("resume"):
            prior = tracker.find_finished(plain)
            if prior is not None:
                return _skip_finished(context, prior, plain)
        if tracker is not None:
            tracker.start(plain)  # fails fast when the tracking server is unreachable
        result = run_experiment(plain, context.output_dir)
    except BaseException as exc:
        if tracker is not None:
            tracker.log_failure(exc)
        if not isinstance(exc, Exception):  # interrupts and exits go through
            raise
        return _failed(context, plain, exc, tracker.run_id if tracker else None)
    run_id = tracker.run_id if tracker else None
    if tracker is not None:
        try:
            tracker.log_result(result, OmegaConf.to_yaml(redact_config(plain)))
        except Exception as exc:  # the server went away: the results are on disk already
            log.error("could not record the run in MLflow (%s: %s); its results are saved in "
                      "%s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                      result.output_dir)
            tracker.log_failure(exc)
            return _failed(context, plain, exc, run_id, logged=True)
    _record(context, "FINISHED", run_id, metrics=result.metrics)
    print(_summary(result, plain), flush=True)
    return _selected(result.metrics, plain)


def main() -> None:
    """Console entry point: register plugin configs, then run the Hydra app."""
    install_log_redaction()  # secrets and non-UTF-8 file names, in every log line
    register_plugins()
    exit_on_bad_overrides()
    # Warnings (e.g. "image AUROC is undefined") become log lines in the run's log.
    logging.captureWarnings(True)
    _run()


if __name__ == "__main__":
    main()
