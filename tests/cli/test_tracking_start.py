"""A job's MLflow run is created in a thread beside its work (``dfmx.cli.app._start_tracking``):
an interrupt at any point leaves the run either never created or created and then ended,
never created after the job has given up on it. A real SQLite store each time."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dfmx.cli import app
from dfmx.tracking.job_context import JobContext
from dfmx.tracking.job_run import JobRun
from dfmx.tracking.settings import TrackingSettings

CONFIG = {"scorer": {"name": "fre"}, "pca_level": 0.97}


#: MLflow keeps a new experiment's artifacts in ./mlruns of the process that makes it.
pytestmark = pytest.mark.usefixtures("in_tmp_path")


def _tracker(tmp_path: Path) -> tuple[JobRun, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = JobContext(multirun=False, output_dir=tmp_path / "job", cwd=tmp_path)
    return JobRun(TrackingSettings(tracking_uri=uri), context), uri


def _join_tracking_threads() -> None:
    for thread in threading.enumerate():
        if thread.name == "dfmx-tracking":
            thread.join(timeout=120)
            assert not thread.is_alive()


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("dfmx")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_a_job_interrupted_before_its_tracking_thread_ran_creates_no_run(
        tmp_path: Path) -> None:
    tracker, uri = _tracker(tmp_path)
    started: Future = Future()
    assert started.cancel()  # what the job's interrupt handler does first
    app._start_tracking(tracker, CONFIG, started)
    _join_tracking_threads()
    assert tracker.run_id is None
    assert _runs(uri) == []


def test_a_run_being_created_is_waited_for_and_then_ended_killed(tmp_path: Path) -> None:
    tracker, uri = _tracker(tmp_path)
    started: Future = Future()
    app._start_tracking(tracker, CONFIG, started)
    assert started.result(timeout=120) is None  # no earlier run to resume
    assert not started.cancel()  # too late: the handler waits and ends the run instead
    tracker.log_failure(KeyboardInterrupt())
    (run,) = _runs(uri)
    assert run.info.run_id == tracker.run_id
    assert run.info.status == "KILLED"
    assert run.data.params["pca_level"] == "0.97"
