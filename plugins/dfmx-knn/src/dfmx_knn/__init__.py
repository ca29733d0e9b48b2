"""k-nearest-neighbour scorer for dfmx (an example third-party plugin)."""

from dfmx_knn.scorer import KNNScorer

__all__ = ["KNNScorer"]
