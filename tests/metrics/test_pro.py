"""PRO-AUC: hand-integrated cases and a slow direct reference implementation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from dfmx.metrics import UndefinedMetricWarning, pro_auc, pro_curve
from dfmx.metrics.pixel import region_weights


def slow_pro_auc(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """Direct definition: loop over every distinct threshold and every region."""
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labelled == r] for r in range(1, count + 1)]
    normal = maps[masks == 0]
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pro = np.mean([np.mean(region >= t) for region in regions])
        points.append((np.mean(normal >= t), pro))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def blob_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, size, size) bool masks with a few random blobs each, the first image normal."""
    noise = ndimage.gaussian_filter(rng.random((n, size, size)), (0, 1.5, 1.5))
    masks = noise > np.quantile(noise, 0.85)
    masks[0] = False
    return masks


def test_perfect_detector_is_one() -> None:
    masks = blob_masks(np.random.default_rng(0), 4, 16)
    assert pro_auc(masks, masks.astype(float)) == pytest.approx(1.0)


def test_half_detected_region_is_one_half() -> None:
    # One 2x2 region: two pixels above every normal pixel, two below -> PRO = 0.5 at all FPR.
    rng = np.random.default_rng(1)
    maps = rng.random((1, 6, 6))
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, :2, :2] = True
    maps[0, 0, :2] = 10.0
    maps[0, 1, :2] = -10.0
    assert pro_auc(masks, maps) == pytest.approx(0.5)


def test_vertical_and_diagonal_jumps_by_hand() -> None:
    # Ten normal pixels 0.0 .. 0.9 and a one-pixel region.
    normal = np.arange(10) / 10
    masks = np.zeros((1, 1, 11), dtype=bool)
    masks[0, 0, 10] = True
    maps = np.append(normal, 0.75)[None, None]
    # Region at 0.75: PRO jumps 0 -> 1 at FPR 0.2. Area to 0.3 = 0.1 -> 1/3.
    assert pro_auc(masks, maps) == pytest.approx(1 / 3)
    # Region tied with the normal 0.8: diagonal from (0.1, 0) to (0.2, 1).
    # Area = 0.05 + 0.1 = 0.15 -> 0.5; with limit 0.15 the curve is interpolated at 0.5:
    # area 0.05 * 0.25 = 0.0125 -> 1/12.
    maps[0, 0, 10] = 0.8
    assert pro_auc(masks, maps) == pytest.approx(0.5)
    assert pro_auc(masks, maps, fpr_limit=0.15) == pytest.approx(1 / 12)
    assert pro_auc(masks, maps, fpr_limit=0.15, num_thresholds=11) == pytest.approx(1 / 12)


def test_regions_are_averaged_not_pixels() -> None:
    # Row [A . B B B . . .]: regions A (1 pixel) and B (3 pixels), four normal pixels.
    masks = np.array([[[1, 0, 1, 1, 1, 0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.95, 0.1, 0.05, 0.4, 0.3, 0.2]]])
    # Above all normal pixels: A fully, B one third -> PRO = (1 + 1/3) / 2 = 2/3 for all FPR < 1.
    # (Pooling pixels would give 2/4.)
    assert pro_auc(masks, maps, fpr_limit=1.0) == pytest.approx(2 / 3)


def test_eight_connectivity() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region of 2
    masks[1, 3, 3] = True  # a region of 1 in another image
    weights = region_weights(masks)
    assert weights[0, 0, 0] == pytest.approx(1 / 4)
    assert weights[1, 3, 3] == pytest.approx(1 / 2)
    assert weights.sum() == pytest.approx(1.0)


def test_random_detector_is_about_limit_over_two() -> None:
    rng = np.random.default_rng(2)
    masks = blob_masks(rng, 20, 64)
    assert pro_auc(masks, rng.random(masks.shape)) == pytest.approx(0.15, abs=0.01)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_matches_slow_reference(seed: int, fpr_limit: float) -> None:
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, 3, 12)
    signal = ndimage.gaussian_filter(masks.astype(float), (0, 1, 1))
    maps = signal + rng.random(masks.shape)
    if seed % 2:
        maps = np.round(maps * 4)  # heavy ties between and within both pixel kinds
    expected = slow_pro_auc(masks, maps, fpr_limit)
    assert pro_auc(masks, maps, fpr_limit) == pytest.approx(expected, abs=1e-12)
    # Enough quantile thresholds to hit every distinct value: the same curve.
    sampled = pro_auc(masks, maps, fpr_limit, num_thresholds=masks.size)
    assert sampled == pytest.approx(expected, abs=1e-12)


def test_sampled_thresholds_close_to_exact() -> None:
    rng = np.random.default_rng(4)
    masks = blob_masks(rng, 8, 64)
    maps = ndimage.gaussian_filter(masks.astype(float), (0, 2, 2)) + 0.3 * rng.random(masks.shape)
    exact = pro_auc(masks, maps)
    assert pro_auc(masks, maps, num_thresholds=2000) == pytest.approx(exact, abs=2e-3)


def test_curve_endpoints() -> None:
    rng = np.random.default_rng(5)
    masks = blob_masks(rng, 3, 16)
    fpr, pro = pro_curve(masks, rng.random(masks.shape))
    assert (fpr[0], pro[0]) == (0.0, 0.0)
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)


def test_undefined_and_invalid_arguments() -> None:
    maps = np.random.default_rng(6).random((2, 4, 4))
    with pytest.warns(UndefinedMetricWarning, match="pixel PRO is undefined: .*no anomalous"):
        assert np.isnan(pro_auc(np.zeros((2, 4, 4)), maps))
    with pytest.raises(ValueError, match="no anomalous"):
        pro_curve(np.zeros((2, 4, 4)), maps)
    masks = np.zeros((2, 4, 4))
    masks[1, 1, 1] = 1
    with pytest.raises(ValueError, match="fpr_limit"):
        pro_auc(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match="num_thresholds"):
        pro_auc(masks, maps, num_thresholds=1)
