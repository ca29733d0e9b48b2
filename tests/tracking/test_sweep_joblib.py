"""The done-when test: an 8-job joblib sweep (4 in parallel) on the demo data into the
default local SQLite store; one parent with 8 children, the sweep table, the pyfunc model
and ``python -m dfmx.tracking.best_model`` naming the best job's model."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from cli_runner import FAST, run_cli
from mlflow.tracking import MlflowClient
from mlflow_server import child_runs, parent_runs

SWEEP = ["scorer=fre,nll", "pooling.kernel_size=2,4", "pca_level=0.9,0.97"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> dict:
    cwd = tmp_path_factory.mktemp("joblib-sweep")
    proc = run_cli(["-m", *SWEEP, *FAST, "data=demo", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=4", f"hydra.sweep.dir={cwd / 'multirun'}"],
                    cwd=cwd, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc
    assert (cwd / "mlflow.db").is_file(), "the default store is sqlite:///mlflow.db in the cwd"
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    return {"cwd": cwd, "client": client, "proc": proc}


def test_one_parent_with_eight_children(sweep: dict) -> None:
    client = sweep["client"]
    parents = parent_runs(client)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = child_runs(client, parent.info.run_id)
    assert len(children) == 8
    combos = set()
    for run in children:
        assert run.info.status == "FINISHED"
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        for key in ("image_AUROC", "time_fit", "time_score_test", "images_per_s",
                    "n_components", "feature_dim"):
            assert key in m, key
        assert p["backbone.arch"] == "efficientnet_lite0"
        assert p["layer.names"] in ("None", "null") or p["layer.names"].startswith("[")
        assert t["choice.scorer"] == p["scorer.name"]
        assert t["choice.hydra/launcher"] == "joblib"
        assert t["dfmx.version"]
        combos.add((p["scorer.name"], p["pooling.kernel_size"], p["pca_level"]))
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "metrics.json", "predictions.csv", "roc.png",
                "score_histogram.png", "model"} <= names
        assert "dfmx.model_uri" in t
    assert len(combos) == 8


def test_params_are_stable_across_jobs(sweep: dict) -> None:
    """Only the swept keys differ between jobs: no per-run paths or timestamps."""
    client = sweep["client"]
    children = child_runs(client, parent_runs(client)[0].info.run_id)
    params = [r.data.params for r in children]
    differing = {k for k in params[0] if len({p.get(k) for p in params}) > 1}
    assert differing == {"scorer.name", "pooling.kernel_size", "pca_level"}


def test_parent_sweep_table_and_best(sweep: dict, tmp_path: Path) -> None:
    client = sweep["client"]
    parent = parent_runs(client)[0]
    children = {r.info.run_id: r for r in child_runs(client, parent.info.run_id)}
    local = client.download_artifacts(parent.info.run_id, "sweep_table.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(local).read_text())))
    assert len(rows) == 8
    assert {"scorer", "pooling.kernel_size", "pca_level", "image_AUROC"} <= set(rows[0])
    assert {r["run_id"] for r in rows} == set(children)
    for row in rows:
        child = children[row["run_id"]]
        assert float(row["image_AUROC"]) == pytest.approx(child.data.metrics["image_AUROC"])
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_table.csv", "sweep_summary.png"} <= names
    assert (sweep["cwd"] / "multirun" / "sweep_summary.png").is_file()
    # The label-free metric (the default select_metric) picks the best job; the closing
    # line, the parent's tags and the table's marker column all name it.
    metric = "val_synthetic_AUROC"
    assert parent.data.tags["dfmx.best_metric"] == metric
    best_num = parent.data.tags["dfmx.best_job"]
    assert f"dfmx sweep: 8 jobs finished; best by {metric}: #{best_num} " in sweep["proc"].stdout
    best_id = parent.data.tags["dfmx.best_run_id"]
    values = {run_id: r.data.metrics[metric] for run_id, r in children.items()}
    assert len(set(values.values())) > 1, "the jobs differ on the selection metric"
    top = max(values.values())
    first_top = min(int(children[i].data.tags["dfmx.job_num"]) for i, v in values.items()
                    if v == top)  # ties go to the lowest job number
    assert values[best_id] == top and int(best_num) == first_top
    assert parent.data.metrics[f"best_{metric}"] == pytest.approx(top)
    assert [r["run_id"] for r in rows if r[f"best_by_{metric}"] == "1"] == [best_id]
    assert math.isfinite(parent.data.metrics["best_n_components"])


def test_best_model_names_the_best_jobs_model(sweep: dict, cli_env: dict[str, str]) -> None:
    """In the sweep's folder, with no store named (the default ``sqlite:///mlflow.db``),
    ``python -m dfmx.tracking.best_model`` prints the model URI of the run the parent
    tagged ``dfmx.best_run_id``."""
    client = sweep["client"]
    parent = parent_runs(client)[0]
    best = client.get_run(parent.data.tags["dfmx.best_run_id"])
    result = run_cli([], sweep["cwd"], cli_env, module="dfmx.tracking.best_model", timeout=120)
    assert result.returncode == 0, result
    assert result.stdout.strip() == best.data.tags["dfmx.model_uri"], result
    assert result.stdout.strip().startswith("models:/m-"), result


def test_pyfunc_predicts_the_run_scores(sweep: dict) -> None:
    client = sweep["client"]
    mlflow.set_tracking_uri(f"sqlite:///{sweep['cwd'] / 'mlflow.db'}")
    run = child_runs(client, parent_runs(client)[0].info.run_id)[0]
    model = mlflow.pyfunc.load_model(run.data.tags["dfmx.model_uri"])
    table = pd.read_csv(Path(run.data.tags["dfmx.output_dir"]) / "predictions.csv")
    picked = table.iloc[[0, len(table) - 1]]
    paths = list(picked["path"])
    out = model.predict(pd.DataFrame({"path": paths}))
    assert list(out.columns) == ["path", "score", "threshold", "anomalous"]
    assert list(out["path"]) == paths
    assert out["score"].to_numpy() == pytest.approx(picked["score"].to_numpy(), rel=1e-5)
    assert list(out["anomalous"]) == [bool(p) for p in picked["prediction"]]


def test_jobs_print_no_mlflow_model_logging_noise(sweep: dict) -> None:
    """The pyfunc declares its signature (no warning about inferring one) and MLflow's
    progress bar for copying the local model folder is kept out of every job's output."""
    proc = sweep["proc"]
    output = proc.stdout + proc.stderr
    assert "Failed to infer model signature" not in output
    assert "Downloading artifacts" not in output
