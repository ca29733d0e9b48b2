"""Unit tests of the tracking helpers (no MLflow runs)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfmx.tracking.job_context import parse_overrides
from dfmx.tracking.params import choice_tags, flatten_params
from dfmx.tracking.settings import TrackingSettings, resolve_tracking_uri, sqlite_path
from dfmx.tracking.store import is_locked_error, retry_locked
from dfmx.tracking.sweep_state import (
    JobRecord,
    ParentInfo,
    read_job_records,
    read_parent,
    write_job_record,
    write_parent,
)
from dfmx.tracking.sweep_table import (
    best_record,
    failure_summary,
    result_line,
    write_sweep_table,
)


def test_uri_precedence(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://env:5000"}
    assert resolve_tracking_uri("http://cli:1", env) == "http://cli:1"
    assert resolve_tracking_uri(None, env) == "http://env:5000"
    assert resolve_tracking_uri(None, {}, cwd=tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db", {}) == "sqlite:////abs/x.db"
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path("http://h") is None


def test_settings_from_config() -> None:
    assert not TrackingSettings.from_config({"name": "none"}).enabled
    assert not TrackingSettings.from_config(None).enabled
    s = TrackingSettings.from_config({"name": "mlflow", "tracking_uri": None,
                                      "experiment_name": "e", "log_model": False})
    assert s.enabled and s.experiment_name == "e" and not s.log_model and s.log_artifacts


def test_flatten_params_scalars_and_lists() -> None:
    flat = flatten_params({"b": {"arch": "x", "layers": ["a", "b"]}, "a": None, "k": 2.5})
    assert flat == {"a": "None", "b.arch": "x", "b.layers": '["a", "b"]', "k": "2.5"}
    assert list(flat) == sorted(flat)
    assert choice_tags({"scorer": "fre", "hydra/launcher": "joblib", "x": None}) == {
        "choice.hydra/launcher": "joblib", "choice.scorer": "fre"}
    assert parse_overrides(["scorer=fre", "+a.b=1=2"]) == {"scorer": "fre", "a.b": "1=2"}


def test_retry_locked_retries_only_lock_errors() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry_locked(flaky, base_delay=0.001) == "ok" and len(calls) == 3
    with pytest.raises(KeyError):
        retry_locked(lambda: {}["x"], base_delay=0.001)
    wrapped = ValueError("outer")
    wrapped.__cause__ = RuntimeError("database is locked")
    assert is_locked_error(wrapped)


def test_sweep_state_table_best_and_failures(tmp_path: Path) -> None:
    write_parent(tmp_path, ParentInfo("p1", "sqlite:////x.db", "0"))
    assert read_parent(tmp_path) == ParentInfo("p1", "sqlite:////x.db", "0")
    write_job_record(tmp_path, JobRecord(1, {"k": "4"}, "FINISHED", "r1", {"image_AUROC": 0.9}))
    write_job_record(tmp_path, JobRecord(0, {"k": "2"}, "FINISHED", "r0", {"image_AUROC": 0.95}))
    write_job_record(tmp_path, JobRecord(2, {"k": "64"}, "FAILED", "r2", error="Boom: x\ny"))
    records = read_job_records(tmp_path)
    assert [r.num for r in records] == [0, 1, 2]
    assert best_record(records, "image_AUROC").run_id == "r0"
    assert best_record(records) is None  # no job has the default, label-free metric
    summary = failure_summary(records)
    assert summary == "dfmx sweep: 1 of 3 jobs failed: #2 (k=64): Boom: x"
    assert failure_summary(records[:2]) is None
    assert result_line(records, "/sweeps/1", "image_AUROC") == (
        "dfmx sweep: 2 of 3 jobs finished; best by image_AUROC: #0 k=2 (image_AUROC 0.9500); "
        "table and picture in /sweeps/1")
    assert result_line(records[:2], "d", "image_AUROC").startswith(
        "dfmx sweep: 2 jobs finished; best by image_AUROC: #0 k=2")
    assert result_line(records[2:], "d") == (
        "dfmx sweep: 0 of 1 jobs finished; table and picture in d")
    lines = write_sweep_table(tmp_path / "t.csv", records, "image_AUROC").read_text().splitlines()
    assert lines[0] == "job,run_id,status,best_by_image_AUROC,k,image_AUROC,error"
    assert [line.split(",")[3] for line in lines[1:]] == ["1", "0", "0"]


def test_parallel_processes_open_a_fresh_sqlite_store(tmp_path: Path) -> None:
    """Four processes creating runs in a new SQLite store at once: no migration race, no
    'database is locked'."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import sys\nfrom dfmx.tracking.store import open_store, retry_locked\n"
        "client, exp = open_store(sys.argv[1], 'race')\n"
        "for i in range(3):\n"
        "    run = retry_locked(client.create_run, exp)\n"
        "    retry_locked(client.log_metric, run.info.run_id, 'm', float(i))\n"
        "    retry_locked(client.set_terminated, run.info.run_id)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("race")
    assert len(client.search_runs([exp.experiment_id], max_results=100)) == 12


@pytest.mark.parametrize("module", ["dfmx.engine.scorer", "dfmx.scorers.base"])
def test_scorer_contract_imports_first(module: str) -> None:
    # Process launchers unpickle job configs whose classes live in the scorer contract's
    # module: it must import on its own in a fresh interpreter.
    proc = subprocess.run([sys.executable, "-c", f"import {module}"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_secrets_never_reach_params() -> None:
    from dfmx.tracking.params import flatten_params

    cfg = {"tracking": {"tracking_uri": "https://alice:s3cr3t@mlflow.example:5000",
                        "api_token": "abc123", "experiment_name": "dfmx"},
           "backbone": {"weights": None}}
    params = flatten_params(cfg)
    text = " ".join(params.values())
    assert "s3cr3t" not in text and "abc123" not in text and "alice" not in text
    assert params["tracking.tracking_uri"] == "https://***@mlflow.example:5000"
    assert params["tracking.experiment_name"] == "dfmx"
    assert params["backbone.weights"] == "None"


def test_model_logging_hides_the_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from dfmx.tracking.pyfunc import _quiet_logging

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    with _quiet_logging():
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    # A user's own setting is left as it is.
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    with _quiet_logging():
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"


def test_sweep_plot_labels_show_the_swept_options(tmp_path: Path) -> None:
    from dfmx.tracking.sweep_table import sweep_plot_inputs, write_sweep_plot

    common = {"image_size": "128", "overlays": "0"}
    records = [
        JobRecord(0, {**common, "scorer": "fre", "pooling.kernel_size": "2"}, "FINISHED",
                  None, {"image_AUROC": 0.9}),
        JobRecord(1, {**common, "scorer": "nll", "pooling.kernel_size": "2"}, "FAILED",
                  None, {}, error="ValueError: boom\nmore"),
    ]
    labels, metrics, errors = sweep_plot_inputs(records)
    assert labels == ["#0 scorer=fre", "#1 scorer=nll"]
    assert errors == [None, "ValueError: boom"]
    assert metrics == [{"image_AUROC": 0.9}, {}]
    assert write_sweep_plot(tmp_path / "sweep.png", records).stat().st_size > 2000
    # One job: nothing differs, so every option is shown (cut to 70 characters).
    one = JobRecord(2, {f"option_{i}": "value" for i in range(9)}, "FINISHED", None, {})
    (label,), _, _ = sweep_plot_inputs([one])
    assert len(label) == 70 and label.startswith("#2 option_0=value") and label.endswith("…")


def test_unknown_tracking_uri_scheme_is_one_clear_error() -> None:
    """MLflow's own error was a traceback through its registry, naming the whole URI."""
    from dfmx.tracking.store import open_store

    with pytest.raises(ValueError, match="no tracking store for the URI scheme 'foo'") as err:
        open_store("foo://user:secret@host/x", "dfmx")
    assert "secret" not in str(err.value) and "tracking=none" in str(err.value)


def test_a_lost_tracking_process_is_one_line_of_the_user() -> None:
    """A call to a tracking process that has died is a one-line error (a user error, as a
    tracking server gone away), never a traceback; no run is given to a dead process."""
    from dfmx.errors import is_user_error
    from dfmx.tracking import run_process
    from dfmx.tracking.job_context import JobContext

    run_process.prestart()
    channel = run_process._channel
    assert channel is not None
    try:
        channel.proc.kill()
        channel.proc.wait(30)
        with pytest.raises(run_process.TrackingProcessError,
                           match=r"ended unexpectedly \(exit status -9\)") as lost:
            channel.call("start", {})
        assert is_user_error(lost.value)
        context = JobContext(multirun=False, output_dir=Path("run"))
        assert run_process.client(TrackingSettings.from_config(None), context) is None
    finally:
        run_process.stop()


#: A command that starts its tracking process, forks a child that lives on, and waits to
#: be killed; it prints the pids of the tracking process and of the child.
_FORKING_COMMAND = """
import os, time
from dfmx.tracking import run_process
run_process.prestart()
child = os.fork()
if child == 0:
    time.sleep(300)
    os._exit(0)
print(run_process._channel.proc.pid, child, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/stat").exists(),
                    reason="needs fork and /proc")
def test_a_killed_command_s_forked_child_does_not_keep_its_tracking_process() -> None:
    """The tracking process ends when the command does, also while a child the command
    forked (a fork-based launcher worker) lives on: the child lets go of the pipes."""
    command = subprocess.Popen([sys.executable, "-c", _FORKING_COMMAND],
                               stdout=subprocess.PIPE, text=True)
    tracking = child = None
    try:
        tracking, child = map(int, command.stdout.readline().split())
        assert _running(tracking) and _running(child)
        command.kill()
        command.wait(30)
        deadline = time.monotonic() + 120
        while _running(tracking) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(tracking), "the tracking process outlived the killed command"
        assert _running(child)  # it was the command's end that ended it
    finally:
        command.kill()
        for pid in (tracking, child):
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
