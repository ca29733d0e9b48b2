"""Tests of the sweep picture and the one rule that ranks a sweep's jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfmx.tracking import sweep_plot
from dfmx.tracking.sweep_state import JobRecord
from dfmx.tracking.sweep_table import best_record, rank_jobs


def test_sweep_rows_best_first_failed_last() -> None:
    nan = float("nan")
    metrics = [{"image_AUROC": 0.9}, {"image_AUROC": nan}, {"image_AUROC": 0.99}, {}, {},
               {"image_AUROC": 0.99}]
    errors = [None, None, None, None, "ValueError: boom", None]
    order, best = sweep_plot.sweep_rows(metrics, errors, "image_AUROC")
    assert order == [2, 5, 0, 1, 3, 4]  # ties by job, no AUROC after the rest, failed last
    assert best == 2
    assert sweep_plot.sweep_rows([{}, {}], ["a", "b"], "image_AUROC") == ([0, 1], None)
    assert sweep_plot.sweep_rows([{"image_AUROC": nan}], [None], "image_AUROC") == ([0], None)
    many = [{"image_AUROC": i / 100} for i in range(sweep_plot.SWEEP_ROWS + 5)]
    order, best = sweep_plot.sweep_rows(many, [None] * len(many), "image_AUROC")
    assert len(order) == sweep_plot.SWEEP_ROWS and order[0] == best == len(many) - 1


def _assert_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


def _pixels(path: Path, colour: tuple[int, int, int]) -> int:
    with Image.open(path) as im:
        return int((np.asarray(im.convert("RGB")) == colour).all(axis=2).sum())


def test_sweep_picture(tmp_path: Path) -> None:
    labels = [f"#{j} scorer={s} pooling.kernel_size={k}" for j, (s, k) in
              enumerate([("fre", 2), ("fre", 4), ("nll", 2), ("nll", 64)])]
    metrics = [{"image_AUROC": 0.97, "pixel_AUROC": 0.96, "pixel_PRO": 0.88},
               {"image_AUROC": 1.0, "pixel_AUROC": 0.97, "pixel_PRO": 0.9},
               {"image_AUROC": 0.95}, {}]
    errors = [None, None, None, "ValueError: images of size (64, 64) are too small"]
    path = sweep_plot.plot_sweep(tmp_path / "sweep.png", labels, metrics, errors,
                                 metric="image_AUROC")
    _assert_png(path)
    with Image.open(path) as im:
        assert im.size == (sweep_plot.WIDTH, sweep_plot._ABOVE + 4 * sweep_plot.ROW_PX
                           + sweep_plot._BELOW)
    # Every metric's dots (and legend mark), the best row shaded, the failed one in red.
    for key, _, colour, _ in sweep_plot.SWEEP_METRICS[1:]:
        assert _pixels(path, colour) > 50, key
    assert _pixels(path, sweep_plot.SWEEP_METRICS[0][2]) == 0  # no job has it
    alpha = sweep_plot._BEST_ALPHA
    shade = tuple(round(255 * (1 - alpha) + c * alpha) for c in sweep_plot._BEST_SHADE)
    assert _pixels(path, shade) > 20 * sweep_plot.ROW_PX  # on white
    assert _pixels(path, sweep_plot._FAILED) > 100
    _assert_png(sweep_plot.plot_sweep(tmp_path / "failed.png", labels[:2], [{}, {}],
                                   ["ValueError: a", "ValueError: b"]))
    with pytest.raises(ValueError, match="lengths differ"):
        sweep_plot.plot_sweep(tmp_path / "bad.png", labels, metrics[:2], errors)


def _record(num: int, status: str, **metrics: float) -> JobRecord:
    return JobRecord(num=num, overrides={"scorer": f"s{num}"}, status=status,
                     metrics=dict(metrics))


def test_one_rule_picks_the_best_job_for_the_table_line_and_the_picture() -> None:
    """The best job of the end-of-sweep line (best_record) is the shaded row of the picture
    (sweep_rows), for whatever metric ranks; failed jobs never win."""
    records = [_record(0, "FINISHED", image_AUROC=0.9, pixel_PRO=0.7),
               _record(1, "FINISHED", image_AUROC=0.95, pixel_PRO=0.6),
               _record(2, "FAILED", image_AUROC=1.0, pixel_PRO=1.0),
               _record(3, "FINISHED", image_AUROC=0.95, pixel_PRO=0.8)]
    metrics = [r.metrics for r in records]
    errors = [None if r.status == "FINISHED" else "boom" for r in records]
    for metric, expected in (("image_AUROC", 1), ("pixel_PRO", 3)):
        order, best = sweep_plot.sweep_rows(metrics, errors, metric)
        assert best == expected and order[0] == expected and order[-1] == 2
        assert best_record(records, metric) is records[expected]
        assert rank_jobs(metrics, [e is None for e in errors], metric) == (order, best)
    assert best_record(records, "pixel_AUROC") is None


def test_sweep_picture_imports_no_matplotlib(tmp_path: Path) -> None:
    code = ("import sys\nfrom dfmx.tracking import sweep_plot\n"
            f"sweep_plot.plot_sweep({str(tmp_path / 's.png')!r}, ['#0'], "
            "[{'image_AUROC': 0.9}], [None])\nprint('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False", done
    _assert_png(tmp_path / "s.png")


def test_sweep_picture_ranked_by_another_metric(tmp_path: Path) -> None:
    metrics = [{"image_AUROC": 0.9, "pixel_PRO": 0.8}, {"image_AUROC": 0.95, "pixel_PRO": 0.6}]
    path = sweep_plot.plot_sweep(tmp_path / "s.png", ["#0", "#1"], metrics, [None, None],
                                 metric="pixel_PRO")
    _assert_png(path)


def test_a_saturated_selection_metric_is_broken_by_its_pixel_counterpart() -> None:
    """Every job at 1.0 on the synthetic anomalies (an easy data set): the job whose
    synthetic pixel AUROC is highest wins, not the first; without that metric, the first."""
    records = [_record(0, "FINISHED", val_synthetic_AUROC=1.0, val_synthetic_pixel_AUROC=0.96),
               _record(1, "FINISHED", val_synthetic_AUROC=0.99, val_synthetic_pixel_AUROC=0.999),
               _record(2, "FINISHED", val_synthetic_AUROC=1.0, val_synthetic_pixel_AUROC=0.98),
               _record(3, "FINISHED", val_synthetic_AUROC=1.0)]
    assert best_record(records) is records[2]
    order, best = rank_jobs([r.metrics for r in records], [True] * 4)
    assert (order, best) == ([2, 0, 3, 1], 2)
    labelled = [_record(0, "FINISHED", image_AUROC=1.0, pixel_AUROC=0.97),
                _record(1, "FINISHED", image_AUROC=1.0, pixel_AUROC=0.98)]
    assert best_record(labelled, "image_AUROC") is labelled[1]
    assert best_record(labelled, "pixel_PRO") is None
    no_breaker = [_record(0, "FINISHED", pixel_PRO=0.9), _record(1, "FINISHED", pixel_PRO=0.9)]
    assert best_record(no_breaker, "pixel_PRO") is no_breaker[0]
