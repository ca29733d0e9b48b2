"""Tests of the run plots: the ROC curve and the score histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfmx.experiment import plots

N = 6
LABELS = np.array([0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5])
THRESHOLD = 0.5



def test_roc_and_histogram_pngs(run: dict, assert_png) -> None:
    roc = plots.plot_roc(run["out"] / "roc.png", LABELS, SCORES, auroc=0.7778)
    hist = plots.plot_score_histogram(run["out"] / "hist.png", LABELS, SCORES, THRESHOLD)
    assert_png(roc)
    assert_png(hist)


def _full_draw_roc(labels: np.ndarray, scores: np.ndarray, note: str = "") -> np.ndarray:
    """The ROC figure built and drawn whole, as plot_roc did before it kept the unchanging
    parts: the oracle for the blitted picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fig = Figure(figsize=(5.5, 5.2), dpi=100)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.9 if note else 0.93)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="tab:orange", lw=2,
            label=f"ROC (AUROC = {roc_auc_score(labels, scores):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (normals flagged)")
    ax.set_ylabel("True positive rate (anomalies found)")
    n_normal, n_anomalous = int((labels == 0).sum()), int((labels == 1).sum())
    ax.set_title(f"Image-level ROC — {n_normal} normal, {n_anomalous} anomalous{note}",
                 y=1.0, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def test_roc_pictures_equal_a_full_draw_pixel_for_pixel(tmp_path: Path) -> None:
    """The ROC canvas is drawn once and reused: every picture, whatever came before it,
    equals the whole figure drawn anew (also with the two-line title of left-out scores)."""
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(20, int), np.ones(40, int)]
    cases = [np.round(rng.normal(size=60) + labels * shift, 1) for shift in (2.0, -1.0, 0.3)]
    with_nan = cases[0].copy()
    with_nan[:2] = np.nan
    for i, scores in enumerate([*cases, with_nan, cases[1]]):
        path = plots.plot_roc(tmp_path / f"roc{i}.png", labels, scores)
        finite = np.isfinite(scores)
        note = f"\n({int((~finite).sum())} non-finite scores left out)" if not finite.all() else ""
        expected = _full_draw_roc(labels[finite], scores[finite], note)
        with Image.open(path) as im:
            assert np.array_equal(np.asarray(im.convert("RGBA")), expected), i
        assert not list(tmp_path.glob(".*.tmp"))


def test_roc_computes_auroc_and_tolerates_nan_scores(run: dict, assert_png) -> None:
    scores = SCORES.copy()
    scores[0] = np.nan
    assert_png(plots.plot_roc(run["out"] / "roc.png", LABELS, scores, auroc=float("nan")))
    assert_png(plots.plot_score_histogram(run["out"] / "h.png", LABELS, scores, np.nan))


@pytest.mark.parametrize("cls", [0, 1])
def test_single_class_does_not_raise(run: dict, cls: int, assert_png) -> None:
    labels = np.full(N, cls)
    assert_png(plots.plot_roc(run["out"] / "roc.png", labels, SCORES))
    assert_png(plots.plot_score_histogram(run["out"] / "h.png", labels, SCORES, THRESHOLD))
