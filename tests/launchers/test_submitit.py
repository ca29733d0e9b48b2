"""A 2-job sweep through submitit's local executor (stands in for SLURM here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import FAST, run_cli
from mlflow_server import child_runs, parent_runs

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def test_submitit_local_sweep(cli_env: dict[str, str], tiny_data: list[str],
                              tmp_path: Path) -> None:
    db = tmp_path / "sub.db"
    proc = run_cli(["-m", "pca_level=0.9,0.97", *FAST, *tiny_data,
                     "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                     "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={tmp_path / 'mr'}",
                     f"tracking.tracking_uri=sqlite:///{db}", "tracking.log_model=false"],
                    cwd=tmp_path, env=cli_env, timeout=400)
    assert proc.returncode == 0, proc
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    (parent,) = parent_runs(client)
    assert parent.info.status == "FINISHED"
    children = child_runs(client, parent.info.run_id)
    assert sorted(r.data.params["pca_level"] for r in children) == ["0.9", "0.97"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["choice.hydra/launcher"] == "submitit_local" for r in children)


def test_slurm_config_composes(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(["hydra/launcher=slurm", "hydra.launcher.partition=cpu", "--cfg", "hydra",
                     "-p", "hydra.launcher"], cwd=tmp_path, env=cli_env, timeout=120)
    assert proc.returncode == 0, proc
    for field in ("partition: cpu", "timeout_min: 60", "cpus_per_task: 4", "mem_gb: 16",
                  "SlurmLauncher"):
        assert field in proc.stdout
