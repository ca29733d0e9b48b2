"""The DFM engine: PCA, the single-class Gaussian, the scorer contract, ``DFMModel``.

The names below are imported on first use, so that ``dfmx.engine.model_config`` (the
model record, plain data) can be read without importing torch, as the command line's
``--help`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dfmx.lazy import lazy_getattr

if TYPE_CHECKING:
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

#: The module of each exported name.
_MODULES = {
    "PCA": "dfmx.engine.pca",
    "DFMModel": "dfmx.engine.torch_model",
    "InferenceBatch": "dfmx.engine.torch_model",
    "NoParams": "dfmx.engine.scorer",
    "ScoreOutput": "dfmx.engine.scorer",
    "Scorer": "dfmx.engine.scorer",
    "SingleClassGaussian": "dfmx.engine.gaussian",
}


__getattr__ = lazy_getattr(__name__, _MODULES)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
