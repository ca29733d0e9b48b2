"""Negative log-likelihood of the PCA coordinates under a Gaussian of the normal class."""

from __future__ import annotations

from torch import Tensor

from dfmx.engine.gaussian import SingleClassGaussian
from dfmx.engine.pca import PCA
from dfmx.engine.scorer import ScoreOutput, Scorer


class NLLScorer(Scorer):
    """Image score = ``-log N(z; μ, Σ)`` of the PCA coordinates ``z`` of a feature.

    The Gaussian is fitted on the training coordinates (centred once, via the SVD). Gives
    image scores only: asking for anomaly maps from it is an error.
    """

    produces_maps = False

    def __init__(self) -> None:
        super().__init__()
        self.gaussian = SingleClassGaussian()

    def fit(self, features: Tensor, pca: PCA) -> NLLScorer:
        coords = pca.transform(features.reshape(features.shape[0], -1))
        self.gaussian.fit(coords.T)
        return self

    def score(self, features: Tensor, pca: PCA) -> ScoreOutput:
        coords = pca.transform(features.reshape(features.shape[0], -1))
        return ScoreOutput(scores=self.gaussian.score_samples(coords), maps=None)
