"""The DFM engine: PCA, the single-class Gaussian, ``DFMModel`` and the ``Dfm`` wrapper."""

from dfmx.engine.gaussian import SingleClassGaussian
from dfmx.engine.pca import PCA
from dfmx.engine.torch_model import DFMModel, InferenceBatch

__all__ = ["PCA", "DFMModel", "InferenceBatch", "SingleClassGaussian"]
