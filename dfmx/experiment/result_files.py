"""The run's tables: ``predictions.csv`` (one row per test image) and ``metrics.json``.

Inputs are plain arrays of one test set of ``N`` images (``labels`` ``(N,)`` in ``{0, 1}``,
``scores`` ``(N,)``, higher = more anomalous). Both files are written atomically
(:mod:`dfmx.atomic`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfmx.atomic import atomic_open
from dfmx.experiment.labelled_scores import as_labels_scores

__all__ = ["write_metrics_json", "write_predictions_csv"]


def write_predictions_csv(
    path: str | Path,
    paths: Sequence[str | Path],
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    defect_types: Sequence[str],
) -> Path:
    """Write one row per test image: ``path,defect_type,label,score,prediction``.

    Args:
        path: output ``.csv`` file.
        paths: ``N`` image paths.
        labels: ``(N,)`` ground truth in ``{0, 1}``.
        scores: ``(N,)`` anomaly scores, written with full (round-trip) precision.
        threshold: ``prediction = int(score >= threshold)`` (a NaN score predicts 0).
        defect_types: ``N`` defect type names (``good`` for normals in MVTec).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    lab, sco = as_labels_scores(labels, scores)
    if not len(paths) == len(defect_types) == len(lab):
        raise ValueError(
            f"lengths differ: paths {len(paths)}, defect_types {len(defect_types)}, "
            f"labels/scores {len(lab)}"
        )
    thr = float(threshold)
    with atomic_open(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "defect_type", "label", "score", "prediction"])
        for p, d, y, s in zip(paths, defect_types, lab, sco, strict=True):
            writer.writerow([str(p), str(d), int(y), repr(float(s)), int(bool(s >= thr))])
    return Path(path)


def _jsonable(value: Any) -> Any:
    """``value`` with NaN/inf → ``None``, numpy scalars/arrays → Python, paths → str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors and the like
        return _jsonable(value.item())
    return value


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` as strict JSON: sorted keys, 2-space indent, NaN/±inf as ``null``.

    Nested mappings and lists are allowed; numpy scalars and arrays are converted.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    text = json.dumps(_jsonable(metrics), sort_keys=True, indent=2, allow_nan=False)
    with atomic_open(path) as fh:
        fh.write(text + "\n")
    return Path(path)

