"""Against a real ``mlflow server``: a sweep with one failing job, and a single run whose
explicit ``tracking.tracking_uri`` beats ``MLFLOW_TRACKING_URI``. Against a SQLite store
whose artifacts cannot be written: a run and a sweep whose logging fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import FAST, run_cli
from mlflow.tracking import MlflowClient
from mlflow_server import child_runs, parent_runs


def test_failing_job_is_recorded_and_the_sweep_exits_nonzero(
    tracking_server: str, cli_env: dict[str, str], tiny_data: list[str], tmp_path: Path
) -> None:
    env = {**cli_env, "MLFLOW_TRACKING_URI": tracking_server}
    # A 64-cell pooling window is larger than the 8x8 feature map at 128 px: job 1 fails.
    proc = run_cli(["-m", "pooling.kernel_size=2,64", *FAST, *tiny_data,
                     "tracking.experiment_name=failures", f"hydra.sweep.dir={tmp_path / 'mr'}"],
                    cwd=tmp_path, env=env)
    assert proc.returncode != 0, proc
    summary = [line for line in proc.stderr.splitlines() if line.startswith("dfmx sweep:")]
    assert len(summary) == 1, proc
    assert "1 of 2 jobs failed" in summary[0] and "pooling.kernel_size=64" in summary[0]
    assert not (tmp_path / "mlflow.db").exists(), "MLFLOW_TRACKING_URI must be used"

    client = MlflowClient(tracking_server)
    (parent,) = parent_runs(client, "failures")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["dfmx.n_failed"] == "1"
    children = {r.data.params["pooling.kernel_size"]: r for r in
                child_runs(client, parent.info.run_id)}
    assert set(children) == {"2", "64"}
    ok, bad = children["2"], children["64"]
    assert ok.info.status == "FINISHED" and "image_AUROC" in ok.data.metrics
    assert parent.data.tags["dfmx.best_run_id"] == ok.info.run_id
    assert bad.info.status == "FAILED"
    assert bad.data.tags["error"]
    names = {a.path for a in client.list_artifacts(bad.info.run_id)}
    assert "error.txt" in names
    text = Path(client.download_artifacts(bad.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "Traceback" in text
    table = Path(client.download_artifacts(parent.info.run_id, "sweep_table.csv",
                                           str(tmp_path))).read_text()
    assert "FAILED" in table and "FINISHED" in table


def test_single_run_explicit_uri_wins(
    tracking_server: str, cli_env: dict[str, str], tiny_data: list[str], tmp_path: Path
) -> None:
    env = {**cli_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'env.db'}"}
    proc = run_cli([*FAST, *tiny_data, f"tracking.tracking_uri={tracking_server}",
                     "tracking.experiment_name=single", "tracking.log_model=false",
                     f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc
    assert not (tmp_path / "env.db").exists()
    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("single")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.metrics["n_test"] == pytest.approx(7)
    assert "dfmx.model_uri" not in run.data.tags
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "predictions.csv", "model"} <= names


def test_unreachable_server_stops_before_any_work(
    cli_env: dict[str, str], tiny_data: list[str], tmp_path: Path
) -> None:
    from mlflow_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_cli([*FAST, *tiny_data, f"tracking.tracking_uri={dead}",
                     f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=cli_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, proc
    assert "not reachable" in out and "tracking=none" in out
    assert "Traceback" not in out
    # Stopped before extracting features: no results were written.
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_unreachable_server_stops_a_sweep_before_any_job(
    cli_env: dict[str, str], tiny_data: list[str], tmp_path: Path
) -> None:
    """The parent run cannot be made: one message and exit 1, not every job launched to
    fail the same way (Hydra only warns about a callback's exception)."""
    from mlflow_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(["-m", "scorer=fre,nll", *FAST, *tiny_data,
                     f"tracking.tracking_uri={dead}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                    cwd=tmp_path, env=cli_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, proc
    assert out.count("not reachable") == 1 and "dfmx sweep: TrackingUnavailableError" in out
    assert "Traceback" not in out and "Launching" not in out
    assert not list((tmp_path / "sweep").glob("*/metrics.json"))


def test_server_lost_mid_run_keeps_the_results(cli_env: dict[str, str], tmp_path: Path) -> None:
    import time

    from cli_runner import CliRunner, Job
    from mlflow_server import mlflow_server, stop_server

    env = {**cli_env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    run_dir = tmp_path / "run"
    (tmp_path / "srv").mkdir()
    with mlflow_server(tmp_path / "srv") as uri:
        # The whole demo set in fp32 without the cache: seconds of work after the run starts.
        job = CliRunner(env, tmp_path).start(
            Job([f"tracking.tracking_uri={uri}", "tracking.experiment_name=vanish",
                 "precision=fp32", "cache.enabled=false", "overlays=0",
                 f"hydra.run.dir={run_dir}"]),
            merge_stderr=True)
        client = MlflowClient(uri)
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:
            exp = client.get_experiment_by_name("vanish")
            if exp is not None and client.search_runs([exp.experiment_id]):
                break
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before its MLflow run appeared"
        stop_server(uri)  # the server goes away while the job extracts features
        result = job.wait(timeout=300)
    out = result.output
    assert result.returncode == 1, result
    assert "could not record the run in MLflow" in out and str(run_dir) in out
    assert "Traceback" not in out
    for name in ("metrics.json", "predictions.csv", "roc.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_logging_that_fails_fails_the_jobs_and_their_runs(
    cli_env: dict[str, str], tiny_data: list[str], tmp_path: Path, sweep: bool
) -> None:
    """Runs are created, but their artifacts cannot be written (the experiment's artifact
    folder lies under a file): each job says where its results are, its run ends
    ``FAILED`` with the error, and the command exits 1. A sweep's jobs are logged by the
    tracking process while the next job works: their failures reach the sweep's table,
    summary line and parent run all the same."""
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "afile").write_text("not a folder\n")
    store = MlflowClient(db)
    store.create_experiment("dfmx", artifact_location=(tmp_path / "afile" / "art").as_uri())
    args = [*FAST, *tiny_data, f"tracking.tracking_uri={db}"]
    args = ["-m", *args, "scorer=fre,nll", f"hydra.sweep.dir={tmp_path / 'mr'}"] if sweep \
        else [*args, f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli(args, cwd=tmp_path, env={**cli_env, "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.output, proc
    error = f"NotADirectoryError: [Errno 20] Not a directory: '{tmp_path / 'afile' / 'art'}'"
    folders = [tmp_path / "mr" / "0", tmp_path / "mr" / "1"] if sweep else [tmp_path / "run"]
    for folder in folders:
        assert f"could not record the run in MLflow ({error}); its results are saved in " \
               f"{folder}" in proc.output, proc
        assert (folder / "metrics.json").is_file()
    runs = store.search_runs([store.get_experiment_by_name("dfmx").experiment_id])
    assert len(runs) == len(folders) + sweep, runs
    for run in runs:
        assert run.info.status == "FAILED", run.info
        assert run.data.tags["error"] == error, run.data.tags
    if sweep:
        summary = [line for line in proc.stderr.splitlines() if line.startswith("dfmx sweep:")]
        assert len(summary) == 1 and summary[0].startswith("dfmx sweep: 2 of 2 jobs failed: "
                                                           "#0 ("), proc
        assert summary[0].count(f"): {error}") == 2, summary
        table = (tmp_path / "mr" / "sweep_table.csv").read_text()
        assert table.count("FAILED") == 2 and "FINISHED" not in table, table
