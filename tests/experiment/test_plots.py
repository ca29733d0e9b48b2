"""Tests of the run plots: the ROC curve and the score histogram, read back as pixels.

The axes' data-to-pixel mapping is taken from :func:`plots.roc_axes` and
:func:`plots.histogram_axes`, the functions that place them in the picture.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfmx.experiment import plots
from dfmx.experiment.chart import blend
from dfmx.experiment.drawing import font

N = 6
LABELS = np.array([0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5])
THRESHOLD = 0.5


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _is(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(picture == np.array(colour, np.uint8), axis=-1)


def _filled(colour: tuple[int, int, int], under: tuple[int, int, int] = (255, 255, 255)
            ) -> tuple[int, int, int]:
    """``colour`` blended at the bars' opacity over ``under``, as the plot blends it."""
    pixel = np.array([[under]], np.uint8)
    blend(pixel, (0, 0, 1, 1), colour, plots.FILL_ALPHA)
    return tuple(int(c) for c in pixel[0, 0])


def _ink_bands(picture: np.ndarray, rows: slice) -> list[tuple[int, int, int, int]]:
    """Text lines in ``rows``: ``(first row, last row, first column, last column)`` of each
    run of rows holding dark pixels."""
    dark = picture[rows].astype(int).sum(-1) < 300
    inked = dark.any(axis=1)
    bands, start = [], None
    for r, on in enumerate([*inked, False]):
        if on and start is None:
            start = r
        elif not on and start is not None:
            cols = np.flatnonzero(dark[start:r].any(axis=0))
            bands.append((start + rows.start, r - 1 + rows.start, cols[0], cols[-1]))
            start = None
    return bands


def test_roc_and_histogram_pngs(run: dict, assert_png) -> None:
    roc = plots.plot_roc(run["out"] / "roc.png", LABELS, SCORES, auroc=0.7778)
    hist = plots.plot_score_histogram(run["out"] / "hist.png", LABELS, SCORES, THRESHOLD)
    assert_png(roc)
    assert_png(hist)
    assert _read(roc).shape[1::-1] == plots.ROC_SIZE
    assert _read(hist).shape[1::-1] == plots.HISTOGRAM_SIZE


def test_roc_of_a_perfect_separation_runs_up_the_left_edge_and_along_the_top(
        tmp_path: Path) -> None:
    labels = np.r_[np.zeros(10, int), np.ones(10, int)]
    picture = _read(plots.plot_roc(tmp_path / "roc.png", labels, labels + 0.5 * labels))
    ax = plots.roc_axes()
    curve = _is(picture, plots.ROC_COLOUR)
    left, top = round(ax.col(0.0)), round(ax.row(1.0))
    for t in np.linspace(0.05, 0.95, 19):
        row, col = round(ax.row(t)), round(ax.col(t))
        assert curve[row, left - 2:left + 3].any(), f"no curve at tpr {t:.2f} on the left"
        assert curve[top - 2:top + 3, col].any(), f"no curve at fpr {t:.2f} on the top"
    # nothing of the curve inside the axes, away from those two edges (the legend's key
    # is lower right, below tpr 0.3)
    inner = curve[round(ax.row(0.95)):round(ax.row(0.3)), round(ax.col(0.05)):round(ax.col(0.95))]
    assert not inner.any()


def test_roc_draws_the_chance_diagonal_dashed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    picture = _read(plots.plot_roc(tmp_path / "roc.png", labels,
                                   rng.normal(size=60) + 3 * labels))
    ax = plots.roc_axes()
    grey = _is(picture, plots.CHANCE_COLOUR)
    ts = np.linspace(0.05, 0.95, 200)
    on = [grey[round(ax.row(t)) - 1:round(ax.row(t)) + 2,
               round(ax.col(t)) - 1:round(ax.col(t)) + 2].any() for t in ts]
    assert 0.4 < np.mean(on) < 0.9  # dashes and gaps along the whole diagonal
    anti = [grey[round(ax.row(1 - t)) - 1:round(ax.row(1 - t)) + 2,
                 round(ax.col(t)) - 1:round(ax.col(t)) + 2].any() for t in ts if t < 0.4]
    assert not any(anti)  # its upper left half (the other crosses it, then the legend)


def test_roc_with_left_out_scores_has_a_two_line_title_above_lower_axes(tmp_path: Path) -> None:
    scores = np.r_[np.nan, SCORES[1:]]
    picture = _read(plots.plot_roc(tmp_path / "roc.png", LABELS, scores))
    one, two = plots.roc_axes(1), plots.roc_axes(2)
    assert two.top > one.top
    bands = _ink_bands(picture, slice(0, two.top - 4))
    assert len(bands) == 2, bands
    assert bands[1][3] - bands[1][2] + 1 == pytest.approx(
        font(14).getlength("(1 non-finite scores left out)"), abs=4)


@pytest.mark.parametrize("cls", [0, 1])
def test_single_class_roc_says_why_it_is_undefined(tmp_path: Path, cls: int) -> None:
    labels = np.full(N, cls)
    picture = _read(plots.plot_roc(tmp_path / "roc.png", labels, SCORES))
    assert picture.shape[1::-1] == plots.ROC_SIZE
    assert not _is(picture, plots.ROC_COLOUR).any()
    bands = _ink_bands(picture, slice(0, picture.shape[0]))
    # title, then the three lines of the message in the middle
    assert len(bands) == 4, bands
    counts = f"Got {N * (1 - cls)} normal, {N * cls} anomalous."
    left, _, right, _ = font(14).getbbox(counts)
    assert abs((bands[3][3] - bands[3][2] + 1) - (right - left)) <= 4
    assert bands[1][0] < picture.shape[0] / 2 < bands[3][1]


def test_roc_computes_auroc_and_tolerates_nan_scores(run: dict, assert_png) -> None:
    scores = SCORES.copy()
    scores[0] = np.nan
    assert_png(plots.plot_roc(run["out"] / "roc.png", LABELS, scores, auroc=float("nan")))
    assert_png(plots.plot_score_histogram(run["out"] / "h.png", LABELS, scores, np.nan))


@pytest.mark.parametrize("cls", [0, 1])
def test_single_class_does_not_raise(run: dict, cls: int, assert_png) -> None:
    labels = np.full(N, cls)
    assert_png(plots.plot_roc(run["out"] / "roc.png", labels, SCORES))
    path = plots.plot_score_histogram(run["out"] / "h.png", labels, SCORES, THRESHOLD)
    assert_png(path)
    shown, hidden = ((plots.NORMAL_COLOUR, plots.ANOMALOUS_COLOUR) if cls == 0
                     else (plots.ANOMALOUS_COLOUR, plots.NORMAL_COLOUR))
    picture = _read(path)
    assert _is(picture, _filled(shown)).sum() > 1000
    assert not _is(picture, _filled(hidden)).any()


def _histogram_axes(labels: np.ndarray, scores: np.ndarray, threshold: float):
    edges = np.histogram_bin_edges(scores, bins="auto")
    top = max(int(np.histogram(scores[labels == c], edges)[0].max()) for c in (0, 1)
              if (labels == c).any())
    return plots.histogram_axes(edges, threshold, top)[0]


def test_histogram_bars_lie_where_the_scores_are(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    scores = np.r_[rng.uniform(1, 2, 40), rng.uniform(8, 9, 40)]
    picture = _read(plots.plot_score_histogram(tmp_path / "h.png", labels, scores, 5.0))
    ax = _histogram_axes(labels, scores, 5.0)
    for colour, lo, hi in ((plots.NORMAL_COLOUR, 1, 2), (plots.ANOMALOUS_COLOUR, 8, 9)):
        fill = _is(picture, _filled(colour))
        # the row just above the x axis (the legend's keys are at the top)
        cols = np.flatnonzero(fill[ax.bottom - 2])
        assert len(cols) > 0.5 * (ax.col(hi) - ax.col(lo)), colour
        # within the scores' range, widened by half of it (bins are narrower here)
        slack = (ax.col(hi) - ax.col(lo)) / 2
        assert ax.col(lo) - slack <= cols[0] and cols[-1] <= ax.col(hi) + slack, colour
        assert fill[ax.bottom - 1, cols].all()  # bars stand on the x axis
    # where no class has scores (between the two), no bar
    middle = picture[ax.top + 60:ax.bottom, round(ax.col(3.0)):round(ax.col(4.5))]
    assert not (_is(middle, _filled(plots.NORMAL_COLOUR))
                | _is(middle, _filled(plots.ANOMALOUS_COLOUR))).any()


def test_histogram_threshold_is_a_dashed_vertical_line_at_its_value(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(50, int), np.ones(30, int)]
    scores = np.r_[rng.normal(5, 1, 50), rng.normal(12, 3, 30)]
    threshold = 7.3
    picture = _read(plots.plot_score_histogram(tmp_path / "h.png", labels, scores, threshold))
    ax = _histogram_axes(labels, scores, threshold)
    black = _is(picture, plots.THRESHOLD_COLOUR)[ax.top + 1:ax.bottom]
    x = ax.col(threshold)
    column_ink = black.mean(axis=0)
    # a 2 px line at the threshold's column: dashes (6 on, 4 off), part under the legend
    assert column_ink[int(np.floor(x)) - 1:int(np.ceil(x)) + 2].max() > 0.35
    away = np.r_[ax.left + 2:int(x) - 3, int(x) + 4:ax.right - 1]
    assert column_ink[away].max() < 0.2  # no other long vertical black line


def test_histogram_of_all_equal_scores_shows_both_classes_in_one_bin(tmp_path: Path) -> None:
    scores = np.full(N, 3.0)
    picture = _read(plots.plot_score_histogram(tmp_path / "h.png", LABELS, scores, 3.0))
    ax = _histogram_axes(LABELS, scores, 3.0)
    both = _is(picture, _filled(plots.ANOMALOUS_COLOUR, _filled(plots.NORMAL_COLOUR)))
    cols = np.flatnonzero(both.any(axis=0))
    assert len(cols) > 20 and cols[0] < ax.col(3.0) < cols[-1]


def test_histogram_without_finite_scores_says_so(tmp_path: Path) -> None:
    picture = _read(plots.plot_score_histogram(tmp_path / "h.png", LABELS,
                                               np.full(N, np.nan), THRESHOLD))
    assert picture.shape[1::-1] == plots.HISTOGRAM_SIZE
    bands = _ink_bands(picture, slice(0, picture.shape[0]))
    assert len(bands) == 2, bands  # title and message
    text = f"No finite scores to plot. ({N} non-finite left out)"
    assert bands[1][3] - bands[1][2] + 1 == pytest.approx(font(14).getlength(text), abs=4)


_NO_MATPLOTLIB = """
import json, sys
import numpy as np
import dfmx.experiment.run
from dfmx.experiment import plots
from dfmx.experiment.overlays import write_overlays
out = sys.argv[1]
rng = np.random.default_rng(0)
labels = np.array([0, 0, 1, 1])
scores = np.array([0.1, 0.4, 0.35, 0.8])
plots.plot_roc(out + "/roc.png", labels, scores)
plots.plot_score_histogram(out + "/h.png", labels, scores, 0.5)
maps = rng.random((4, 32, 32)).astype(np.float32)
images = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
n = len(write_overlays(out + "/ov", [f"{i}.png" for i in range(4)], labels, scores, maps,
                       None, 32, k=1, load_image_fn=lambda i: images[i]))
print(json.dumps([n, sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib")]))
"""


def test_a_job_imports_no_matplotlib(tmp_path: Path) -> None:
    """Importing the job and drawing its plots and overlays leaves matplotlib unimported:
    it took about 0.5 s of every job's start."""
    result = subprocess.run([sys.executable, "-c", _NO_MATPLOTLIB, str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [2, []]
    assert {p.name for p in tmp_path.glob("*.png")} == {"roc.png", "h.png"}
