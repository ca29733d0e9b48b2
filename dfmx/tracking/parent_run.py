"""A sweep's MLflow parent run: created before its first job, finished after its last, or
ended when the sweep is interrupted or its command is killed.

:class:`~dfmx.tracking.callback.SweepCallback` decides when; these functions do the
MLflow calls, in the launching process or, when it runs, in its tracking process
(:func:`dfmx.tracking.run_process.parent_runs`).
"""

from __future__ import annotations

import time
from pathlib import Path

from dfmx.tracking.store import open_store, retry_locked
from dfmx.tracking.sweep_state import JobRecord, ParentInfo
from dfmx.tracking.sweep_table import BEST_METRIC, best_record


def create(uri: str, experiment_name: str, tags: dict[str, str],
           run_name: str) -> ParentInfo:
    """Open the store (creating the experiment when new) and create the parent run."""
    client, experiment_id = open_store(uri, experiment_name)
    run = retry_locked(client.create_run, experiment_id, tags=tags, run_name=run_name)
    return ParentInfo(run.info.run_id, uri, experiment_id)


def finish(info: ParentInfo, files: list[Path], records: list[JobRecord], failed: bool,
           metric: str = BEST_METRIC) -> None:
    """Log the sweep table and picture, the job counts, the best job's metrics and tags,
    and end the parent ``FAILED`` when a job failed, else ``FINISHED``."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=info.tracking_uri)
    run_id = info.run_id
    for path in files:
        retry_locked(client.log_artifact, run_id, str(path))
    n_failed = sum(r.status != "FINISHED" for r in records)
    retry_locked(client.set_tag, run_id, "dfmx.n_jobs", str(len(records)))
    retry_locked(client.set_tag, run_id, "dfmx.n_failed", str(n_failed))
    retry_locked(client.set_tag, run_id, "dfmx.best_metric", metric)
    best = best_record(records, metric)
    if best is not None:
        now = int(time.time() * 1000)
        metrics = [Metric(f"best_{k}", float(v), now, 0) for k, v in best.metrics.items()
                   if v is not None and not k.startswith("time_")]
        retry_locked(client.log_batch, run_id, metrics=metrics)
        label = " ".join(f"{k}={v}" for k, v in best.overrides.items())
        retry_locked(client.set_tag, run_id, "dfmx.best_run_id", best.run_id or "")
        retry_locked(client.set_tag, run_id, "dfmx.best_job", str(best.num))
        retry_locked(client.set_tag, run_id, "dfmx.best_overrides", label[:5000])
    retry_locked(client.set_terminated, run_id, "FAILED" if failed else "FINISHED")


def end(info: ParentInfo, n_jobs: int, status: str, error: str | None = None) -> int:
    """End the parent and every child run still ``RUNNING`` with ``status``
    (``KILLED``: the sweep was interrupted; ``FAILED`` with ``error``: its command
    ended first). Returns the number of children ended."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=info.tracking_uri)
    children = retry_locked(
        client.search_runs, [info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{info.run_id}' "
                      "and attributes.status = 'RUNNING'")
    for child in children:
        retry_locked(client.set_terminated, child.info.run_id, status)
    retry_locked(client.set_tag, info.run_id, "dfmx.n_jobs", str(n_jobs))
    if error is not None:
        retry_locked(client.set_tag, info.run_id, "error", error)
    retry_locked(client.set_terminated, info.run_id, status)
    return len(children)
