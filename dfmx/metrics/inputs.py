"""Conversion and validation of metric inputs (numpy arrays or torch tensors)."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any) -> np.ndarray:
    """Convert a numpy array, torch tensor or sequence to a numpy array (no copy when possible).

    Torch tensors are detached and moved to the CPU; half-precision floats are widened to
    float32 because numpy has no bfloat16.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _check_binary(values: np.ndarray, what: str) -> np.ndarray:
    """Return ``values`` as a bool array; ValueError unless every value is 0/1 (or bool)."""
    if values.dtype == np.bool_:
        return values
    if values.size and not np.isin(values, (0, 1)).all():
        found = np.unique(values)[:5]
        raise ValueError(f"{what} must be bool or 0/1 (1 = anomalous), found values {found}")
    return values.astype(bool)


def _check_scores(values: np.ndarray, what: str) -> np.ndarray:
    """Return ``values`` as a float array; ValueError on non-numeric, NaN or inf entries."""
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real, got dtype {values.dtype}")
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if not np.isfinite(values).all():
        bad = int(np.size(values) - np.isfinite(values).sum())
        raise ValueError(f"{what} contain {bad} NaN or infinite value(s)")
    return values


def image_inputs(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate image-level inputs.

    Args:
        labels: (N,) bool or 0/1, 1 = anomalous.
        scores: (N,) finite anomaly scores, higher = more anomalous.

    Returns:
        ``(labels, scores)`` as (N,) bool and (N,) float arrays.
    """
    y, s = as_numpy(labels), as_numpy(scores)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(
            f"labels and scores must both have shape (N,), got labels {y.shape} "
            f"and scores {s.shape}"
        )
    if y.size == 0:
        raise ValueError("labels and scores are empty")
    return _check_binary(y, "labels"), _check_scores(s, "scores")


def _squeeze_channel(x: np.ndarray) -> np.ndarray:
    """(N,1,H,W) -> (N,H,W); other shapes unchanged."""
    return x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x


def pixel_inputs(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate pixel-level inputs.

    ``masks`` and ``maps`` may each be (N,H,W) or (N,1,H,W); the singleton channel is dropped,
    so e.g. (N,1,H,W) masks with (N,H,W) maps are accepted.

    Args:
        masks: (N,H,W) or (N,1,H,W) bool or 0/1 ground truth, 1 = anomalous pixel.
        maps: (N,H,W) or (N,1,H,W) finite anomaly maps, higher = more anomalous.

    Returns:
        ``(masks, maps)`` as (N,H,W) bool and (N,H,W) float arrays.
    """
    m_raw, a_raw = as_numpy(masks), as_numpy(maps)
    m, a = _squeeze_channel(m_raw), _squeeze_channel(a_raw)
    if m.ndim != 3 or a.ndim != 3 or m.shape != a.shape:
        raise ValueError(
            "masks and maps must both have shape (N,H,W) or (N,1,H,W) with equal N, H, W, "
            f"got masks {m_raw.shape} and maps {a_raw.shape}"
        )
    if m.size == 0:
        raise ValueError(f"masks and maps are empty: shape {m_raw.shape}")
    return _check_binary(m, "masks"), _check_scores(a, "maps")
