"""compute_metrics: keys, consistency with the single metrics, undefined cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dfmx.metrics import (
    UndefinedMetricWarning,
    compute_metrics,
    f1_optimal,
    image_aupr,
    image_auroc,
    pixel_aupr,
    pixel_auroc,
    pro_auc,
)

IMAGE_KEYS = {"image_AUROC", "image_AUPR", "image_F1_oracle", "image_F1_oracle_threshold"}
PIXEL_KEYS = {"pixel_AUROC", "pixel_AUPR", "pixel_PRO"}


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 8, 8), dtype=bool)
    masks[3:, 2:5, 2:5] = True
    maps = rng.random(masks.shape) + masks
    labels = masks.any(axis=(1, 2))
    scores = maps.max(axis=(1, 2))
    return labels, scores, masks, maps


def test_all_keys_and_values() -> None:
    labels, scores, masks, maps = make_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_metrics(labels, scores, masks[:, None], maps)
    assert set(result) == IMAGE_KEYS | PIXEL_KEYS
    assert all(isinstance(v, float) for v in result.values())
    assert result["image_AUROC"] == image_auroc(labels, scores)
    assert result["image_AUPR"] == image_aupr(labels, scores)
    assert (result["image_F1_oracle"], result["image_F1_oracle_threshold"]) == f1_optimal(
        labels, scores)
    assert result["pixel_AUROC"] == pixel_auroc(masks, maps)
    assert result["pixel_AUPR"] == pixel_aupr(masks, maps)
    assert result["pixel_PRO"] == pro_auc(masks, maps)


def test_image_only() -> None:
    result = compute_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert set(result) == IMAGE_KEYS
    assert result["image_AUROC"] == pytest.approx(0.75)
    assert result["image_AUPR"] == pytest.approx(5 / 6)
    assert result["image_F1_oracle"] == pytest.approx(0.8)
    assert result["image_F1_oracle_threshold"] == pytest.approx(0.35)


def test_single_class_keeps_pixel_metrics() -> None:
    _, _, masks, maps = make_case()
    labels = np.ones(6)  # pretend every image is anomalous
    with pytest.warns(UndefinedMetricWarning, match="only anomalous images"):
        result = compute_metrics(labels, maps.max(axis=(1, 2)), masks, maps)
    assert all(np.isnan(result[k]) for k in IMAGE_KEYS)
    assert all(0.0 < result[k] <= 1.0 for k in PIXEL_KEYS)


def test_no_anomalous_pixels_keeps_image_metrics() -> None:
    labels, scores, masks, maps = make_case()
    with pytest.warns(UndefinedMetricWarning, match="no anomalous pixels") as record:
        result = compute_metrics(labels, scores, np.zeros_like(masks), maps)
    assert {str(w.message).split(" is")[0] for w in record} == {
        "pixel AUROC",
        "pixel AUPR",
        "pixel PRO",
    }
    assert set(result) == IMAGE_KEYS | PIXEL_KEYS
    assert all(np.isnan(result[k]) for k in PIXEL_KEYS)
    assert result["image_AUROC"] == pytest.approx(1.0)
    assert not any(np.isnan(result[k]) for k in IMAGE_KEYS)
