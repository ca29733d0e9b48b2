"""Image scores from anomaly maps: the sum, the maximum or the mean of the top share.

The reductions work on the feature-grid map ``(N, 1, h, w)`` a scorer returns, not on the
image-size map: the grid is the resolution at which the scorer measures anything (the
image-size map is its bicubic interpolation, which adds no information but costs
``(H·W) / (h·w)`` times the work), and it does not change with ``image_size``'s upsampling.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["reduce_maps", "topk_count"]


def topk_count(cells: int, share: float) -> int:
    """How many of ``cells`` map cells the top ``share`` takes: ``ceil(share · cells)``, at
    least 1."""
    return max(1, min(cells, math.ceil(share * cells - 1e-9)))


def reduce_maps(maps: Tensor, how: str, share: float = 0.05) -> Tensor:
    """Image scores ``(N,)`` of maps ``(N, 1, h, w)`` (any ``(N, ...)`` works).

    ``how``: ``"sum"`` (all cells), ``"max"`` (the largest cell) or ``"topk"`` (the mean of
    the :func:`topk_count` largest cells, ``share`` of the map).
    """
    flat = maps.reshape(maps.shape[0], -1)
    if how == "sum":
        return flat.sum(dim=1)
    if how == "max":
        return flat.amax(dim=1)
    if how == "topk":
        return flat.topk(topk_count(flat.shape[1], share), dim=1).values.mean(dim=1)
    raise ValueError(f"reduction must be one of sum, max, topk; got {how!r}")
