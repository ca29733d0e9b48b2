"""Secrets in the reports of failures: a tracking store that cannot be opened, and an
error that is not the user's (a bug), whose traceback Hydra would print with the
overrides as given. Each through the real CLI (``python -m dfmx`` in a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import CliResult, assert_clean_failure, command_env, run_cli, warm_cache

from . import corpus as c

FAST = ["image_size=64", "batch_size=32", "overlays=0", "save_model=false", "precision=auto"]
SECRET = "SECRETPW"
WEIGHTS = f"backbone.weights=https://alice:{SECRET}@weights.invalid/w.pth"
#: Loaded by Python at start-up from ``PYTHONPATH`` (``sitecustomize``): makes the
#: experiment fail as a bug would, with the secret-bearing option in its message.
FAULT = '''\
import dfmx.experiment.run as run


def run_experiment(config, output_dir):
    raise RuntimeError("a fault of the test; weights " + config["backbone"]["weights"])


run.run_experiment = run_experiment
'''


def _run(args: list[str], cwd: Path, **env: str) -> CliResult:
    environ = command_env(warm_cache(cwd / "cache"), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0",
                          **env)
    return run_cli([*args, *FAST], cwd, environ, timeout=300)


def _assert_secret_nowhere(result: CliResult, folder: Path) -> None:
    assert SECRET not in result.output, result
    for file in folder.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secret_reports")
    c.folder_tree(root / "set", n_normal=6, n_abnormal=2)
    return root / "set" / "normal"


def test_a_store_whose_driver_is_missing_is_one_line_without_the_password(
    data: Path, tmp_path: Path
) -> None:
    """``postgresql://`` without the ``psycopg`` driver installed (as here): one line
    naming the store (password hidden) and the way out."""
    pytest.importorskip("sqlalchemy")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("psycopg is installed: the driver is not missing here")
    result = _run([f"tracking.tracking_uri=postgresql://u:{SECRET}@127.0.0.1:1/db",
                   "data=folder", f"data.normal_dir={data}", f"hydra.run.dir={tmp_path / 'run'}"],
                  tmp_path)
    assert_clean_failure(result, "could not open the tracking store postgresql://***@127.0.0.1:1/db",
                         "driver 'psycopg' is not installed", "pip install psycopg")
    assert "Error executing job" not in result.output, result
    assert len(result.stderr.strip().splitlines()) <= 3, result  # the line and the debug hint
    _assert_secret_nowhere(result, tmp_path)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_an_unexpected_error_shows_its_traceback_without_the_secret(
    data: Path, tmp_path: Path
) -> None:
    (tmp_path / "fault").mkdir()
    (tmp_path / "fault" / "sitecustomize.py").write_text(FAULT)
    result = _run(["tracking=none", "data=folder", f"data.normal_dir={data}", WEIGHTS,
                   f"hydra.run.dir={tmp_path / 'run'}"], tmp_path,
                  PYTHONPATH=str(tmp_path / "fault"))
    assert result.returncode == 1, result
    assert "Traceback (most recent call last)" in result.stderr, result
    assert "RuntimeError: a fault of the test; weights https://***@weights.invalid/w.pth" \
        in result.stderr, result
    assert "Error executing job with overrides: [" in result.stderr, result
    assert "'backbone.weights=https://***@weights.invalid/w.pth'" in result.stderr, result
    _assert_secret_nowhere(result, tmp_path)


def test_an_unexpected_error_in_a_sweep_shows_its_traceback_without_the_secret(
    data: Path, tmp_path: Path
) -> None:
    (tmp_path / "fault").mkdir()
    (tmp_path / "fault" / "sitecustomize.py").write_text(FAULT)
    result = _run(["-m", "scorer=fre", "tracking=none", "data=folder",
                   f"data.normal_dir={data}", WEIGHTS, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                  tmp_path, PYTHONPATH=str(tmp_path / "fault"))
    assert result.returncode == 1, result
    assert "Traceback (most recent call last)" in result.output, result
    assert "RuntimeError: a fault of the test; weights https://***@weights.invalid/w.pth" \
        in result.output, result
    assert "dfmx sweep: 1 of 1 jobs failed" in result.output, result
    _assert_secret_nowhere(result, tmp_path)
