"""What the pyfunc model answers per image: score, decision, and on request a small map.

Columns of the answer (one row per image, in request order):

* ``path``: the path as sent; empty for sent bytes.
* ``score``: the anomaly score (higher is more anomalous), as ``dfmx-predict`` gives it.
* ``threshold``: the model's saved decision threshold (``model.metadata["threshold"]``);
  ``None`` when the model has none.
* ``anomalous``: ``score >= threshold``; ``None`` without a threshold.
* with ``map="grid"`` or ``"both"``: ``map``, the anomaly map averaged over a
  ``map_size x map_size`` grid, a nested list ``[row][column]`` of floats.
* with ``map="png"`` or ``"both"``: ``map_png``, the anomaly map at the model's image size
  as a base64 8-bit grey PNG, 255 at ``map_max`` (the image's largest map value), so a
  pixel ``p`` stands for ``p / 255 * map_max``; and ``map_max``.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from PIL import Image

__all__ = ["MAP_CHOICES", "answer_table", "grid_map", "png_map"]

#: Values of the ``map`` parameter.
MAP_CHOICES = ("none", "grid", "png", "both")


def grid_map(anomaly_map: np.ndarray, size: int) -> list[list[float]]:
    """``anomaly_map (H, W)`` averaged over a ``size x size`` grid (adaptive average
    pooling), as nested lists."""
    import torch  # the served model has it loaded; logging the model needs none
    import torch.nn.functional as F

    pooled = F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(anomaly_map,
                                                                        dtype=np.float32))[None],
                                   (size, size))[0]
    return [[float(v) for v in row] for row in pooled.tolist()]


def png_map(anomaly_map: np.ndarray) -> tuple[str, float]:
    """``anomaly_map (H, W)`` as a base64 8-bit grey PNG scaled to its maximum; returns
    ``(png_base64, maximum)``."""
    top = float(np.max(anomaly_map)) if anomaly_map.size else 0.0
    scale = 255.0 / top if top > 0 else 0.0
    pixels = np.clip(np.rint(anomaly_map * scale), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), top


def answer_table(paths: list[str], scores: np.ndarray, threshold: float,
                 maps: np.ndarray | None, map_choice: str, map_size: int) -> pd.DataFrame:
    """The answer for ``scores (N,)`` and ``maps (N, H, W)`` (needed unless
    ``map_choice == "none"``); see the module docstring for the columns."""
    known = not math.isnan(threshold)
    table = pd.DataFrame({
        "path": paths,
        "score": [float(s) for s in scores],
        "threshold": [threshold if known else None] * len(paths),
        "anomalous": [bool(s >= threshold) if known else None for s in scores],
    })
    if map_choice in ("grid", "both"):
        table["map"] = [grid_map(m, map_size) for m in maps]
    if map_choice in ("png", "both"):
        encoded = [png_map(m) for m in maps]
        table["map_png"] = [text for text, _ in encoded]
        table["map_max"] = [top for _, top in encoded]
    return table
