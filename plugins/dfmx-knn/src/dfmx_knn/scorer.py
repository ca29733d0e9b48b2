"""Anomaly score = mean distance to the k nearest training images in PCA coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dfmx.engine.pca import PCA
from dfmx.engine.scorer import ScoreOutput, Scorer


class KNNScorer(Scorer):
    """Mean Euclidean distance from an image's PCA coordinates to its ``n_neighbors``
    nearest training images (optionally whitened by the component variances).

    Image scores only (no maps). Higher = more anomalous.
    """

    @dataclass
    class Config:
        n_neighbors: int = 5
        whiten: bool = False

    produces_maps = False

    def __init__(self, n_neighbors: int = 5, whiten: bool = False) -> None:
        super().__init__()
        if n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1; got {n_neighbors}")
        self.n_neighbors = n_neighbors
        self.whiten = whiten
        self.register_buffer("train_coords_", torch.empty(0))

    def _coords(self, features: Tensor, pca: PCA) -> Tensor:
        coords = pca.transform(features.reshape(features.shape[0], -1))
        if self.whiten:
            coords = coords / pca.explained_variance_.clamp_min(1e-12).sqrt()
        return coords

    def fit(self, features: Tensor, pca: PCA) -> KNNScorer:
        self.train_coords_ = self._coords(features, pca)
        return self

    def score(self, features: Tensor, pca: PCA) -> ScoreOutput:
        if self.train_coords_.numel() == 0:
            raise RuntimeError("KNNScorer is not fitted")
        dist = torch.cdist(self._coords(features, pca), self.train_coords_)
        k = min(self.n_neighbors, self.train_coords_.shape[0])
        nearest = dist.topk(k, dim=1, largest=False).values
        return ScoreOutput(scores=nearest.mean(dim=1), maps=None)
