"""Ranking metrics from one sort: ROC AUC, average precision, best F1 and the curves.

Image metrics rank a test set's scores, pixel metrics all its pixels; both go through
:class:`Ranking`. Higher score = more anomalous; a threshold ``t`` flags ``score >= t``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dfmx.metrics.undefined import warn_undefined


class Ranking:
    """All scores sorted once, the positive (anomalous) ones sorted apart: every metric is
    then read with ``searchsorted`` at the distinct positive scores only.

    Only thresholds at positive scores matter: recall only rises there, precision and F1
    only fall between two of them, and a weighted recall (the PRO) only changes there.
    Two value sorts and searches for the positive scores replace per-score curve arrays,
    which keeps pixel metrics over millions of pixels cheap. Counts are exact integers, so
    ties cost nothing and need no tolerance.

    Args:
        positive: bool, True = anomalous; any shape.
        scores: float scores of the same shape.
        weights: optional weights of the positives, in ``scores[positive]`` order (the PRO's
            region weights); they are sorted with the positive scores and summed from the
            top, for :meth:`corners` and :meth:`at`.
    """

    def __init__(self, positive: np.ndarray, scores: np.ndarray,
                 weights: np.ndarray | None = None) -> None:
        flat, is_positive = scores.ravel(), positive.ravel()
        self.all = np.sort(flat)
        positives = flat[is_positive]
        if weights is not None:
            order = np.argsort(positives, kind="stable")
            ordered = weights[order]
            # suffix[i]: weight of the i-th smallest positive score and all above it.
            self.suffix = np.append(np.cumsum(ordered[::-1])[::-1], 0.0)
            self.positive = positives[order]
        else:
            self.positive = np.sort(positives)
        self.n_all, self.n_pos = self.all.size, self.positive.size
        self.n_neg = self.n_all - self.n_pos
        # Runs of equal positive scores: their values (ascending) and [start, end) indices.
        starts = np.flatnonzero(np.r_[True, self.positive[1:] != self.positive[:-1]])
        self.values = self.positive[starts]
        self.run_start, self.run_end = starts, np.r_[starts[1:], self.n_pos]
        # All scores below / at or below each distinct positive score.
        self.all_below = np.searchsorted(self.all, self.values, side="left")
        self.all_at_or_below = np.searchsorted(self.all, self.values, side="right")

    def auroc(self) -> float:
        """Trapezoidal ROC AUC = the Mann-Whitney statistic with ties counted half, exact
        in integers: each positive scores the negatives below it, plus half of those
        equal to it."""
        count = self.run_end - self.run_start
        negative_below = self.all_below - self.run_start
        negative_equal = (self.all_at_or_below - self.all_below) - count
        twice_u = int(np.sum(count * (2 * negative_below + negative_equal)))
        return twice_u / (2.0 * self.n_pos * self.n_neg)

    def average_precision(self) -> float:
        """Average precision (area under the precision-recall curve): at each distinct
        positive score, descending, the recall gained times the precision of
        ``score >= it``."""
        count = (self.run_end - self.run_start).astype(np.float64)
        true_pos = (self.n_pos - self.run_start).astype(np.float64)
        flagged = self.n_all - self.all_below
        return float(np.sum(count[::-1] * (true_pos / flagged)[::-1]) / self.n_pos)

    def f1_optimal(self) -> tuple[float, float]:
        """The best F1 of ``score >= t`` over all thresholds, and the lowest ``t`` giving it.

        F1 = 2 TP / (flagged + positives): exact ties in F1 are equal floats."""
        true_pos = self.n_pos - self.run_start
        flagged = self.n_all - self.all_below
        f1 = 2.0 * true_pos / (flagged + self.n_pos)
        best = int(np.argmax(f1))  # values ascend: the first maximum is the lowest threshold
        return float(f1[best]), float(self.values[best])

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) of ``score >= t`` at every distinct score ``t``, descending, after
        the (0, 0) of a threshold above them all; ends at (1, 1)."""
        thresholds = np.unique(self.all)[::-1]
        flagged = self.n_all - np.searchsorted(self.all, thresholds, side="left")
        true_pos = self.n_pos - np.searchsorted(self.positive, thresholds, side="left")
        fpr = (flagged - true_pos) / self.n_neg
        return np.r_[0.0, fpr], np.r_[0.0, true_pos / self.n_pos]

    def corners(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(FPR, weighted recall) for ``score > u`` and for ``score >= u`` at each distinct
        positive score u, descending: ``(fpr_above, recall_above, fpr_at, recall_at)``.
        Needs ``weights``."""
        def fpr_recall(all_below: np.ndarray, positive_below: np.ndarray):
            negative_flagged = (self.n_all - all_below) - (self.n_pos - positive_below)
            return (negative_flagged / self.n_neg)[::-1], self.suffix[positive_below][::-1]

        return (*fpr_recall(self.all_at_or_below, self.run_end),
                *fpr_recall(self.all_below, self.run_start))

    def at(self, thresholds: np.ndarray, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, weighted recall) for ``score >= t`` (or ``score > t`` with ``strict``);
        thresholds (K,) -> two (K,). Needs ``weights``."""
        side = "right" if strict else "left"
        positive_below = np.searchsorted(self.positive, thresholds, side=side)
        all_below = np.searchsorted(self.all, thresholds, side=side)
        negative_flagged = (self.n_all - all_below) - (self.n_pos - positive_below)
        return negative_flagged / self.n_neg, self.suffix[positive_below]


#: The area metrics :func:`ranked_areas` reads, by the name its messages give them.
_AREAS: dict[str, Callable[[Ranking], float]] = {
    "AUROC": Ranking.auroc, "AUPR": Ranking.average_precision}


def ranked_areas(level: str, positive: np.ndarray, scores: np.ndarray, undefined: str | None,
                 *names: str) -> tuple[float, ...]:
    """The area metrics ``names`` (``"AUROC"``, ``"AUPR"``) of ``scores`` against
    ``positive`` (checked arrays of one shape), from one sort.

    ``undefined`` says why they cannot be computed (one class only), or is ``None``: then
    each is NaN with an ``UndefinedMetricWarning`` "``level`` ``name`` is undefined:
    ``undefined``" (``level``: ``"image"`` or ``"pixel"``).
    """
    if undefined:
        nans = []
        for name in names:  # stacklevel 4: the line that called the metric function
            nans.append(warn_undefined(f"{level} {name} is undefined: {undefined}", 4))
        return tuple(nans)
    ranking = Ranking(positive, scores)
    return tuple(_AREAS[name](ranking) for name in names)
