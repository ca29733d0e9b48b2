"""``python -m dfmx.tracking.best_model`` on a real SQLite store holding sweep-like runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
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


def test_newest_sweep_best_model(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("dfmx")
    first = _sweep(client, exp, "models:/m-first")
    _sweep(client, exp, "models:/m-second")
    assert best_model_uri(uri) == "models:/m-second"
    assert best_model_uri(uri, parent_run_id=first) == "models:/m-first"
    proc = subprocess.run([sys.executable, "-m", "dfmx.tracking.best_model",
                           "--tracking-uri", uri], capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "models:/m-second"), proc.stderr


def test_no_best_model_is_one_line(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    with pytest.raises(NoBestModel, match="no experiment 'dfmx'"):
        best_model_uri(uri)
    exp = client.create_experiment("dfmx")
    with pytest.raises(NoBestModel, match="no sweep"):
        best_model_uri(uri)
    _sweep(client, exp, None)
    with pytest.raises(NoBestModel, match="logged no model"):
        best_model_uri(uri)
    proc = subprocess.run([sys.executable, "-m", "dfmx.tracking.best_model",
                           "--tracking-uri", uri, "--parent", "nope"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"dfmx: no run 'nope' in {uri}"
