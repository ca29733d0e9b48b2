"""Helpers shared by the tracking and launcher tests: run the real CLI, a real MLflow
server, small data. Imported by ``tests/tracking/conftest.py`` and
``tests/launchers/conftest.py``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cli_result import CliResult

#: Small, fast settings for CLI jobs (2 CPU cores).
FAST = ["image_size=128", "batch_size=32", "precision=bf16", "overlays=0", "num_workers=0"]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(cache_dir: Path) -> dict[str, str]:
    """The environment for CLI subprocesses: shared demo cache, no inherited tracking URI."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update({
        "DFMX_CACHE_DIR": str(cache_dir),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
        "HYDRA_FULL_ERROR": "1",
    })
    return env


def run_dfmx(args: Sequence[str], cwd: Path, env: Mapping[str, str],
             timeout: float = 300) -> CliResult:
    """``python -m dfmx ARGS`` in ``cwd``; stdout and stderr captured (``str()`` of the
    result shows their tails, for assertion messages)."""
    argv = [sys.executable, "-m", "dfmx", *args]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False)
    return CliResult(argv, proc.returncode, proc.stdout, proc.stderr,
                     time.monotonic() - start)


def tiny_folder_data(demo_dir: Path, dest: Path) -> list[str]:
    """A few demo images as a ``data=folder`` set (8 train, 3 good + 4 defective test);
    returns the overrides that select it."""
    category = demo_dir / "demo"
    parts = {
        "normal": sorted((category / "train" / "good").glob("*.png"))[:8],
        "test_normal": sorted((category / "test" / "good").glob("*.png"))[:3],
        "abnormal": sorted(p for p in (category / "test").glob("*/*.png")
                           if p.parent.name != "good")[:4],
    }
    for name, files in parts.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / name / f"{f.parent.name}_{f.name}")
    return ["data=folder", f"data.normal_dir={dest / 'normal'}",
            f"data.test_normal_dir={dest / 'test_normal'}",
            f"data.abnormal_dir={dest / 'abnormal'}"]


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite store under ``root``; yields its
    URI and terminates it afterwards."""
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    SERVERS[uri] = proc
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not become healthy in 120 s")
            time.sleep(0.5)
        yield uri
    finally:
        stop_server(uri)
        log.close()


#: The processes of the servers :func:`mlflow_server` started, by URI.
SERVERS: dict[str, subprocess.Popen] = {}


def stop_server(uri: str) -> None:
    """Stop the server :func:`mlflow_server` started at ``uri`` (idempotent)."""
    proc = SERVERS.pop(uri, None)
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_runs(client: object, parent_run_id: str) -> list:
    """The child runs of a parent run."""
    parent = client.get_run(parent_run_id)  # type: ignore[attr-defined]
    return client.search_runs(  # type: ignore[attr-defined]
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=1000,
    )


def parent_runs(client: object, experiment_name: str = "dfmx") -> list:
    """The sweep parent runs of an experiment."""
    exp = client.get_experiment_by_name(experiment_name)  # type: ignore[attr-defined]
    assert exp is not None, f"no experiment {experiment_name!r}"
    return client.search_runs(  # type: ignore[attr-defined]
        [exp.experiment_id], filter_string="tags.`dfmx.sweep` = 'parent'"
    )
