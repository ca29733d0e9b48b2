"""Per-layer ensembles: one PCA and one scorer per feature layer, their scores standardised
and summed.

A :class:`LayerEnsemble` receives the layers' pooled maps on one common grid, concatenated
along channels ``(N, C_1 + … + C_L, h, w)`` (what ``DFMModel.pool_and_fuse`` gives for
``combine="ensemble"``), and splits them back by channel counts. Member ``i`` scores its
slice with its own PCA and scorer; then

* image score ``= Σ_i (s_i - mean_i) / std_i``, with ``s_i`` the member's image score
  (after the model's reduction) and ``mean_i``, ``std_i`` those of validation normals;
* map ``= Σ_i m_i / mapstd_i``, with ``mapstd_i`` the standard deviation of the member's
  map values on validation normals. The maps' means are left out: a common shift changes
  no ranking of pixels, and the maps stay non-negative like every error map (dfmx
  upsamples maps with a clamp at 0). All members share the grid, so no resizing.

Calibration. :meth:`LayerEnsemble.calibrate` sets the statistics from validation normals.
Until it is called, :meth:`LayerEnsemble.fit` leaves the statistics of the training images
themselves, which are biased (each PCA is fitted on them: their errors are smaller and
less spread than a new normal image's, by a different amount per layer); scoring then
warns once (``UncalibratedEnsembleWarning``). ``calibrated_`` records which statistics a
(saved) model holds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dfmx.engine.fitted import FittedModule
from dfmx.engine.pca import PCA
from dfmx.engine.reduction import reduce_maps
from dfmx.engine.scorer import Scorer
from dfmx.errors import DataError

__all__ = ["LayerEnsemble", "UncalibratedEnsembleWarning"]

# A standard deviation below this is taken as this (a member whose scores do not vary).
_MIN_STD = 1e-12


class UncalibratedEnsembleWarning(UserWarning):
    """An ensemble scores with the statistics of its training images (no ``calibrate``)."""


class _Member(nn.Module):
    """One layer's PCA and scorer."""

    def __init__(self, pca: PCA, scorer: Scorer) -> None:
        super().__init__()
        self.pca_model = pca
        self.scorer = scorer


class LayerEnsemble(FittedModule):
    """One PCA + scorer per layer; scores standardised by validation normals and summed.

    Args:
        n_layers: the number of members.
        make_pca: builds a member's (unfitted) PCA.
        make_scorer: builds a member's (unfitted) scorer.
        reduction, share: how a member's map becomes its image score
            (:func:`~dfmx.engine.reduction.reduce_maps`); ``"sum"`` keeps the scorer's own.

    Fitted buffers: ``channels_ (L,)`` the members' channel counts; ``score_mean_``,
    ``score_std_``, ``map_std_`` ``(L,)`` the standardising statistics (``map_std_`` is
    all ones when a member gives no maps); ``calibrated_ ()`` 1 after :meth:`calibrate`,
    0 with training statistics.
    """

    def __init__(self, n_layers: int, make_pca: Callable[[], PCA],
                 make_scorer: Callable[[], Scorer], reduction: str = "sum",
                 share: float = 0.05) -> None:
        super().__init__()
        self.members = nn.ModuleList(_Member(make_pca(), make_scorer()) for _ in range(n_layers))
        self.reduction, self.share = reduction, share
        for name in ("channels_", "score_mean_", "score_std_", "map_std_", "calibrated_"):
            self.register_buffer(name, torch.zeros(0))
        self._warned = False

    @property
    def produces_maps(self) -> bool:
        """Whether every member's scorer gives maps (else the ensemble gives none)."""
        return all(m.scorer.produces_maps for m in self.members)

    @property
    def is_fitted(self) -> bool:
        return self.channels_.numel() == len(self.members)

    @property
    def is_calibrated(self) -> bool:
        return self.calibrated_.numel() == 1 and bool(self.calibrated_ > 0)

    @property
    def n_components(self) -> int:
        """The members' PCA components, all together."""
        return sum(m.pca_model.n_components_ for m in self.members)

    def _split(self, features: Tensor) -> list[Tensor]:
        """The members' slices ``(N, C_i, h, w)`` of ``features (N, ΣC, h, w)``."""
        return list(torch.split(features, [int(c) for c in self.channels_], dim=1))

    def member_outputs(self, features: Tensor) -> list[tuple[Tensor, Tensor | None]]:
        """Each member's raw image scores ``(N,)`` (after the reduction) and maps
        ``(N, 1, h, w)`` (``None`` without maps) for ``features (N, ΣC, h, w)``."""
        outs = []
        for member, part in zip(self.members, self._split(features), strict=True):
            out = member.scorer.score(part, member.pca_model)
            scores = out.scores
            if self.reduction != "sum" and out.maps is not None:
                scores = reduce_maps(out.maps, self.reduction, self.share)
            outs.append((scores, out.maps))
        return outs

    def fit(self, features: Tensor, channels: Sequence[int]) -> LayerEnsemble:
        """Fit member ``i`` on its ``channels[i]`` channels of the training features
        ``(N, ΣC, h, w)``; the statistics are then the training images' own."""
        self.channels_ = torch.tensor([int(c) for c in channels], dtype=torch.long)
        for member, part in zip(self.members, self._split(features), strict=True):
            member.pca_model.fit(part.reshape(part.shape[0], -1))
            member.scorer.fit(part, member.pca_model)
        self._set_statistics(features, calibrated=False)
        return self

    def calibrate(self, features: Tensor) -> LayerEnsemble:
        """Set the statistics from validation normals' features ``(N, ΣC, h, w)`` (N ≥ 2).

        Raises:
            DataError: fewer than 2 validation images (a standard deviation needs 2).
        """
        if features.shape[0] < 2:
            raise DataError(
                "a per-layer ensemble (combine=ensemble) standardises each layer's scores on "
                f"at least 2 validation images; got {features.shape[0]}: give more normal "
                "images (a job holds out validation images only beyond the 2 it trains on), "
                "or use combine=concat")
        self._set_statistics(features, calibrated=True)
        return self

    def _set_statistics(self, features: Tensor, calibrated: bool) -> None:
        means, stds, map_stds = [], [], []
        for scores, maps in self.member_outputs(features):
            scores = scores.double()
            means.append(scores.mean())
            stds.append(scores.std() if scores.numel() > 1 else scores.new_ones(()))
            map_stds.append(maps.double().std() if maps is not None and maps.numel() > 1
                            else scores.new_ones(()))
        dtype = features.dtype if features.is_floating_point() else torch.float32
        self.score_mean_ = torch.stack(means).to(dtype)
        self.score_std_ = torch.stack(stds).clamp_min(_MIN_STD).to(dtype)
        self.map_std_ = torch.stack(map_stds).clamp_min(_MIN_STD).to(dtype)
        self.calibrated_ = torch.tensor(float(calibrated))
        self._warned = False

    def score(self, features: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image scores ``(N,)`` and maps ``(N, 1, h, w)`` (``None`` unless every member
        gives maps) of ``features (N, ΣC, h, w)``."""
        if not self.is_calibrated and not self._warned:
            self._warned = True
            warnings.warn(
                "this per-layer ensemble standardises its layers' scores with statistics of "
                "its training images (biased low): call DFMModel.calibrate() with "
                "validation normals", UncalibratedEnsembleWarning, stacklevel=3)
        outs = self.member_outputs(features)
        mean, std, map_std = (t.to(features.device) for t in
                              (self.score_mean_, self.score_std_, self.map_std_))
        scores = sum((s.to(std.dtype) - mean[i]) / std[i] for i, (s, _) in enumerate(outs))
        maps = None
        if all(m is not None for _, m in outs):
            maps = sum(m.to(map_std.dtype) / map_std[i] for i, (_, m) in enumerate(outs))
        return scores, maps
