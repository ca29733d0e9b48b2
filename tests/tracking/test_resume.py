"""``resume=true``: a re-run sweep skips the jobs whose config already finished."""

from __future__ import annotations

from pathlib import Path

from cli_runner import FAST, run_cli
from mlflow.tracking import MlflowClient
from mlflow_server import child_runs, parent_runs


def test_resume_skips_finished_jobs(cli_env: dict[str, str], tiny_data: list[str],
                                    tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'resume.db'}"
    common = [*FAST, *tiny_data, f"tracking.tracking_uri={uri}", "tracking.log_model=false",
              "tracking.experiment_name=resume"]
    # The "interrupted" sweep: only kernel 2 got done.
    first = run_cli(["-m", "pooling.kernel_size=2", *common,
                      f"hydra.sweep.dir={tmp_path / 'first'}"], cwd=tmp_path, env=cli_env)
    assert first.returncode == 0, first
    again = run_cli(["-m", "pooling.kernel_size=2,4", "resume=true", *common,
                      f"hydra.sweep.dir={tmp_path / 'again'}"], cwd=tmp_path, env=cli_env)
    assert again.returncode == 0, again
    assert "already finished as MLflow run" in again.stdout + again.stderr

    client = MlflowClient(uri)
    parents = {p.info.run_id: p for p in parent_runs(client, "resume")}
    assert len(parents) == 2
    runs_per_parent = {pid: child_runs(client, pid) for pid in parents}
    all_children = [r for runs in runs_per_parent.values() for r in runs]
    # Kernel 2 ran once (first sweep); kernel 4 only in the resumed sweep.
    kernels = sorted(r.data.params["pooling.kernel_size"] for r in all_children)
    assert kernels == ["2", "4"], kernels
    # The resumed sweep's table still lists both jobs, the skipped one with its metrics.
    table = (tmp_path / "again" / "sweep_table.csv").read_text()
    assert table.count("FINISHED") == 2
