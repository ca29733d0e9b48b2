"""The scorer contract: what every built-in and plugin scorer implements.

A scorer turns pooled backbone features into anomaly scores, after dfmx has fitted a PCA on
the flattened training features. It is a ``torch.nn.Module`` so that its fitted state lives
in buffers, which dfmx saves with safetensors (no pickle) and restores with
``load_state_dict``. See ``docs/plugins.md`` for the full contract.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

from torch import Tensor

from dfmx.engine.fitted import FittedModule
from dfmx.engine.pca import PCA


class ScoreOutput(NamedTuple):
    """What :meth:`Scorer.score` returns.

    ``scores``: ``(N,)`` image scores, higher = more anomalous.
    ``maps``: ``(N, 1, h, w)`` anomaly maps on the feature grid, or ``None`` when the
    scorer gives image scores only. dfmx upsamples maps to the image size itself.
    """

    scores: Tensor
    maps: Tensor | None


@dataclasses.dataclass
class NoParams:
    """Hyperparameters of a scorer that has none."""


class Scorer(FittedModule):
    """Base class of scorers.

    Subclasses set ``Config`` to a dataclass of their hyperparameters (the fields become
    ``scorer.<field>`` options on the command line), take those fields as keyword
    arguments in ``__init__`` and store them unchanged, register their fitted state as
    buffers whose names end in ``_``, and implement :meth:`fit` and :meth:`score`.
    ``produces_maps`` says whether :meth:`score` returns pixel maps.
    """

    Config: ClassVar[type] = NoParams
    produces_maps: ClassVar[bool] = False

    def fit(self, features: Tensor, pca: PCA) -> Scorer:
        """Fit on the training features ``(N, C, h, w)`` given the fitted ``pca``.

        ``pca`` was fitted on ``features.flatten(1)``. Returns ``self``.
        """
        return self

    def score(self, features: Tensor, pca: PCA) -> ScoreOutput:
        """Score test features ``(N, C, h, w)``; see :class:`ScoreOutput`."""
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """The hyperparameters this scorer was built with, as a plain dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self.Config)}
