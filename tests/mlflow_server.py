"""A real ``mlflow server`` for the tests (127.0.0.1, SQLite store), and queries of the runs
dfmx records in a tracking store."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli_runner import BIN


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
