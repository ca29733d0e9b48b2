"""Input validation shared by all metrics."""

from __future__ import annotations

import numpy as np
import pytest

from dfmx.metrics import compute_metrics, image_auroc, pixel_auroc, pro_auc


def test_length_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"labels \(4,\) and scores \(3,\)"):
        image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3])


def test_two_dimensional_scores_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(4, 1\)"):
        image_auroc([0, 0, 1, 1], np.zeros((4, 1)))


def test_empty_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        image_auroc([], [])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_auroc([0, 1], [0.3, bad])


def test_non_finite_maps_rejected() -> None:
    maps = np.zeros((1, 2, 2))
    maps[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="maps contain 1 NaN or infinite"):
        pixel_auroc(np.eye(2)[None], maps)


def test_non_binary_labels_and_masks_rejected() -> None:
    with pytest.raises(ValueError, match="labels must be bool or 0/1"):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="masks must be bool or 0/1"):
        pixel_auroc(np.full((1, 2, 2), 255), np.zeros((1, 2, 2)))


def test_pixel_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"masks \(2, 4, 4\) and maps \(2, 4, 5\)"):
        pro_auc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"masks \(4, 4\) and maps \(4, 4\)"):
        pixel_auroc(np.eye(4), np.eye(4))


def test_mask_count_must_match_labels() -> None:
    masks = np.zeros((3, 2, 2))
    with pytest.raises(ValueError, match=r"masks \(3, 2, 2\), labels \(2,\)"):
        compute_metrics([0, 1], [0.1, 0.2], masks, masks)


def test_masks_without_maps_rejected() -> None:
    with pytest.raises(ValueError, match="masks were given without maps"):
        compute_metrics([0, 1], [0.1, 0.2], masks=np.zeros((2, 2, 2)))
