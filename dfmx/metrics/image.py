"""Image-level anomaly detection metrics: AUROC, AUPR, best F1 and thresholded predictions.

Convention: higher score = more anomalous; label 1 = anomalous. All metrics need both normal and
anomalous images; with only one class they return NaN and emit an ``UndefinedMetricWarning``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dfmx.metrics.inputs import as_numpy, image_inputs
from dfmx.metrics.ranking import Ranking, ranked_areas
from dfmx.metrics.undefined import warn_undefined


def _single_class_reason(labels: np.ndarray) -> str | None:
    """Why the (N,) bool ``labels`` cannot support a ranking metric, or None if they can."""
    if labels.all():
        return "the test set has only anomalous images"
    if not labels.any():
        return "the test set has only normal images"
    return None


def image_auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of image scores.

    Args:
        labels: (N,) bool or 0/1, 1 = anomalous.
        scores: (N,) anomaly scores, higher = more anomalous.

    Returns:
        AUROC in [0, 1]; NaN (with a warning) when only one class is present.
    """
    y, s = image_inputs(labels, scores)
    return ranked_areas("image", y, s, _single_class_reason(y), "AUROC")[0]


def image_aupr(labels: Any, scores: Any) -> float:
    """Area under the precision-recall curve (average precision) of image scores.

    Args:
        labels: (N,) bool or 0/1, 1 = anomalous.
        scores: (N,) anomaly scores, higher = more anomalous.

    Returns:
        Average precision in [0, 1]; NaN (with a warning) when only one class is present.
    """
    y, s = image_inputs(labels, scores)
    return ranked_areas("image", y, s, _single_class_reason(y), "AUPR")[0]


def f1_optimal(labels: Any, scores: Any) -> tuple[float, float]:
    """Best F1 over all thresholds of the precision-recall curve, and the threshold achieving it.

    Candidate thresholds are the distinct scores; the prediction rule is ``score >= threshold``.
    When several thresholds tie for the best F1, the lowest one is returned.

    Args:
        labels: (N,) bool or 0/1, 1 = anomalous.
        scores: (N,) anomaly scores, higher = more anomalous.

    Returns:
        ``(f1, threshold)``; ``(nan, nan)`` (with a warning) when only one class is present.
    """
    y, s = image_inputs(labels, scores)
    reason = _single_class_reason(y)
    if reason:
        nan = warn_undefined(f"image F1 is undefined: {reason}")
        return nan, nan
    return Ranking(y, s).f1_optimal()


def predictions(scores: Any, threshold: float) -> np.ndarray:
    """Binary anomaly predictions ``scores >= threshold``.

    Args:
        scores: anomaly scores of any shape, e.g. (N,).
        threshold: decision threshold, e.g. from :func:`f1_optimal`.

    Returns:
        bool array of the same shape as ``scores``; True = predicted anomalous.
    """
    return np.asarray(as_numpy(scores) >= threshold, dtype=bool)
