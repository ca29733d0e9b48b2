"""``hydra/sweeper=optuna`` through the CLI: a small study on the demo data into a real
SQLite MLflow store and a SQLite Optuna storage; resuming it; failed trials; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_runner import FAST, CliResult, assert_clean_failure, run_cli
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow_server import child_runs, parent_runs

optuna = pytest.importorskip("optuna")

SPACE = ["layer.names=choice([blocks.2],[blocks.4])", "pooling.kernel_size=choice(2,4)",
         "pca_level=interval(0.8,0.97)", "scorer=choice(fre,nll)"]


def study_command(cwd: Path, name: str, n_trials: int) -> list[str]:
    """A study over :data:`SPACE` in batches of 2, its storage ``optuna.db`` in ``cwd``."""
    return ["-m", "hydra/sweeper=optuna", f"hydra.sweeper.n_trials={n_trials}",
            "hydra.sweeper.n_jobs=2", "hydra.sweeper.storage=sqlite:///optuna.db",
            "hydra.sweeper.study_name=demo", *SPACE, *FAST, "data=demo",
            "tracking.log_model=false", f"hydra.sweep.dir={cwd / name}"]


def load(cwd: Path, name: str = "demo") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'optuna.db'}")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> dict:
    """Three trials, then the same command with ``n_trials=4`` (it resumes the study)."""
    cwd = tmp_path_factory.mktemp("optuna-study")
    first = run_cli(study_command(cwd, "first", 3), cwd=cwd, env=cli_env, timeout=900)
    assert first.returncode == 0, first
    trials = load(cwd).trials
    resumed = run_cli(study_command(cwd, "resumed", 4), cwd=cwd, env=cli_env, timeout=600)
    return {"cwd": cwd, "first": first, "trials": trials, "resumed": resumed,
            "client": MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")}


def _parent(client: MlflowClient, sweep_dir: Path) -> Run:
    (parent,) = [r for r in parent_runs(client)
                 if r.data.tags["dfmx.sweep_dir"] == str(sweep_dir)]
    return parent


def test_each_trial_is_a_child_run_and_its_value_the_job_return(study: dict) -> None:
    trials, client = study["trials"], study["client"]
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    parent = _parent(client, study["cwd"] / "first")
    assert parent.info.status == "FINISHED"
    children = {r.data.tags["dfmx.job_num"]: r for r in child_runs(client, parent.info.run_id)}
    assert sorted(children) == ["0", "1", "2"], "job numbers are trial numbers"
    for trial in trials:
        run = children[str(trial.number)]
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert run.data.metrics["val_synthetic_AUROC"] == pytest.approx(trial.value)
        assert params["scorer.name"] == trial.params["scorer"]
        assert params["pooling.kernel_size"] == trial.params["pooling.kernel_size"]
        assert float(params["pca_level"]) == pytest.approx(trial.params["pca_level"])
        assert 0.8 <= trial.params["pca_level"] <= 0.97
        layers = trial.params["layer.names"].strip("[]").split(",")
        assert json.loads(params["layer.names"]) == layers
        assert run.data.tags["choice.hydra/sweeper"] == "optuna"


def test_the_sweep_callback_reports_the_study(study: dict) -> None:
    """Sweep table, picture, closing line and parent metrics, as with the basic sweeper;
    the sweep folder holds the study's best trial."""
    cwd, client, trials = study["cwd"], study["client"], study["trials"]
    parent = _parent(client, cwd / "first")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_table.csv", "sweep_summary.png"} <= names
    assert parent.data.tags["dfmx.n_jobs"] == "3"
    best = max(t.value for t in trials)
    assert parent.data.metrics["best_val_synthetic_AUROC"] == pytest.approx(best)
    assert "dfmx sweep: 3 jobs finished; best by val_synthetic_AUROC: #" in study["first"].stdout
    result = yaml.safe_load((cwd / "first" / "optuna_study.yaml").read_text())
    assert result["best_value"] == pytest.approx(best)
    assert result["n_trials"] == {"complete": 3, "fail": 0}
    assert result["best_params"] == next(t.params for t in trials if t.value == best)


def test_the_same_command_resumes_the_study(study: dict) -> None:
    resumed: CliResult = study["resumed"]
    assert resumed.returncode == 0, resumed
    assert "3 of 4 trials finished before; running 1 more" in resumed.output
    trials = load(study["cwd"]).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.params for t in trials[:3]] == [t.params for t in study["trials"]]
    client = study["client"]
    parent = _parent(client, study["cwd"] / "resumed")
    (child,) = child_runs(client, parent.info.run_id)
    assert child.data.tags["dfmx.job_num"] == "3"
    assert child.data.metrics["val_synthetic_AUROC"] == pytest.approx(trials[3].value)


def test_failed_jobs_are_failed_trials(cli_env: dict[str, str], tiny_data: list[str],
                                       tmp_path: Path) -> None:
    """A kernel larger than the feature grid fails every job: the study goes on to its
    end, each trial FAIL with the reason, and the sweep exits 1 naming the jobs."""
    proc = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.storage=sqlite:///optuna.db",
                    "pooling.kernel_size=choice(64)", "pca_level=interval(0.8,0.9)",
                    *FAST, *tiny_data, "tracking=none", f"hydra.sweep.dir={tmp_path / 'mr'}"],
                   cwd=tmp_path, env=cli_env, timeout=300)
    assert proc.returncode == 1, proc
    assert "dfmx sweep: 2 of 2 jobs failed" in proc.stderr, proc
    trials = load(tmp_path, "dfmx").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all("returned no value" in t.user_attrs["error"] for t in trials)
    result = yaml.safe_load((tmp_path / "mr" / "optuna_study.yaml").read_text())
    assert result["n_trials"] == {"complete": 0, "fail": 2}
    assert "best_value" not in result


@pytest.mark.parametrize(("args", "message"), [
    (["pca_level=tag(foo,interval(0.8,0.9))"], "pca_level: unknown tag 'foo'"),
    (["image_size=128"], "nothing to search"),
])
def test_a_bad_search_space_is_one_line(cli_env: dict[str, str], tmp_path: Path,
                                        args: list[str], message: str) -> None:
    proc = run_cli(["-m", "hydra/sweeper=optuna", *args, "tracking=none",
                    f"hydra.sweep.dir={tmp_path / 'mr'}"], cwd=tmp_path, env=cli_env,
                   timeout=120)
    assert_clean_failure(proc, f"hydra/sweeper=optuna: {message}")
    assert not (tmp_path / "mr" / "0").exists()
