"""Pixel-level anomaly segmentation metrics: pixel AUROC, pixel AUPR and PRO-AUC.

Convention: higher map value = more anomalous; mask 1 = anomalous pixel. Masks and maps are
(N,H,W) or (N,1,H,W). Pixels of all images are pooled. Metrics that need both normal and
anomalous pixels return NaN and emit an ``UndefinedMetricWarning`` when one kind is missing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from scipy import ndimage

from dfmx.memo import Memo
from dfmx.metrics.inputs import pixel_inputs
from dfmx.metrics.ranking import Ranking, ranked_areas
from dfmx.metrics.undefined import warn_undefined

# 8-connectivity within each image, no connection between images of the (N,H,W) stack.
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True


def _two_class_reason(masks: np.ndarray) -> str | None:
    """Why the (N,H,W) bool ``masks`` cannot support a pixel metric, or None if they can."""
    if not masks.any():
        return "the masks contain no anomalous pixels"
    if masks.all():
        return "the masks contain no normal pixels"
    return None


def pixel_auroc_aupr(masks: Any, maps: Any) -> tuple[float, float]:
    """Pixel AUROC and AUPR from one sort of all pixels (see :func:`pixel_auroc`)."""
    m, a = pixel_inputs(masks, maps)
    auroc, aupr = ranked_areas("pixel", m, a, _two_class_reason(m), "AUROC", "AUPR")
    return auroc, aupr


def pixel_auroc(masks: Any, maps: Any) -> float:
    """ROC AUC over all pixels of all images.

    Args:
        masks: (N,H,W) or (N,1,H,W) bool or 0/1 ground truth.
        maps: anomaly maps of the same shape (the channel dim may differ in presence).

    Returns:
        Pixel AUROC in [0, 1]; NaN (with a warning) without both pixel kinds.
    """
    m, a = pixel_inputs(masks, maps)
    return ranked_areas("pixel", m, a, _two_class_reason(m), "AUROC")[0]


def pixel_aupr(masks: Any, maps: Any) -> float:
    """Average precision (area under the precision-recall curve) over all pixels.

    Args:
        masks: (N,H,W) or (N,1,H,W) bool or 0/1 ground truth.
        maps: anomaly maps of the same shape.

    Returns:
        Pixel AUPR in [0, 1]; NaN (with a warning) without both pixel kinds.
    """
    m, a = pixel_inputs(masks, maps)
    return ranked_areas("pixel", m, a, _two_class_reason(m), "AUPR")[0]


#: Region weights of the last few mask stacks, by content: every job of a sweep has the
#: same test masks, and labelling their regions costs far more than hashing them.
_REGION_WEIGHTS: Memo[np.ndarray] = Memo(4)


def _anomalous_region_weights(masks: np.ndarray) -> np.ndarray:
    """:func:`region_weights` of the anomalous pixels only, in ``masks[masks]`` order
    (read-only; remembered for the last few mask stacks)."""
    masks = np.ascontiguousarray(masks, dtype=bool)

    def label() -> np.ndarray:
        weights = _label_region_weights(masks)
        weights.flags.writeable = False
        return weights

    key = (masks.shape, hashlib.sha256(masks.view(np.uint8)).digest())
    return _REGION_WEIGHTS.get(key, label)


def _label_region_weights(masks: np.ndarray) -> np.ndarray:
    labelled, num_regions = ndimage.label(masks, structure=_IN_PLANE_8)
    regions = labelled[masks]
    sizes = np.bincount(regions, minlength=num_regions + 1)
    per_region = np.zeros(sizes.shape, dtype=np.float64)
    per_region[1:] = 1.0 / (num_regions * sizes[1:])  # every label has a pixel
    return per_region[regions]


def region_weights(masks: np.ndarray) -> np.ndarray:
    """Per-pixel weights whose sum over detected pixels is the PRO (mean region overlap).

    Regions are the 8-connected components of each image's mask. A pixel of region r gets
    ``1 / (num_regions * size_r)``; normal pixels get 0.

    Args:
        masks: (N,H,W) bool.

    Returns:
        (N,H,W) float64 weights summing to 1 (when any region exists).
    """
    weights = np.zeros(masks.shape, dtype=np.float64)
    weights[masks] = _anomalous_region_weights(masks)
    return weights


def _ranked_with_regions(masks: np.ndarray, maps: np.ndarray) -> Ranking:
    """The pixels ranked with their PRO region weights (:func:`region_weights`)."""
    return Ranking(masks, maps, _anomalous_region_weights(masks))


def _pro_curve(
    pixels: Ranking, num_thresholds: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pro_curve` of pixels ranked with their region weights."""
    if num_thresholds is not None and num_thresholds < 2:
        raise ValueError(f"num_thresholds must be None or >= 2, got {num_thresholds}")
    if num_thresholds is None:
        # PRO only changes at anomalous scores, so between two consecutive distinct anomalous
        # scores the curve is a horizontal segment: its corner points at each such score u are
        # (FPR(map > u), PRO(map > u)) and (FPR(map >= u), PRO(map >= u)). Points in between
        # are collinear and do not change the trapezoid area or the value at the FPR limit.
        fpr_above, pro_above, fpr_at, pro_at = pixels.corners()
        fpr = np.stack([fpr_above, fpr_at], axis=1).ravel()
        pro = np.stack([pro_above, pro_at], axis=1).ravel()
        # Lowest threshold: every pixel is above it.
        fpr, pro = np.append(fpr, 1.0), np.append(pro, 1.0)
    else:
        positions = np.linspace(pixels.n_all - 1, 0, num_thresholds).round().astype(np.int64)
        fpr, pro = pixels.at(np.unique(pixels.all[positions])[::-1])
    return np.concatenate(([0.0], fpr)), np.concatenate(([0.0], pro))


def pro_curve(
    masks: Any, maps: Any, num_thresholds: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The PRO curve (FPR, PRO) over decreasing thresholds, starting at (0, 0).

    For a threshold t, PRO(t) is the mean over all regions (8-connected components of each
    image's mask) of all images of the fraction of the region's pixels with map >= t, and FPR(t)
    the fraction of normal pixels (of all images) with map >= t.

    With ``num_thresholds=None`` the curve is exact: it holds the corner points of the curve
    over every distinct map value (points on horizontal stretches, where only normal pixels
    cross the threshold, are omitted because they are collinear). All scores and the anomalous
    ones are sorted once and both curves are read from counts / suffix sums via
    ``searchsorted``. With an integer,
    the thresholds are ``num_thresholds`` evenly spaced order statistics (quantiles) of all map
    values, and the curve is exact at those thresholds.

    Args:
        masks: (N,H,W) or (N,1,H,W) bool or 0/1, with both normal and anomalous pixels.
        maps: anomaly maps of the same shape.
        num_thresholds: None for the exact curve, else the number of quantile thresholds.

    Returns:
        ``(fpr, pro)``, both (K,) float64, FPR nondecreasing from 0 to 1, first point (0, 0).
    """
    m, a = pixel_inputs(masks, maps)
    reason = _two_class_reason(m)
    if reason:
        raise ValueError(f"the PRO curve is undefined: {reason}")
    return _pro_curve(_ranked_with_regions(m, a), num_thresholds)


def truncated_area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Trapezoid area under a curve from FPR 0 to ``fpr_limit``, divided by ``fpr_limit``.

    The curve is linearly interpolated exactly at ``fpr_limit``.

    Args:
        fpr: (K,) nondecreasing, starting at 0.
        pro: (K,) curve values.
        fpr_limit: upper integration limit in (0, 1].

    Returns:
        The normalised area (1.0 for a curve that is 1 on (0, fpr_limit]).
    """
    k = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit
    x, y = fpr[:k], pro[:k]
    if k < fpr.size:
        f0, f1, p0, p1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        at_limit = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
        x, y = np.append(x, fpr_limit), np.append(y, at_limit)
    return float(np.trapezoid(y, x) / fpr_limit)


def pro_auc(
    masks: Any, maps: Any, fpr_limit: float = 0.3, num_thresholds: int | None = None
) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to ``fpr_limit``.

    See :func:`pro_curve` for the curve and the threshold choice (exact by default). The area
    from FPR 0 to ``fpr_limit`` (trapezoid, curve interpolated at the limit) is divided by
    ``fpr_limit``, so a perfect detector scores 1.0 and a random one about ``fpr_limit / 2``.

    Args:
        masks: (N,H,W) or (N,1,H,W) bool or 0/1 ground truth.
        maps: anomaly maps of the same shape.
        fpr_limit: integration limit in (0, 1].
        num_thresholds: None (default) for the exact curve at every distinct map value; an int
            for that many quantile thresholds.

    Returns:
        PRO-AUC in [0, 1]; NaN (with a warning) without both pixel kinds.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    m, a = pixel_inputs(masks, maps)
    reason = _two_class_reason(m)
    if reason:
        return warn_undefined(f"pixel PRO is undefined: {reason}")
    fpr, pro = _pro_curve(_ranked_with_regions(m, a), num_thresholds)
    return truncated_area(fpr, pro, fpr_limit)


def pixel_metrics(masks: Any, maps: Any, fpr_limit: float = 0.3) -> dict[str, float]:
    """``pixel_AUROC``, ``pixel_AUPR`` and ``pixel_PRO`` (exact, to ``fpr_limit``) from one
    ranking of the pixels: what :func:`pixel_auroc_aupr` and :func:`pro_auc` give, for
    the price of one of them. NaN (with a warning each) without both pixel kinds."""
    m, a = pixel_inputs(masks, maps)
    reason = _two_class_reason(m)
    if reason:
        return {f"pixel_{name}": warn_undefined(f"pixel {name} is undefined: {reason}")
                for name in ("AUROC", "AUPR", "PRO")}
    ranked = _ranked_with_regions(m, a)
    return {"pixel_AUROC": ranked.auroc(), "pixel_AUPR": ranked.average_precision(),
            "pixel_PRO": truncated_area(*_pro_curve(ranked, None), fpr_limit)}
