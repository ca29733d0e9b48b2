"""The DFM engine: PCA, the single-class Gaussian, the scorer contract, ``DFMModel``."""

from __future__ import annotations

from dfmx.engine.gaussian import SingleClassGaussian
from dfmx.engine.pca import PCA
from dfmx.engine.scorer import NoParams, ScoreOutput, Scorer
from dfmx.engine.torch_model import DFMModel, InferenceBatch

__all__ = [
    "PCA",
    "DFMModel",
    "InferenceBatch",
    "NoParams",
    "ScoreOutput",
    "Scorer",
    "SingleClassGaussian",
]
