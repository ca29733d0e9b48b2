"""``python -m dfmx.tracking.best_model`` on a real SQLite store holding sweep-like runs
(a real sweep's store: ``tests/tracking/test_sweep_joblib.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import CliResult, command_env, run_cli
from mlflow.tracking import MlflowClient

from dfmx.tracking.best_model import NoBestModel, best_model_uri


def _sweep(client: MlflowClient, experiment_id: str, model_uri: str | None) -> str:
    parent = client.create_run(experiment_id, tags={"dfmx.sweep": "parent"}).info.run_id
    child_tags = {"mlflow.parentRunId": parent}
    if model_uri:
        child_tags["dfmx.model_uri"] = model_uri
    child = client.create_run(experiment_id, tags=child_tags).info.run_id
    client.set_tag(parent, "dfmx.best_run_id", child)
    return parent


def _best_model_cli(cwd: Path, *args: str) -> CliResult:
    """``python -m dfmx.tracking.best_model ARGS`` in ``cwd``."""
    return run_cli(args, cwd, command_env(cwd / "cache"), module="dfmx.tracking.best_model",
                   timeout=120)


def test_newest_sweep_best_model(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("dfmx")
    first = _sweep(client, exp, "models:/m-first")
    _sweep(client, exp, "models:/m-second")
    assert best_model_uri(uri) == "models:/m-second"
    assert best_model_uri(uri, parent_run_id=first) == "models:/m-first"
    result = _best_model_cli(tmp_path, "--tracking-uri", uri)
    assert (result.returncode, result.stdout.strip()) == (0, "models:/m-second"), result


def test_no_best_model_is_one_line(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(NoBestModel, match=f"no MLflow store at {tmp_path / 'mlflow.db'}$"):
        best_model_uri(uri)
    assert not (tmp_path / "mlflow.db").exists()  # asking created no store
    client = MlflowClient(uri)
    with pytest.raises(NoBestModel, match="no experiment 'dfmx'"):
        best_model_uri(uri)
    exp = client.create_experiment("dfmx")
    with pytest.raises(NoBestModel, match="no sweep"):
        best_model_uri(uri)
    _sweep(client, exp, None)
    with pytest.raises(NoBestModel, match="logged no model"):
        best_model_uri(uri)
    result = _best_model_cli(tmp_path, "--tracking-uri", uri, "--parent", "nope")
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines()[-1] == f"dfmx: no run 'nope' in {uri}", result
