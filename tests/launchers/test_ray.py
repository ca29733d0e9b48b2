"""A 2-job sweep on a real local Ray head (127.0.0.1), results read back from MLflow."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import BIN, FAST, run_cli
from mlflow_server import child_runs, free_port, parent_runs

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (this test's Ray temp dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
    return pids


@pytest.fixture
def ray_head(cli_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``ray start --head`` on 127.0.0.1 with its own temp dir; stopped afterwards (only
    the processes of this head are ended)."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    env = {**cli_env, **RAY_ENV}
    port = free_port()
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--include-dashboard=false", "--num-cpus=2", f"--temp-dir={temp_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield f"127.0.0.1:{port}", env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _pids_using(temp_dir):
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            time.sleep(2)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_sweep_logs_to_mlflow(ray_head: tuple[str, dict[str, str]],
                                  tiny_data: list[str], tmp_path: Path) -> None:
    address, env = ray_head
    db = tmp_path / "ray.db"
    proc = run_cli(["-m", "scorer=fre,nll", *FAST, *tiny_data, "hydra/launcher=ray",
                     f"hydra.launcher.ray.init.address={address}",
                     "+hydra.launcher.ray.init.object_store_memory=null",
                     f"hydra.sweep.dir={tmp_path / 'mr'}", f"tracking.tracking_uri=sqlite:///{db}",
                     "tracking.log_model=false"],
                    cwd=tmp_path, env=env, timeout=400)
    assert proc.returncode == 0, proc
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    (parent,) = parent_runs(client)
    children = child_runs(client, parent.info.run_id)
    assert sorted(r.data.params["scorer.name"] for r in children) == ["fre", "nll"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert "image_AUROC" in run.data.metrics
        assert run.data.tags["choice.hydra/launcher"] == "ray"
    assert (tmp_path / "mr" / "sweep_table.csv").is_file()
