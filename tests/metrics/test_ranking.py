"""The one ranking behind image and pixel metrics, against scikit-learn's definitions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from dfmx.metrics import f1_optimal, image_aupr, image_auroc
from dfmx.metrics.ranking import Ranking


def _case(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    labels[:2] = [False, True]
    scores = np.round(rng.normal(size=n) + labels, 1)  # many ties, some across classes
    return labels, scores


def _sklearn_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


@pytest.mark.parametrize("seed", range(6))
def test_image_metrics_equal_scikit_learn_with_ties(seed: int) -> None:
    labels, scores = _case(seed)
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores),
                                                        abs=1e-12)
    assert image_aupr(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12)
    f1, threshold = f1_optimal(labels, scores)
    ref_f1, ref_threshold = _sklearn_f1(labels, scores)
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    assert threshold == ref_threshold


@pytest.mark.parametrize("seed", range(3))
def test_roc_curve_has_every_point_of_scikit_learns(seed: int) -> None:
    labels, scores = _case(seed)
    fpr, tpr = Ranking(labels, scores).roc_curve()
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-15)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-15)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_f1_picks_the_lowest_of_tied_thresholds() -> None:
    # t=0.5 and t=0.3 both flag exactly the two anomalous images: F1 = 1 at each;
    # t=0.3 is the lowest threshold that reaches it.
    labels = np.array([False, True, True, False])
    scores = np.array([0.1, 0.5, 0.3, 0.2])
    assert Ranking(labels, scores).f1_optimal() == (1.0, 0.3)


def test_ranking_reads_any_shape_and_float32() -> None:
    labels, scores = _case(7, n=64)
    flat = Ranking(labels, scores)
    shaped = Ranking(labels.reshape(4, 4, 4), scores.astype(np.float32).reshape(4, 4, 4))
    assert shaped.auroc() == pytest.approx(flat.auroc(), abs=1e-12)
    assert shaped.average_precision() == pytest.approx(flat.average_precision(), abs=1e-12)


def test_a_job_does_not_import_scikit_learn() -> None:
    """scikit-learn took 1.3 s to import in every dfmx process (CLI job, sweep worker)
    for the image metrics and the ROC plot alone."""
    code = ("import sys, dfmx.cli.app, dfmx.experiment.run, dfmx.experiment.plots; "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr
