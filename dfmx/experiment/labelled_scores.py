"""The labels and scores of one test set, checked once for every file written from them."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_labels_scores"]


def as_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as int ``(N,)`` and ``scores`` as float64 ``(N,)``; same length checked."""
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    sco = np.asarray(scores, dtype=np.float64).reshape(-1)
    if lab.shape != sco.shape:
        raise ValueError(f"labels {lab.shape} and scores {sco.shape} differ in length")
    bad = ~np.isin(lab, (0, 1))
    if bad.any():
        raise ValueError(f"labels must be 0 or 1, got {np.unique(lab[bad]).tolist()}")
    return lab, sco

