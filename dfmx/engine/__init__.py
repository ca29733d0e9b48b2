"""The DFM engine: PCA, the single-class Gaussian, ``DFMModel`` and the ``Dfm`` wrapper.

``DFMModel`` builds on the scorer plugins, which build on ``PCA``; it is imported on first
use so that ``dfmx.scorers`` can import ``dfmx.engine.pca`` without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dfmx.engine.gaussian import SingleClassGaussian
from dfmx.engine.pca import PCA

if TYPE_CHECKING:
    from dfmx.engine.torch_model import DFMModel, InferenceBatch

__all__ = ["PCA", "DFMModel", "InferenceBatch", "SingleClassGaussian"]


def __getattr__(name: str) -> Any:
    if name in ("DFMModel", "InferenceBatch"):
        from dfmx.engine import torch_model

        return getattr(torch_model, name)
    raise AttributeError(f"module 'dfmx.engine' has no attribute {name!r}")
