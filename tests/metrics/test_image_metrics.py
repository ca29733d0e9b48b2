"""Image-level metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfmx.metrics import (
    UndefinedMetricWarning,
    f1_optimal,
    image_aupr,
    image_auroc,
    predictions,
)

LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


def test_auroc_hand_case() -> None:
    # Pairs (anomalous, normal): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4.
    assert image_auroc(LABELS, SCORES) == pytest.approx(0.75)


def test_aupr_hand_case() -> None:
    # Descending: 0.8 (anom: P=1, R=1/2), 0.4 (normal), 0.35 (anom: P=2/3, R=1).
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert image_aupr(LABELS, SCORES) == pytest.approx(5 / 6)


def test_f1_optimal_hand_case() -> None:
    # t=0.1: P=1/2 R=1 F1=2/3; t=0.35: P=2/3 R=1 F1=0.8; t=0.4: F1=1/2; t=0.8: P=1 R=1/2 F1=2/3.
    f1, threshold = f1_optimal(LABELS, SCORES)
    assert f1 == pytest.approx(0.8)
    assert threshold == pytest.approx(0.35)


def test_predictions_use_greater_or_equal() -> None:
    pred = predictions(SCORES, 0.35)
    assert pred.dtype == np.bool_
    np.testing.assert_array_equal(pred, [False, True, True, True])


def test_f1_threshold_reproduces_f1_with_predictions() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 50)
    scores = rng.normal(size=50) + labels
    f1, threshold = f1_optimal(labels, scores)
    pred = predictions(scores, threshold)
    tp = np.sum(pred & (labels == 1))
    assert f1 == pytest.approx(2 * tp / (pred.sum() + labels.sum()))


@pytest.mark.parametrize("seed", range(5))
def test_f1_optimal_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 30)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 8, 30).astype(float)  # many ties
    best_f1, best_t = -1.0, None
    for t in np.unique(scores):  # ascending: keep the lowest threshold among ties
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        f1 = 2 * tp / (pred.sum() + labels.sum())
        if f1 > best_f1 + 1e-12:
            best_f1, best_t = f1, t
    f1, threshold = f1_optimal(labels, scores)
    assert f1 == pytest.approx(best_f1)
    assert threshold == best_t


def test_torch_and_bool_inputs() -> None:
    labels = torch.tensor([False, False, True, True])
    scores = torch.tensor(SCORES, dtype=torch.bfloat16, requires_grad=True)
    assert image_auroc(labels, scores) == pytest.approx(0.75)
    np.testing.assert_array_equal(
        predictions(torch.tensor(SCORES), 0.35), [False, True, True, True]
    )


@pytest.mark.parametrize(
    ("labels", "reason"),
    [([0, 0, 0], "only normal images"), ([1, 1, 1], "only anomalous images")],
)
def test_single_class_is_nan_with_warning(labels: list[int], reason: str) -> None:
    scores = [0.1, 0.2, 0.3]
    with pytest.warns(UndefinedMetricWarning, match=f"image AUROC is undefined: .*{reason}"):
        assert np.isnan(image_auroc(labels, scores))
    with pytest.warns(UndefinedMetricWarning, match=f"image AUPR is undefined: .*{reason}"):
        assert np.isnan(image_aupr(labels, scores))
    with pytest.warns(UndefinedMetricWarning, match=f"image F1 is undefined: .*{reason}"):
        f1, threshold = f1_optimal(labels, scores)
    assert np.isnan(f1) and np.isnan(threshold)
