"""Pixel AUROC / AUPR on a hand-computed 2x2x2 case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfmx.metrics import UndefinedMetricWarning, pixel_aupr, pixel_auroc
from dfmx.metrics.pixel import _anomalous_region_weights, region_weights

# Anomalous pixels score 0.9 and 0.35; normal pixels 0.2, 0.3, 0.1, 0.4, 0.5, 0.6.
MASKS = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 1]]])
MAPS = np.array([[[0.9, 0.2], [0.3, 0.1]], [[0.4, 0.5], [0.6, 0.35]]])


def test_pixel_auroc_hand_case() -> None:
    # 0.9 beats all 6 normal pixels, 0.35 beats 3 of 6 -> 9 / 12.
    assert pixel_auroc(MASKS, MAPS) == pytest.approx(0.75)


def test_pixel_aupr_hand_case() -> None:
    # Descending: 0.9 (P=1, R=1/2), 0.6, 0.5, 0.4 normal, 0.35 (P=2/5, R=1).
    # AP = 1/2 * 1 + 1/2 * 2/5 = 0.7.
    assert pixel_aupr(MASKS, MAPS) == pytest.approx(0.7)


def test_channel_dim_and_torch_accepted() -> None:
    masks = torch.tensor(MASKS, dtype=torch.bool)[:, None]  # (N,1,H,W)
    maps = torch.tensor(MAPS, dtype=torch.float32)  # (N,H,W)
    assert pixel_auroc(masks, maps) == pytest.approx(0.75)
    assert pixel_aupr(masks, maps[:, None]) == pytest.approx(0.7)


def test_no_anomalous_pixels_is_nan_with_warning() -> None:
    with pytest.warns(UndefinedMetricWarning, match="pixel AUROC is undefined: .*no anomalous"):
        assert np.isnan(pixel_auroc(np.zeros_like(MASKS), MAPS))
    with pytest.warns(UndefinedMetricWarning, match="pixel AUPR is undefined: .*no normal"):
        assert np.isnan(pixel_aupr(np.ones_like(MASKS), MAPS))


def test_fast_pixel_metrics_equal_scikit_learn_with_ties() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from dfmx.metrics import pixel_aupr, pixel_auroc, pixel_auroc_aupr

    rng = np.random.default_rng(0)
    masks = rng.random((3, 20, 20)) < 0.1
    maps = np.round(rng.random((3, 20, 20)) + masks * 0.3, 1)  # many ties
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()),
                                                     abs=1e-12)
    assert pixel_aupr(masks, maps) == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert pixel_auroc_aupr(masks, maps) == (pixel_auroc(masks, maps), pixel_aupr(masks, maps))


def test_pixel_metrics_from_one_ranking_equal_the_separate_functions() -> None:
    from dfmx.metrics.pixel import pixel_auroc_aupr, pixel_metrics, pro_auc

    rng = np.random.default_rng(3)
    masks = rng.random((4, 16, 16)) < 0.08
    maps = np.round(rng.random((4, 16, 16)) + masks * 0.4, 2)  # ties
    auroc, aupr = pixel_auroc_aupr(masks, maps)
    assert pixel_metrics(masks, maps) == {
        "pixel_AUROC": auroc, "pixel_AUPR": aupr, "pixel_PRO": pro_auc(masks, maps)}
    with pytest.warns(UndefinedMetricWarning) as caught:
        undefined = pixel_metrics(np.zeros_like(masks), maps)
    assert [str(w.message) for w in caught] == [
        f"pixel {name} is undefined: the masks contain no anomalous pixels"
        for name in ("AUROC", "AUPR", "PRO")]
    assert all(np.isnan(v) for v in undefined.values()) and len(undefined) == 3


def test_region_weights_follow_the_masks_content_not_the_object() -> None:
    """The weights are remembered by the masks' content: the same array edited in place
    gets new weights, and the remembered ones cannot be edited by a caller."""
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:3, 1:3] = True
    first = region_weights(masks)
    assert first[0, 1, 1] == pytest.approx(1 / 4)  # one region of 4 pixels
    masks[1, 5:7, 5:8] = True  # a second region of 6 pixels, same array
    second = region_weights(masks)
    assert second[0, 1, 1] == pytest.approx(1 / 8) and second[1, 5, 5] == pytest.approx(1 / 12)
    assert second.sum() == pytest.approx(1.0)
    masks[1] = False
    assert np.array_equal(region_weights(masks), first)
    with pytest.raises(ValueError, match="read-only"):
        _anomalous_region_weights(masks)[0] = 0.0
