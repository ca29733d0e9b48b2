"""Decision thresholds set on normal images only, and what a threshold does on a test set.

:func:`fpr_threshold` is the threshold of a job: it sees the validation normals' scores
and nothing else, so test labels can never move it. The prediction rule is
``score >= threshold`` everywhere in dfmx.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dfmx.metrics.inputs import as_numpy, image_inputs

__all__ = ["DEFAULT_THRESHOLD_FPR", "at_threshold", "fpr_threshold", "score_statistics"]

#: The target false-positive rate of the default threshold.
DEFAULT_THRESHOLD_FPR = 0.01


def fpr_threshold(normal_scores: Any, fpr: float = DEFAULT_THRESHOLD_FPR) -> float:
    """The lowest threshold that flags at most ``floor(fpr * n)`` of ``n`` normal scores.

    With ``k = floor(fpr * n)`` the threshold sits just above (the next float after) the
    ``(k + 1)``-th highest score, so with ``score >= threshold`` exactly the ``k`` highest
    normals are flagged (fewer on ties). When ``n < 1 / fpr``, ``k`` is 0 and the
    threshold sits just above the highest normal score. NaN when ``normal_scores`` is empty.

    Args:
        normal_scores: ``(n,)`` finite scores of normal images (higher = more anomalous).
        fpr: target false-positive rate in (0, 1).
    """
    if not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"threshold_fpr must be in (0, 1); got {fpr!r}")
    s = np.sort(np.asarray(as_numpy(normal_scores), dtype=np.float64).reshape(-1))
    if s.size == 0:
        return math.nan
    k = math.floor(fpr * s.size + 1e-9)  # 0.29 * 100 is 28.999...: count 29
    return float(np.nextafter(s[s.size - 1 - k], np.inf))


def at_threshold(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Precision, recall (= TPR), F1 and FPR of ``score >= threshold`` on a labelled set.

    Keys ``precision``, ``recall``, ``F1``, ``FPR``, ``TPR``; a rate whose denominator is 0
    (no anomalous images; nothing flagged; no normal images) is NaN.
    """
    y, s = image_inputs(labels, scores)
    if not math.isfinite(threshold):
        return dict.fromkeys(("precision", "recall", "F1", "FPR", "TPR"), math.nan)
    pred = s >= threshold
    tp = float(np.sum(pred & y))
    fp = float(np.sum(pred & ~y))
    fn = float(np.sum(~pred & y))
    tn = float(np.sum(~pred & ~y))

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.nan

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "F1": f1,
            "FPR": ratio(fp, fp + tn), "TPR": recall}


def score_statistics(scores: Any) -> dict[str, float]:
    """``n``, ``mean``, ``std``, ``min``, ``max`` and the 0.5/0.9/0.99 quantiles of
    ``scores`` ``(n,)`` (NaN values for an empty set)."""
    s = np.asarray(as_numpy(scores), dtype=np.float64).reshape(-1)
    if s.size == 0:
        return {"n": 0.0, **dict.fromkeys(("mean", "std", "min", "max", "q50", "q90", "q99"),
                                          math.nan)}
    q50, q90, q99 = np.quantile(s, [0.5, 0.9, 0.99])
    return {"n": float(s.size), "mean": float(s.mean()), "std": float(s.std()),
            "min": float(s.min()), "max": float(s.max()),
            "q50": float(q50), "q90": float(q90), "q99": float(q99)}
