"""The Hydra callback that owns a sweep's MLflow parent run.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``. ``on_multirun_start`` (in the
launching process, before any job) initialises the store, creates the parent run
(:mod:`dfmx.tracking.parent_run`, by the tracking process when it runs) and writes
it to ``<sweep dir>/.dfmx/parent.json``, where every job, in whatever process or machine,
finds it. ``on_multirun_end`` collects the job records into ``sweep_table.csv`` and its
picture ``sweep_summary.png`` (in the sweep folder and as parent artifacts), logs the best
job's metrics as ``best_*`` parent metrics (the best job by the config's ``select_metric``,
named in the parent's ``dfmx.best_metric`` tag), and exits non-zero with a one-line summary
when any job failed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dfmx import interrupts
from dfmx.errors import USER_ERRORS, describe, traceback_text
from dfmx.tracking import run_process, sweep_state
from dfmx.tracking.job_context import absolute_dir
from dfmx.tracking.params import origin_tags
from dfmx.tracking.redact import redact_hydra_dir, redact_override, redact_text
from dfmx.tracking.settings import TrackingSettings
from dfmx.tracking.sweep_table import (
    BEST_METRIC,
    failure_summary,
    result_line,
    write_sweep_plot,
    write_sweep_table,
)

log = logging.getLogger(__name__)

SWEEP_TABLE = "sweep_table.csv"
SWEEP_PLOT = "sweep_summary.png"


def _sweep_dir(config: DictConfig) -> Path:
    cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
    return absolute_dir(str(config.hydra.sweep.dir), cwd)


def select_metric(config: DictConfig) -> str:
    """The metric that picks the sweep's best job: the config's ``select_metric``."""
    return str(OmegaConf.select(config, "select_metric", default=None) or BEST_METRIC)


def _settings(config: DictConfig) -> TrackingSettings:
    node = config.get("tracking")
    plain = OmegaConf.to_container(node, resolve=True) if node is not None else None
    return TrackingSettings.from_config(plain)  # type: ignore[arg-type]


def _claim(config: DictConfig, folder: Path, option: str) -> None:
    """Hold ``folder`` for this process, or stop with one line (a callback's exception
    would only be a warning to Hydra)."""
    from dfmx.run_folder import claim

    try:
        claim(folder, option)
    except USER_ERRORS as exc:
        if OmegaConf.select(config, "debug", default=False):
            raise
        print(f"dfmx: {describe(exc)}", file=sys.stderr, flush=True)
        sys.exit(1)


def _end_interrupted_sweep(sweep_dir: Path) -> str:
    """After Ctrl-C or ``SIGTERM``: the sweep table of the jobs that finished, every child
    run still ``RUNNING`` and the parent run marked ``KILLED``; returns words for the
    final line."""
    run_process.settle()
    records = sweep_state.read_job_records(sweep_dir)
    note = f"{len(records)} finished job(s) in {sweep_dir}"
    if records:
        write_sweep_table(sweep_dir / SWEEP_TABLE, records)
    info = sweep_state.read_parent(sweep_dir)
    if info is None or not (info.run_id and info.tracking_uri):
        return note
    n_children = run_process.parent_runs().end(info, len(records), "KILLED")
    return f"{note}; MLflow parent run {info.run_id} and {n_children} running job(s) " \
           "marked KILLED"


class TrackingProcessCallback(Callback):
    """First in ``hydra.callbacks``: once the config of a run or a sweep is composed, the
    tracking process (:mod:`dfmx.tracking.run_process`) opens its store while the
    callbacks after this one check the options, which imports torch."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            settings = _settings(config)
        except Exception:  # a value the checks refuse next
            return
        run_process.open_store_early(
            settings, OmegaConf.select(config, "hydra.runtime.cwd", default=None))

    on_multirun_start = on_run_start


class SweepCallback(Callback):
    """Parent MLflow run, sweep table and failure report for ``-m`` sweeps.

    Args:
        exit_on_failure: exit with status 1 at the end of a sweep in which a job failed.
    """

    def __init__(self, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hide secrets in the files Hydra has written: the job's ``.hydra/*.yaml`` and, in
        a sweep, the sweep folder's ``multirun.yaml`` (written after
        :meth:`on_multirun_start`, before the first job). A Ctrl-C that library code
        swallowed during the previous job stops the sweep here."""
        interrupts.check()
        subdir = OmegaConf.select(config, "hydra.output_subdir", default=None)
        out = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
        if subdir is not None and out is not None:
            redact_hydra_dir(Path(out) / str(subdir))
        if OmegaConf.select(config, "hydra.mode", default=None) in (RunMode.MULTIRUN,
                                                                    "MULTIRUN"):
            redact_hydra_dir(_sweep_dir(config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Hide secrets in the overrides of a failed job: Hydra writes them to stderr as
        they are (``Error executing job with overrides: [...]``), past the log redaction."""
        if job_return.status == JobStatus.FAILED and job_return.overrides:
            job_return.overrides = [redact_override(o) for o in job_return.overrides]

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Claim the run folder before Hydra writes into it (:mod:`dfmx.run_folder`)."""
        cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
        _claim(config, absolute_dir(str(config.hydra.run.dir), cwd), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the parent run (when tracking is on) and record it in the sweep folder."""
        sweep_dir = _sweep_dir(config)
        _claim(config, sweep_dir, "hydra.sweep.dir")
        sweep_state.reset(sweep_dir)
        settings = _settings(config)
        info = sweep_state.ParentInfo(run_id=None, tracking_uri=None, experiment_id=None)
        if settings.enabled:
            cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
            uri = settings.resolved_uri(cwd)
            overrides = " ".join(redact_override(o) for o in OmegaConf.select(
                config, "hydra.overrides.task", default=[]))
            tags = {"dfmx.sweep": "parent", "dfmx.sweep_overrides": overrides[:5000],
                    "dfmx.sweep_dir": str(sweep_dir), **origin_tags()}
            try:
                info = run_process.parent_runs().create(
                    uri, settings.experiment_name, tags, f"sweep {sweep_dir.name}")
            except USER_ERRORS as exc:
                # Hydra turns a callback's exception into a warning and launches every job,
                # each to fail the same way: stop the sweep here instead.
                if OmegaConf.select(config, "debug", default=False):
                    trace = traceback_text(exc).rstrip()
                    log.error("dfmx sweep: the MLflow store cannot be used\n%s", trace)
                else:
                    print(f"dfmx sweep: {redact_text(describe(exc))}", file=sys.stderr,
                          flush=True)
                sys.exit(1)
            log.info("MLflow parent run %s in %s", info.run_id, uri)
        interrupts.on_interrupt(lambda: _end_interrupted_sweep(sweep_dir))
        sweep_state.write_parent(sweep_dir, info)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Sweep table and picture, a line naming the best job, parent status; exit 1
        when a job failed."""
        sweep_dir = _sweep_dir(config)
        metric = select_metric(config)
        run_process.settle()  # the last jobs' logging, whose failures fail those jobs
        records = sweep_state.read_job_records(sweep_dir)
        table = write_sweep_table(sweep_dir / SWEEP_TABLE, records, metric)
        files = [table]
        try:
            files.append(write_sweep_plot(sweep_dir / SWEEP_PLOT, records, metric))
        except Exception as exc:  # a picture is not worth failing a finished sweep over
            log.warning("could not draw %s: %s: %s", SWEEP_PLOT, type(exc).__name__, exc)
        print(result_line(records, sweep_dir, metric), flush=True)
        summary = failure_summary(records)
        info = sweep_state.read_parent(sweep_dir)
        if info is not None and info.run_id and info.tracking_uri:
            try:
                run_process.parent_runs().finish(info, files, records, summary is not None,
                                                 metric)
            except Exception as exc:  # the jobs' results are on disk and in the table
                line = redact_text(describe(exc).splitlines()[0])
                log.error("could not record the sweep in its MLflow parent run %s (%s)",
                          info.run_id, line)
                with contextlib.suppress(Exception):
                    run_process.parent_runs().end(info, len(records), "FAILED", line)
                summary = summary or f"dfmx sweep: could not record the sweep in MLflow " \
                                     f"({line}); its table is {table}"
        if summary and self.exit_on_failure:
            print(summary, file=sys.stderr, flush=True)
            sys.exit(1)
