"""dfmx: Deep Feature Modeling (DFM) image anomaly detection experiments.

The public API mirrors anomalib's DFM: :class:`Dfm`, :class:`DFMModel`,
:class:`SingleClassGaussian`, plus :class:`PCA`. Names are imported on first use so that
``import dfmx`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dfmx.lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "PCA": "dfmx.engine.pca",
    "SingleClassGaussian": "dfmx.engine.gaussian",
    "DFMModel": "dfmx.engine.torch_model",
    "InferenceBatch": "dfmx.engine.torch_model",
    "Dfm": "dfmx.engine.lightning_model",
    "load_model": "dfmx.experiment.saved_model",
    "save_model": "dfmx.experiment.saved_model",
}

__all__ = [
    "PCA",
    "DFMModel",
    "Dfm",
    "InferenceBatch",
    "SingleClassGaussian",
    "__version__",
    "load_model",
    "save_model",
]

if TYPE_CHECKING:
    from dfmx.engine.gaussian import SingleClassGaussian
    from dfmx.engine.lightning_model import Dfm
    from dfmx.engine.pca import PCA
    from dfmx.engine.torch_model import DFMModel, InferenceBatch
    from dfmx.experiment.saved_model import load_model, save_model


__getattr__ = lazy_getattr(__name__, _EXPORTS)
