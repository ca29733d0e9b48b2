"""Runs started together, earlier predictions, interrupts and faults of the machine, each
through the real CLI (``python -m dfmx`` / ``dfmx-predict`` in subprocesses):

* two runs started in the same second get folders of their own; a folder named by the
  user and still in use by a run is refused to a second one;
* ``dfmx-predict`` checks ``--output`` before any work and replaces earlier results only
  whole, saying so;
* ``SIGTERM`` and Ctrl-C (``SIGINT``) end every MLflow run that was started (``KILLED``,
  the sweep's parent too) and exit 143 / 130 with one line; ``SIGKILL`` of the command,
  or of its tracking process, still ends its run (``FAILED``);
* a run folder that cannot be created, a file size limit (``RLIMIT_FSIZE`` with
  ``SIGXFSZ`` ignored: writes fail with ``EFBIG``, the class of ``ENOSPC`` / ``EDQUOT``)
  and an address-space limit (``RLIMIT_AS``) each end in one line naming the way out.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_runner import (
    FAST,
    CliResult,
    CliRunner,
    Job,
    RunningCli,
    assert_clean_failure,
    command_env,
    run_cli,
    warm_cache,
)

from dfmx.tracking.settings import sqlite_path

from . import corpus as c

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TRACEBACK = "Traceback (most recent call last)"
SMALL = ["image_size=64", "batch_size=32", "overlays=0", "precision=auto"]


def _env(root: Path) -> dict[str, str]:
    return command_env(warm_cache(root / "cache"), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0",
                       MLFLOW_ENABLE_ASYNC_LOGGING="false",
                       PYTHONWARNINGS="ignore::DeprecationWarning")


def _store(db: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(db)


def _runs(db: str) -> list:
    """The runs of the store ``db``; none while the command has not made it (an observer
    that opened it first would be creating it)."""
    path = sqlite_path(db)
    if path is not None and not path.exists():
        return []
    client = _store(db)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def _wait_for_runs(running: RunningCli, db: str, wanted: Callable[[list], bool],
                   timeout: float = 240) -> None:
    """Poll the store until its runs are ``wanted``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert running.poll() is None, running.wait(5)
        with contextlib.suppress(Exception):  # the store is being created by the command
            if wanted(_runs(db)):
                return
        time.sleep(0.2)
    pytest.fail(f"the runs were not as wanted in {timeout} s:\n{running.wait(5)}")


def _wait_until_running(running: RunningCli, db: str, n: int = 1, timeout: float = 240) -> None:
    """Poll the store until ``n`` runs are RUNNING (the job has started its MLflow run)."""
    _wait_for_statuses(running, db,
                       lambda found: sum(s.count("RUNNING") for s in found.values()) >= n,
                       timeout)


def _wait_for_statuses(running: RunningCli, db: str,
                       wanted: Callable[[dict[str, list[str]]], bool],
                       timeout: float = 300) -> None:
    """Poll the store until the runs' statuses (:func:`_statuses`) are ``wanted``."""
    _wait_for_runs(running, db, lambda runs: wanted(_statuses(runs)), timeout)


# ----------------------------------------------------------------- item 2: run folders
@pytest.mark.usefixtures("in_tmp_path")
def test_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner(_env(tmp_path), tmp_path, parallel=2)
    # The store first, so the two runs do not race to create its tables; made from the
    # commands' folder (in_tmp_path), where they keep their artifacts.
    from dfmx.tracking.store import open_store

    open_store(db, "dfmx")
    results = runner.run_many({s: _job([*SMALL, "save_model=true", f"scorer={s}",
                                        f"tracking.tracking_uri={db}"]) for s in ("fre", "nll")})
    for result in results.values():
        assert result.returncode == 0, result
    folders = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(folders) == 2, folders
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d-[0-9a-f]{6}", f.name) for f in folders), folders
    tags = {r.data.tags["dfmx.output_dir"]: r.data.params["scorer.name"] for r in _runs(db)}
    assert sorted(tags) == [str(f) for f in folders]
    for folder in folders:
        overrides = (folder / ".hydra" / "overrides.yaml").read_text()
        assert f"scorer={tags[str(folder)]}" in overrides, overrides
        assert (folder / "model" / "model.json").exists()
        assert str(folder) in results[tags[str(folder)]].stdout  # its summary names it


def _job(args: list[str]) -> Job:
    return Job(args)


def test_run_and_sweep_folders_differ_for_commands_started_together(tmp_path: Path) -> None:
    runner = CliRunner(_env(tmp_path), tmp_path, parallel=2)
    results = runner.run_many({i: _job(["--cfg", "hydra", "--resolve"]) for i in range(2)})
    seen = []
    for result in results.values():
        assert result.returncode == 0, result
        run_dir = re.search(r"^  run:\n    dir: (\S+)", result.stdout, re.M)
        sweep_dir = re.search(r"^  sweep:\n    dir: (\S+)", result.stdout, re.M)
        assert run_dir and sweep_dir, result
        assert re.search(r"/\d\d-\d\d-\d\d-[0-9a-f]{6}$", run_dir[1]), run_dir[1]
        seen.append((run_dir[1], sweep_dir[1]))
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1], seen


def test_a_folder_in_use_is_refused_to_a_second_run(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "shared"
    runner = CliRunner(_env(tmp_path), tmp_path)
    first = runner.start(_job([*FAST, "image_size=256", f"tracking.tracking_uri={db}",
                               f"hydra.run.dir={run_dir}"]))
    _wait_until_running(first, db)
    second = runner.run("scorer=nll", "tracking=none", f"hydra.run.dir={run_dir}")
    assert_clean_failure(second, f"hydra.run.dir={run_dir} is in use by another dfmx run",
                         f"pid {first.process.pid}")
    done = first.wait(300)
    assert done.returncode == 0, done
    assert "scorer=nll" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    # The folder is free again once the first run has ended.
    again = runner.run(*SMALL, "save_model=false", "tracking=none", f"hydra.run.dir={run_dir}")
    assert again.returncode == 0, again
    assert f"hydra.run.dir={run_dir} holds the results of an earlier run (metrics.json" \
        in again.stderr, again


# --------------------------------------------------------------- item 3: dfmx-predict
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from dfmx import DFMModel
    from dfmx.experiment.saved_model import save_model

    root = tmp_path_factory.mktemp("model")
    model = DFMModel("efficientnet_lite0", "blocks.4", pooling_kernel_size=2)
    feats, shape = model.get_features(torch.rand(4, 3, 64, 64))
    model.fit(feats, shape)
    return save_model(model, root / "model", image_size=64, threshold=1.0)


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))[1:]


def test_predict_keeps_or_wholly_replaces_earlier_results(tmp_path: Path,
                                                          saved_model: Path) -> None:
    images = c.folder_tree(tmp_path / "set", n_normal=4) / "normal"
    broken = c.write_corrupt_png(tmp_path / "broken" / "zz_broken.png")
    out = tmp_path / "preds"
    (out).mkdir()
    (out / "mine.txt").write_text("the user's\n")

    def predict(*args: str) -> CliResult:
        return run_cli([str(saved_model), *args], tmp_path, _env(tmp_path),
                       module="dfmx.cli.predict")

    first = predict(str(images), "--overlays", "4", "-o", str(out))
    assert first.returncode == 0, first
    assert len(_rows(out / "predictions.csv")) == 4
    assert len(list((out / "overlays").iterdir())) == 4

    # Fails half-way (the last image is unreadable): the earlier results stay whole.
    failed = predict(str(images), str(broken), "--overlays", "4", "-o", str(out))
    assert_clean_failure(failed, "zz_broken.png")
    assert len(_rows(out / "predictions.csv")) == 4
    assert len(list((out / "overlays").iterdir())) == 4
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "overlays", "predictions.csv"]

    # A smaller prediction replaces the earlier one entirely, and says so.
    two = sorted(images.iterdir())[:2]
    second = predict(*map(str, two), "--overlays", "2", "-o", str(out))
    assert second.returncode == 0, second
    assert f"replaced 5 earlier file(s) in {out}" in second.stdout, second
    assert [Path(r[0]).name for r in _rows(out / "predictions.csv")] == [p.name for p in two]
    names = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(names) == 2 and all(any(p.stem in n for p in two) for n in names), names
    assert (out / "mine.txt").read_text() == "the user's\n"

    # SIGTERM while it works (its staging folder exists): exit 143, earlier results kept.
    before = (out / "predictions.csv").read_bytes()
    running = CliRunner(_env(tmp_path), tmp_path).start(Job(
        [str(saved_model), str(images), "-o", str(out)], module="dfmx.cli.predict"))
    while not list(out.glob(".dfmx-predict.*.tmp")):
        assert running.poll() is None, running.wait(5)
        time.sleep(0.05)
    running.process.send_signal(signal.SIGTERM)
    stopped = running.wait(120)
    assert stopped.returncode == 143, stopped
    assert f"dfmx-predict: stopped by SIGTERM; earlier results in {out} are unchanged" \
        in stopped.stderr and TRACEBACK not in stopped.output, stopped
    assert (out / "predictions.csv").read_bytes() == before
    assert not list(out.glob(".dfmx-predict.*")), sorted(out.iterdir())

    # --output naming a file (or a path through one) stops before the model is read: the
    # model path given here does not exist, and the message is about the output.
    for target in (out / "mine.txt", out / "mine.txt" / "sub"):
        bad = run_cli([str(tmp_path / "no_model"), str(images), "-o", str(target)], tmp_path,
                      _env(tmp_path), module="dfmx.cli.predict")
        assert_clean_failure(bad, f"--output {target}", "mine.txt is a file")
        assert "no_model" not in bad.output, bad


# ------------------------------------------------------------------ item 10: signals
def _statuses(runs: list) -> dict[str, list[str]]:
    """The runs' statuses by kind: parent, child, single."""
    found: dict[str, list[str]] = {"parent": [], "child": [], "single": []}
    for run in runs:
        kind = ("parent" if run.data.tags.get("dfmx.sweep") == "parent" else
                "child" if "mlflow.parentRunId" in run.data.tags else "single")
        found[kind].append(run.info.status)
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_killed(tmp_path: Path, signum: int) -> None:
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner(_env(tmp_path), tmp_path)
    running = runner.start(_job([*FAST, "image_size=320", f"tracking.tracking_uri={db}",
                                 f"hydra.run.dir={tmp_path / 'run'}"]))
    _wait_until_running(running, db)
    running.process.send_signal(signum)
    result = running.wait(120)
    assert result.returncode == 128 + signum, result
    assert TRACEBACK not in result.output, result
    name = signal.Signals(signum).name
    lines = [line for line in result.stderr.splitlines() if "stopped by" in line]
    assert lines == [lines[0]] and lines[0].startswith(f"dfmx: stopped by {name}; MLflow run")
    assert f"files written so far are in {tmp_path / 'run'}" in lines[0], result
    assert _statuses(_runs(db))["single"] == ["KILLED"]
    assert not list((tmp_path / "run").rglob("*.tmp"))


def _tracking_process(pid: int) -> int:
    """The process id of command ``pid``'s tracking process (``dfmx.tracking.run_process``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # a process that just ended
            continue
        if parent == pid and b"dfmx.tracking.run_process" in cmdline:
            return int(entry.name)
    pytest.fail(f"command {pid} has no tracking process")


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_killed_command_ends_its_runs_failed(tmp_path: Path, sweep: bool) -> None:
    """``SIGKILL`` (as the out-of-memory killer sends it): no handler runs in the command,
    and still its MLflow runs do not stay ``RUNNING``: the tracking process, left alone,
    ends the job's run (and a sweep's parent run) ``FAILED`` with the reason."""
    from dfmx.tracking.run_process import ORPHANED

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [*FAST, "image_size=320", f"tracking.tracking_uri={db}"]
    running = CliRunner(_env(tmp_path), tmp_path).start(
        _job(["-m", *args, "scorer=fre,nll"] if sweep else args))
    _wait_until_running(running, db, n=2 if sweep else 1)
    running.process.send_signal(signal.SIGKILL)
    result = running.wait(120)  # its output ends when the tracking process has ended too
    assert result.returncode == -signal.SIGKILL, result
    runs = _runs(db)
    assert len(runs) == (2 if sweep else 1), runs
    for run in runs:
        assert run.info.status == "FAILED", run.info
        assert run.data.tags["error"] == f"RuntimeError: {ORPHANED}", run.data.tags


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_lost_tracking_process_fails_the_job_and_its_run(tmp_path: Path, sweep: bool) -> None:
    """The tracking process killed while the (first) job works: the job's results are
    saved, it fails with one line, and the command ends its run ``FAILED`` itself; a
    sweep's next job and its parent run are recorded by the command."""
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [*FAST, "image_size=320", f"tracking.tracking_uri={db}"]
    if sweep:
        run_dir = tmp_path / "sweep" / "0"
        args = ["-m", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", "scorer=fre,nll"]
    else:
        run_dir = tmp_path / "run"
        args = [*args, f"hydra.run.dir={run_dir}"]
    running = CliRunner(_env(tmp_path), tmp_path).start(_job(args))
    # Once the job's run holds its params, the tracking process has answered its start.
    _wait_for_runs(running, db, lambda runs: any(r.data.params for r in runs))
    time.sleep(1)
    os.kill(_tracking_process(running.process.pid), signal.SIGKILL)
    result = running.wait(300)
    lost = "TrackingProcessError: the MLflow tracking process ended unexpectedly (exit status -9)"
    assert_clean_failure(result, f"could not record the run in MLflow ({lost}); its results "
                                 f"are saved in {run_dir}")
    assert result.returncode == 1, result
    assert (run_dir / "metrics.json").is_file()
    runs = {r.data.tags.get("dfmx.job_num", r.data.tags.get("dfmx.sweep")): r
            for r in _runs(db)}
    assert runs["0" if sweep else None].info.status == "FAILED", runs
    assert runs["0" if sweep else None].data.tags["error"] == lost, runs
    if sweep:
        assert "dfmx sweep: 1 of 2 jobs failed: #0" in result.stderr, result
        assert runs["1"].info.status == "FINISHED", runs
        assert runs["parent"].info.status == "FAILED", runs
        assert runs["parent"].data.tags["dfmx.n_failed"] == "1", runs


@pytest.mark.parametrize(("launcher", "signum"), [("basic", signal.SIGINT),
                                                  ("joblib", signal.SIGTERM)])
def test_an_interrupted_sweep_ends_every_run(tmp_path: Path, launcher: str, signum: int) -> None:
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner(_env(tmp_path), tmp_path)
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "image_size=320", f"tracking.tracking_uri={db}",
            f"hydra.sweep.dir={sweep}", "scorer=fre,nll", "pca_level=0.9,0.95"]
    if launcher == "basic":  # each job extracts its features: seconds of work to stop
        args.append("cache.enabled=false")
    if launcher == "joblib":
        args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    running = runner.start(_job(args))
    if launcher == "basic":  # one job after another: stop the second, the first finished
        # The second job still working (its run is RUNNING also while the tracking process
        # logs a job that has finished, and the sweep goes on to the next one).
        def second_working(runs: list) -> bool:
            status = {r.data.tags.get("dfmx.job_num"): r.info.status for r in runs}
            return (status.get("0") == "FINISHED" and status.get("1") == "RUNNING"
                    and not (sweep / "1" / "metrics.json").exists())

        _wait_for_runs(running, db, second_working)
    else:
        _wait_until_running(running, db, n=2)  # the parent and a first job
    running.process.send_signal(signum)
    result = running.wait(180)
    assert result.returncode == 128 + signum, result
    assert TRACEBACK not in result.output, result
    assert f"dfmx: stopped by {signal.Signals(signum).name}" in result.stderr, result
    assert "marked KILLED" in result.stderr, result
    statuses = _statuses(_runs(db))
    assert statuses["parent"] == ["KILLED"], statuses
    assert statuses["child"] and "RUNNING" not in statuses["child"], statuses
    assert "KILLED" in statuses["child"], statuses
    if launcher == "basic":  # the sweep table lists the job that finished
        finished = {r.info.run_id for r in _runs(db) if r.info.status == "FINISHED"}
        with (sweep / "sweep_table.csv").open(encoding="utf-8", newline="") as fh:
            table = {row["run_id"]: row["status"] for row in csv.DictReader(fh)}
        assert finished and {run_id: "FINISHED" for run_id in finished} == table, table


# ------------------------------------------------------- item 11: faults of the machine
def test_a_run_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = c.write_text(tmp_path / "a_file")
    result = run_cli([*SMALL, "tracking=none", f"hydra.run.dir={blocker}/run"], tmp_path,
                     _env(tmp_path))
    assert_clean_failure(result, f"cannot write the run folder {blocker}/run",
                         "set hydra.run.dir=<a folder you can write to>")
    assert len(result.output.strip().splitlines()) <= 2, result


def test_a_working_folder_without_write_access_is_one_line(tmp_path: Path) -> None:
    # Tests run as root, which writes through any mode bits; sysfs refuses new entries to
    # root as well (EPERM), as a read-only mount refuses them (EROFS) to everyone.
    place = Path("/sys/kernel")
    try:
        (place / "dfmx-probe").mkdir()
    except OSError:
        pass
    else:  # pragma: no cover - a writable /sys
        (place / "dfmx-probe").rmdir()
        pytest.skip("/sys/kernel is writable here")
    runner = CliRunner(_env(tmp_path), place)
    result = runner.run(*SMALL)
    assert_clean_failure(result, "cannot write the run folder /sys/kernel/outputs/",
                         "set hydra.run.dir=<a folder you can write to>, or run from such")


def _limited(tmp_path: Path, limit: str, args: list[str], module: str = "dfmx") -> CliResult:
    """``python -m MODULE ARGS`` under a shell ``ulimit`` (``SIGXFSZ`` ignored, so a write
    past ``ulimit -f`` fails with ``EFBIG`` instead of killing the process)."""
    command = (f"trap '' XFSZ; ulimit {limit}; exec {shlex.quote(sys.executable)} -m "
               f"{module} " + " ".join(shlex.quote(a) for a in args))
    return RunningCli(["bash", "-c", command], tmp_path, _env(tmp_path)).wait(300)


def test_no_room_to_write_is_one_line_and_leaves_no_partial_file(tmp_path: Path) -> None:
    # Generate the demo data first, without the limit.
    run_dir = tmp_path / "run"
    warm = run_cli(["--cfg", "job"], tmp_path, _env(tmp_path))
    assert warm.returncode == 0, warm
    result = _limited(tmp_path, "-f 64", [*SMALL, "save_model=true", "tracking=none",
                                          f"hydra.run.dir={run_dir}"])
    assert_clean_failure(result, "no room left to write", "free some space",
                         "hydra.run.dir=<a folder with room>")
    assert "File too large" in result.output, result
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")], \
        sorted(run_dir.rglob("*"))
    assert "image_AUROC" not in result.stdout  # no summary presented as a result


def test_predict_with_no_room_is_one_line_and_keeps_earlier_results(
    tmp_path: Path, saved_model: Path
) -> None:
    """``dfmx-predict`` under ``ulimit -f 1`` (1 KiB): its overlays do not fit. One line,
    the earlier results in ``-o`` unchanged, no staging folder left."""
    images = c.folder_tree(tmp_path / "set", n_normal=4) / "normal"
    out = tmp_path / "preds"
    first = run_cli([str(saved_model), str(images), "--overlays", "0", "-o", str(out)],
                    tmp_path, _env(tmp_path), module="dfmx.cli.predict")
    assert first.returncode == 0, first
    before = (out / "predictions.csv").read_bytes()
    result = _limited(tmp_path, "-f 1", [str(saved_model), str(images), "--overlays", "4",
                                         "-o", str(out)], module="dfmx.cli.predict")
    assert_clean_failure(result, "dfmx-predict:", "no room left to write",
                         f"the output folder {out}")
    assert "File too large" in result.output, result
    assert (out / "predictions.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"], sorted(out.iterdir())


def test_a_failed_allocation_is_one_line(tmp_path: Path) -> None:
    result = _limited(tmp_path, "-v 6000000", ["image_size=4096", "batch_size=16",
                                               "tracking=none", "cache.enabled=false",
                                               f"hydra.run.dir={tmp_path / 'run'}"])
    assert_clean_failure(result, "OutOfMemory: out of memory",
                         "use a smaller image_size or batch_size")
