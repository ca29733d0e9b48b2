"""Feature reconstruction error (FRE): how badly the PCA subspace reconstructs a feature."""

from __future__ import annotations

from torch import Tensor

from dfmx.engine.pca import PCA
from dfmx.engine.scorer import ScoreOutput, Scorer


class FREScorer(Scorer):
    """``||x - x̂||²`` with ``x̂`` the PCA reconstruction of the feature ``x``.

    The squared error is kept per location and summed over channels, giving an anomaly map
    ``(N, 1, h, w)``; the image score is the sum of the map (the squared error of the whole
    flattened feature vector, as in the DFM and FRE papers). Nothing to fit beyond the PCA.
    """

    produces_maps = True

    def score(self, features: Tensor, pca: PCA) -> ScoreOutput:
        n, c, h, w = features.shape
        error = pca.reconstruction_error(features.reshape(n, -1))
        maps = error.reshape(n, c, h, w).sum(dim=1, keepdim=True)
        return ScoreOutput(scores=maps.sum(dim=(1, 2, 3)), maps=maps)
