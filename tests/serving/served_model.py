"""Helpers of the serving tests and the serving benchmark: log a small model with the real
CLI, serve it with ``mlflow models serve`` on 127.0.0.1, send JSON requests."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli_runner import command_env, run_cli
from demo_trees import tiny_folder_data
from mlflow_server import free_port

BIN = Path(sys.executable).parent
#: Seconds a server may take to answer ``/ping`` (loading torch, timm and the model).
START_TIMEOUT_S = 240
#: Small and fast job settings.
FAST = ["image_size=128", "batch_size=32", "overlays=0", "num_workers=0"]


@dataclass(frozen=True)
class LoggedModel:
    """A fitted model logged by ``python -m dfmx``: its store, ``models:/`` URI and the
    run's saved ``model/`` folder."""

    tracking_uri: str
    model_uri: str
    model_dir: Path
    cache: Path
    data_root: Path
    env: dict[str, str]


@dataclass(frozen=True)
class Server:
    """A running ``mlflow models serve``: its base URL and process (group leader)."""

    url: str
    process: subprocess.Popen
    log: Path


def log_small_model(cache: Path, data_root: Path, workdir: Path,
                    extra: Sequence[str] = ()) -> LoggedModel:
    """Fit and log a model with ``python -m dfmx`` in ``workdir`` (store ``mlflow.db``)."""
    from mlflow.tracking import MlflowClient

    env = command_env(cache, MLFLOW_ENABLE_ASYNC_LOGGING="false")
    result = run_cli([*FAST, *tiny_folder_data(data_root, workdir / "data"), *extra], workdir,
                     env, timeout=600)
    assert result.returncode == 0, result
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("dfmx")
    run = client.search_runs([experiment.experiment_id])[0]
    return LoggedModel(tracking_uri, run.data.tags["dfmx.model_uri"],
                       Path(run.data.tags["dfmx.output_dir"]) / "model", cache, data_root,
                       {**env, "MLFLOW_TRACKING_URI": tracking_uri})


@contextmanager
def serve(model: LoggedModel, workdir: Path, workers: int = 1) -> Iterator[Server]:
    """``mlflow models serve`` of ``model`` on a free loopback port; stopped (its whole
    process group: MLflow starts uvicorn as a child) on exit."""
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", model.model_uri,
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=workdir, env=model.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(url):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not answer /ping in "
                                   f"{START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, proc, log_path)
    finally:
        _stop(proc)


def _answers_ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's process group (the group this helper started)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # uvicorn's workers may outlive the mlflow process by a moment.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def post(url: str, body: dict[str, Any] | bytes, timeout: float = 120,
         content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``url``/invocations; returns ``(status, parsed JSON body)``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode("utf-8", "replace")
        try:
            return err.code, json.loads(text)
        except json.JSONDecodeError:
            return err.code, {"raw": text}


def image_request(images: Sequence[bytes], **params: Any) -> dict[str, Any]:
    """A ``dataframe_split`` request with the images' bytes (base64) in ``image``."""
    body: dict[str, Any] = {"dataframe_split": {
        "columns": ["image"],
        "data": [[base64.b64encode(b).decode("ascii")] for b in images],
    }}
    if params:
        body["params"] = params
    return body


def path_request(paths: Sequence[str | Path], **params: Any) -> dict[str, Any]:
    """A ``dataframe_split`` request naming image files in ``path``."""
    body: dict[str, Any] = {"dataframe_split": {"columns": ["path"],
                                                "data": [[str(p)] for p in paths]}}
    if params:
        body["params"] = params
    return body
