"""Overlay pictures and run plots: milliseconds per PNG, as a job writes them.

    pytest benchmarks/test_pictures.py --benchmark-enable -s

With ``DFMX_OLD_PLOTS`` naming another copy of ``dfmx/experiment/plots.py`` (e.g. one
from git history, drawn with matplotlib), the plots benchmark times that copy beside the
current one, on the same data.

Synthetic data, no MVTec needed: 16 images of 256 px (8 normal, 8 anomalous with a
defect mask), ``write_overlays(k=4)`` writes 8 PNGs, as one FRE job of the CLI does.
Timed in :data:`ROUNDS` rounds in this process (the median and the best round are
printed as ms per overlay), and once in a fresh interpreter: importing the module and
writing the 8 PNGs, what the first job of a command pays.

Run plots: :func:`plot_roc` and :func:`plot_score_histogram` of a bottle-sized test set
(20 normal scores ~ N(5, 1), 63 anomalous ~ N(12, 3)), timed the same way; the fresh
interpreter imports :mod:`dfmx.experiment.run` and draws both (the time from the end of
that import is printed apart: the job's import is most of the total and varies most).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.conftest import REPO
from benchmarks.test_cli import machine
from dfmx.experiment import plots
from dfmx.experiment.overlays import write_overlays

ROUNDS, N, SIZE, K = 5, 16, 256, 4

_FRESH = """
import sys, time
start = time.perf_counter()
from benchmarks.test_pictures import write_all
write_all(sys.argv[1])
print(time.perf_counter() - start)
"""


def _data() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photo-like images (smooth shading plus sensor noise) and maps like a job's: a
    16 x 16 feature grid's errors enlarged bilinearly, with one hot spot."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    shade = np.stack([yy * 160 + 40, xx * 120 + 60, (yy + xx) * 60 + 50], -1)
    images = np.clip(shade + rng.normal(0, 6, (N, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    grid = rng.random((N, 16, 16)).astype(np.float32)
    maps = np.stack([np.asarray(Image.fromarray(g, mode="F").resize(
        (SIZE, SIZE), Image.Resampling.BILINEAR)) for g in grid])
    maps += 3 * np.exp(-((yy - 0.5) ** 2 + (xx - 0.4) ** 2) * 20).astype(np.float32)
    labels = np.repeat([0, 1], N // 2)
    scores = rng.random(N)
    masks = np.zeros((N, SIZE, SIZE), bool)
    masks[labels == 1, 90:170, 60:150] = True
    paths = [f"/data/bottle/test/{'good' if lab == 0 else 'broken_large'}/{i:03d}.png"
             for i, lab in enumerate(labels)]
    return paths, labels, scores, maps, masks, images


def write_all(out: str | Path, data: tuple | None = None) -> list[Path]:
    """Write the 8 overlays of the synthetic run (``data``: :func:`_data`'s) into ``out``."""
    paths, labels, scores, maps, masks, images = _data() if data is None else data
    return write_overlays(out, paths, labels, scores, maps, masks, SIZE, k=K,
                          load_image_fn=lambda i: images[i])


def test_overlay_pictures(benchmark, tmp_path: Path) -> None:
    times: list[float] = []

    def one_round() -> None:
        start = time.perf_counter()
        written = write_all(tmp_path / f"round{len(times)}", data)
        times.append((time.perf_counter() - start) / len(written) * 1000)
        assert len(written) == 2 * K

    data = _data()
    write_all(tmp_path / "warm-up", data)
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    fresh = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path / "fresh")], cwd=REPO,
                           capture_output=True, text=True, check=True)
    print(f"\nwrite_overlays, {2 * K} overlays of {SIZE} px, {machine()}:\n"
          f"  {statistics.median(times):.1f} ms per overlay (median of {ROUNDS} rounds), "
          f"best {min(times):.1f} ms\n"
          f"  fresh interpreter, import + {2 * K} overlays: "
          f"{float(fresh.stdout.split()[-1]) * 1000:.0f} ms")


_FRESH_PLOTS = """
import sys, time
start = time.perf_counter()
import dfmx.experiment.run
imported = time.perf_counter()
from benchmarks.test_pictures import plots_module, write_plots
write_plots(plots_module(sys.argv[2] or None), sys.argv[1])
print(time.perf_counter() - start, time.perf_counter() - imported)
"""


def plots_module(path: str | None = None):
    """:mod:`dfmx.experiment.plots`, or the copy of it at ``path``."""
    if path is None:
        return plots
    spec = importlib.util.spec_from_file_location("old_plots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_plots(module, out: str | Path) -> None:
    """The ROC curve and the score histogram of a bottle-sized test set, into ``out``."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20, int), np.ones(63, int)]
    scores = np.r_[rng.normal(5, 1, 20), rng.normal(12, 3, 63)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module.plot_roc(out / "roc.png", labels, scores)
    module.plot_score_histogram(out / "score_histogram.png", labels, scores, 7.3,
                                threshold_label="validation threshold (FPR 0.05)")


def test_run_plots(benchmark, tmp_path: Path) -> None:
    old = os.environ.get("DFMX_OLD_PLOTS")
    versions = {"numpy + Pillow": None, **({f"old copy ({old})": old} if old else {})}
    lines = []
    for name, source in versions.items():
        module = plots_module(source)
        write_plots(module, tmp_path / "warm-up")
        times: list[float] = []

        def one_round(module=module, times=times) -> None:
            start = time.perf_counter()
            write_plots(module, tmp_path / f"round{len(times)}")
            times.append((time.perf_counter() - start) / 2 * 1000)

        if source is None:
            benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
        else:
            for _ in range(ROUNDS):
                one_round()
        fresh = subprocess.run([sys.executable, "-c", _FRESH_PLOTS, str(tmp_path / "fresh"),
                                source or ""], cwd=REPO, capture_output=True, text=True,
                               check=True)
        total, first = (float(t) * 1000 for t in fresh.stdout.split()[-2:])
        lines.append(f"  {name}: {statistics.median(times):.1f} ms per plot (median of "
                     f"{ROUNDS} rounds), best {min(times):.1f} ms; fresh interpreter, import "
                     f"dfmx.experiment.run + 2 plots: {total:.0f} ms, of which the 2 plots "
                     f"(and what they import) {first:.0f} ms")
    print(f"\nplot_roc + plot_score_histogram, 83 scores, {machine()}:\n" + "\n".join(lines))
