"""Thresholds set on normal scores only, and the figures of a threshold on a test set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dfmx.metrics.threshold import at_threshold, fpr_threshold, score_statistics


def test_fewer_than_one_over_fpr_normals_gives_just_above_the_highest() -> None:
    scores = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    thr = fpr_threshold(scores, 0.01)
    assert thr > 5.0 and thr == np.nextafter(5.0, np.inf)
    assert int((scores >= thr).sum()) == 0


@pytest.mark.parametrize(("n", "fpr", "flagged"), [(100, 0.01, 1), (250, 0.01, 2),
                                                   (100, 0.29, 29), (40, 0.1, 4)])
def test_floor_fpr_n_normals_are_flagged(n: int, fpr: float, flagged: int) -> None:
    scores = np.random.default_rng(n).normal(size=n)
    thr = fpr_threshold(scores, fpr)
    assert int((scores >= thr).sum()) == flagged
    assert thr == np.nextafter(np.sort(scores)[n - 1 - flagged], np.inf)


def test_bad_fpr_and_empty() -> None:
    with pytest.raises(ValueError, match="threshold_fpr"):
        fpr_threshold([1.0, 2.0], 0.0)
    assert math.isnan(fpr_threshold([], 0.01))


def test_figures_at_a_threshold() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.95, 0.05])
    got = at_threshold(labels, scores, 0.5)
    # flagged: 0.9 (normal), 0.8, 0.95 (anomalous) -> TP 2, FP 1, FN 1, TN 3
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == got["TPR"] == pytest.approx(2 / 3)
    assert got["F1"] == pytest.approx(2 / 3)
    assert got["FPR"] == pytest.approx(1 / 4)
    assert all(math.isnan(v) for v in at_threshold(labels, scores, math.nan).values())


def test_score_statistics() -> None:
    stats = score_statistics([1.0, 2.0, 3.0])
    assert stats["n"] == 3 and stats["max"] == 3.0 and stats["mean"] == 2.0
