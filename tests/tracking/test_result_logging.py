"""What a job's run holds when its results cannot all be logged, and what logging its model
prints (a real SQLite store)."""

from __future__ import annotations

import getpass
import logging
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dfmx.tracking.job_context import JobContext
from dfmx.tracking.job_run import JobRun, LoggedResult
from dfmx.tracking.settings import TrackingSettings

#: MLflow keeps a new experiment's artifacts in ./mlruns of the process that makes it.
pytestmark = pytest.mark.usefixtures("in_tmp_path")


def test_metrics_are_logged_when_the_run_s_files_cannot_be(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = JobRun(TrackingSettings(tracking_uri=uri),
                 JobContext(multirun=False, output_dir=tmp_path / "job", cwd=tmp_path))
    run.start({"scorer": {"name": "fre"}})
    model = tmp_path / "job" / "model"
    model.mkdir(parents=True)
    (model / "model.json").write_text("{}")
    (model / "model.safetensors").symlink_to(tmp_path / "gone")  # cannot be copied
    result = LoggedResult({"image_AUROC": 0.75, "time_total": 1.5}, {"model": model})
    with pytest.raises(OSError):
        run.log_result(result, "scorer:\n  name: fre\n")
    run.log_failure(RuntimeError("could not log"))
    logged = MlflowClient(uri).get_run(run.run_id)
    assert logged.data.metrics == {"image_AUROC": 0.75, "time_total": 1.5}
    assert logged.data.tags["mlflow.user"] == getpass.getuser()  # MLflow's "User" column
    assert logged.info.status == "FAILED"


def _log_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, str, str]:
    """A model folder logged as the pyfunc model of a new run with one param: the client,
    the run id and the model URI."""
    from dfmx.tracking.pyfunc import log_pyfunc_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # log_pyfunc_model sets it
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("dfmx"))
    client.log_param(run.info.run_id, "scorer.name", "fre")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    model_uri, _ = log_pyfunc_model(model, run.info.run_id, uri)
    return client, run.info.run_id, model_uri


def test_logging_the_model_prints_no_notes_of_mlflow(tmp_path: Path, capfd: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's INFO lines about the model ("Validating input example against model
    signature") would follow the job's summary; its warnings would still show."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.INFO)  # as MLflow configures its loggers
    try:
        _, _, model_uri = _log_a_model(tmp_path, monkeypatch)
        assert logger.level == logging.INFO  # given back
    finally:
        logger.setLevel(level)
    printed = capfd.readouterr()
    assert "Validating input example" not in printed.out + printed.err, printed
    assert model_uri.startswith("models:/"), model_uri  # the model was logged


def test_the_logged_model_carries_the_run_s_params_and_dfmx_s_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the source file of the process that logged it (dfmx/tracking/run_process.py)."""
    from mlflow.entities import LoggedModelStatus

    import dfmx
    from dfmx.tracking.params import origin_tags

    client, run_id, model_uri = _log_a_model(tmp_path, monkeypatch)
    model = client.get_logged_model(model_uri.removeprefix("models:/"))
    assert model.source_run_id == run_id and model.status == LoggedModelStatus.READY, model
    assert model.params == {"scorer.name": "fre"}
    assert model.tags.get("dfmx.version") == dfmx.__version__, model.tags
    assert model.tags.get("mlflow.user") == getpass.getuser(), model.tags
    assert "mlflow.source.name" not in model.tags, model.tags
    assert {k: v for k, v in model.tags.items() if k.startswith("mlflow.source.git")} == {
        k: v for k, v in origin_tags().items() if k.startswith("mlflow.source.git")}
