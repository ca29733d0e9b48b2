"""Run outputs are readable by whoever the umask lets read them (issue: they were 0600).

One real ``python -m dfmx`` run with MLflow tracking, then ``dfmx-predict`` on its model,
under umask 022: every file they write (run folder, saved model, MLflow artifacts, feature
cache, the demo data set generated under ``DFMX_CACHE_DIR``, the ``-o`` folder of
``dfmx-predict``) must be ``0644`` and every folder ``0755``, as a plain ``open()`` and
``mkdir()`` would make them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cli_runner import command_env, run_cli


def _wrong_modes(root: Path) -> dict[str, str]:
    """Files not ``0644`` and folders not ``0755`` under ``root`` (itself excluded)."""
    wrong = {}
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o755 if path.is_dir() else 0o644):
            wrong[str(path.relative_to(root))] = oct(mode)
    return wrong


def test_a_run_under_umask_022_writes_files_others_can_read(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run_dir, cache = work / "run", work / "cache"
    args = ["image_size=64", "batch_size=32", "overlays=2", "precision=auto",
            f"hydra.run.dir={run_dir}", f"cache.dir={cache}",
            f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}"]
    demo_cache = tmp_path / "dfmx-cache"
    env = command_env(demo_cache, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    old_umask = os.umask(0o022)  # the commands inherit it
    try:
        result = run_cli(args, work, env, timeout=600)
        assert result.returncode == 0, result
        (test_folder,) = demo_cache.glob("demo-v*/*/test")
        predicted = run_cli([str(run_dir / "model"), str(test_folder), "--overlays", "2",
                             "-o", str(work / "predictions")], work, env,
                            module="dfmx.cli.predict", timeout=600)
    finally:
        os.umask(old_umask)
    assert predicted.returncode == 0, predicted
    assert (work / "predictions" / "predictions.csv").is_file(), predicted
    assert any((work / "predictions" / "overlays").iterdir()), predicted
    assert _wrong_modes(demo_cache) == {}
    written = {p.name for p in work.rglob("*")}
    assert {"metrics.json", "model.safetensors", "roc.png", "MLmodel"} <= written, result
    assert any(p.name == "metrics.json" and run_dir not in p.parents
               for p in work.rglob("*")), f"no MLflow artifact\n{result}"
    assert _wrong_modes(work) == {}
