"""Label-free model selection against the test labels, through the sweep command.

    pytest benchmarks/test_selection.py -s --benchmark-enable

runs ``python -m dfmx -m`` over :data:`GRID` (2 layer sets x 2 combinations x 2 pooling
sizes x 2 scorers x 2 reductions: 32 jobs sharing one feature cache) on MVTec AD bottle
and on the embedded demo data, with the sweep's default selection metric
(``val_synthetic_AUROC``, synthetic anomalies on the validation normals; no test label is
read to choose). It prints every job, the job the sweep chose, the best job by test image
and pixel AUROC, and the Spearman rank correlation between the label-free metrics and the
test metrics over the jobs.

Target (bottle): the chosen job is within 0.005 image AUROC and 0.01 pixel AUROC of the
sweep's best on test.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import REPO
from dfmx.tracking.sweep_state import JobRecord, read_job_records
from dfmx.tracking.sweep_table import best_record

GRID = [
    "layer.names=[blocks.2,blocks.4],[blocks.2,blocks.4,blocks.6]",
    "combine=ensemble,concat",
    "pooling.kernel_size=2,4",
    "scorer=fre,ppca",
    "reduction=auto,sum",
]
QUIET = ["tracking=none", "save_model=false", "overlays=0"]
IMAGE_GAP = 0.005
PIXEL_GAP = 0.01


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks on ties)."""
    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        order = a.argsort(kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=float)
        for value in np.unique(a):  # ties share their mean rank
            r[a == value] = r[a == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def run_sweep(data: list[str], out: Path) -> list[JobRecord]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.update(DFMX_CACHE_DIR=str(out / "cache"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    sweep = out / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "dfmx", "-m", *data, *GRID, *QUIET, f"hydra.sweep.dir={sweep}"],
        cwd=out, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [r for r in read_job_records(sweep) if r.status == "FINISHED"]
    assert len(records) >= 12, proc.stdout[-3000:]
    return records


def report(name: str, records: list[JobRecord]) -> dict[str, float]:
    """Print the jobs and the selection figures; return the gaps and correlations."""
    chosen = best_record(records)  # the sweep's own rule, default metric
    by_image = best_record(records, "image_AUROC")
    by_pixel = best_record(records, "pixel_AUROC")
    assert chosen is not None and by_image is not None and by_pixel is not None

    def m(r: JobRecord, key: str) -> float:
        return float(r.metrics.get(key, math.nan))

    print(f"\n{name}: {len(records)} jobs (label-free val_synthetic image/pixel AUROC | "
          "test image/pixel AUROC)")
    for r in sorted(records, key=lambda r: -m(r, "val_synthetic_AUROC")):
        label = " ".join(f"{k}={v}" for k, v in r.overrides.items())
        mark = " <- chosen" if r is chosen else ""
        print(f"  #{r.num:<3} {m(r, 'val_synthetic_AUROC'):.4f} "
              f"{m(r, 'val_synthetic_pixel_AUROC'):.4f} | {m(r, 'image_AUROC'):.4f} "
              f"{m(r, 'pixel_AUROC'):.4f}  {label}{mark}")
    figures = {
        "image_gap": m(by_image, "image_AUROC") - m(chosen, "image_AUROC"),
        "pixel_gap": m(by_pixel, "pixel_AUROC") - m(chosen, "pixel_AUROC"),
        "rho_image": spearman([m(r, "val_synthetic_AUROC") for r in records],
                              [m(r, "image_AUROC") for r in records]),
        "rho_pixel": spearman([m(r, "val_synthetic_pixel_AUROC") for r in records],
                              [m(r, "pixel_AUROC") for r in records]),
    }
    print(f"  chosen #{chosen.num}: image {m(chosen, 'image_AUROC'):.4f} (best "
          f"{m(by_image, 'image_AUROC'):.4f}, gap {figures['image_gap']:.4f}), pixel "
          f"{m(chosen, 'pixel_AUROC'):.4f} (best {m(by_pixel, 'pixel_AUROC'):.4f}, gap "
          f"{figures['pixel_gap']:.4f})")
    print(f"  Spearman rho, label-free vs test: image {figures['rho_image']:.3f}, "
          f"pixel {figures['rho_pixel']:.3f}")
    return figures


@pytest.mark.mvtec
@pytest.mark.slow
def test_bottle_label_free_choice(benchmark, bottle_root: Path, tmp_path: Path) -> None:
    data = ["data=mvtec", f"data.root={bottle_root}", "data.category=bottle"]
    records = benchmark.pedantic(run_sweep, args=(data, tmp_path), rounds=1, iterations=1)
    figures = report("bottle", records)
    benchmark.extra_info.update(figures)
    assert figures["image_gap"] <= IMAGE_GAP
    assert figures["pixel_gap"] <= PIXEL_GAP


@pytest.mark.slow
def test_demo_label_free_choice(benchmark, tmp_path: Path) -> None:
    records = benchmark.pedantic(run_sweep, args=(["data=demo"], tmp_path), rounds=1,
                                 iterations=1)
    benchmark.extra_info.update(report("demo", records))
