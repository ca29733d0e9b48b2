"""``DFMModel``: backbone features → pooling → PCA → a scorer (FRE, NLL or a plugin)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dfmx.engine.ensemble import LayerEnsemble
from dfmx.engine.fitted import FittedModule
from dfmx.engine.model_config import ModelConfig
from dfmx.engine.pca import PCA
from dfmx.engine.plugins import build_pooling, build_scorer, check_reduction, pooling_fields
from dfmx.engine.reduction import reduce_maps
from dfmx.errors import ConfigError
from dfmx.features.pooling import DEFAULT_KERNEL_SIZE


class InferenceBatch(NamedTuple):
    """``pred_score (N,)`` and ``anomaly_map (N, 1, H, W)`` (``None`` for image-only scorers)."""

    pred_score: Tensor
    anomaly_map: Tensor | None


def upsample_maps(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Resize feature-grid maps ``(N, 1, h, w)`` to the image ``size`` ``(H, W)``.

    Bicubic, clamped at 0 (errors are non-negative): on MVTec AD bottle it gives a higher
    pixel AUROC than bilinear.
    """
    return F.interpolate(maps, size=tuple(size), mode="bicubic", align_corners=False).clamp_min(0)


#: anomalib's default pooling kernel, the default of ``DFMModel`` and ``Dfm``: the
#: pooling plugins' own default.
POOLING_KERNEL_SIZE = DEFAULT_KERNEL_SIZE


class DFMModel(FittedModule):
    """Deep Feature Modeling: a PCA of pooled CNN features, scored by FRE, NLL or a plugin.

    Args:
        backbone: a timm CNN name or alias (``resnet50``, ``wide_resnet50``,
            ``efficientnet_lite0``, ...).
        layer: a feature layer by its timm module name (``layer3``, ``blocks.4``), or a
            list of layers: their maps are resized to the grid of the first, concatenated
            along channels, then pooled.
        pre_trained: load pretrained weights (see :mod:`dfmx.features.weights` for where
            they come from); ``False`` gives a randomly initialised backbone.
        pooling_kernel_size: kernel (and stride) of the pooling of feature maps.
        n_comps: PCA variance ratio in ``(0, 1)`` or exact number of components (int).
        score_type: ``"fre"``, ``"nll"`` or the name of an installed scorer plugin.

    Keyword-only extensions: ``pooling`` (``"avg"``, ``"max"``, ``"none"`` or a pooling
    plugin), ``pooling_params`` (the pooling's other ``Config`` fields), ``weights`` (an
    explicit weights file), ``precision`` (``"auto"``: bf16 only where the hardware has
    fast bf16, else fp32; ``"fp32"``; ``"bf16"``), ``scorer_params`` (the scorer's
    hyperparameters), ``device``, ``optimize`` (how the backbone runs: ``"auto"``,
    ``"none"``, ``"freeze"``, ``"compile"``; see :mod:`dfmx.features.graph`), ``combine``
    (``"concat"`` or ``"ensemble"``: one PCA + scorer per layer, see
    :mod:`dfmx.engine.ensemble` and :meth:`calibrate`), ``reduction`` (``"sum"``, ``"max"``,
    ``"topk"``: how the feature-grid map becomes the image score, see
    :mod:`dfmx.engine.reduction`) and ``reduction_topk`` (the share ``"topk"`` averages).

    The options form one record, :class:`~dfmx.engine.model_config.ModelConfig`:
    :meth:`get_config` returns it as a JSON-able dict and :meth:`from_config` builds a
    model from one (it passes the record as ``config``; the other arguments are then
    not read).

    Input images are RGB floats in ``[0, 1]``, shape ``(N, 3, H, W)``; the backbone's own
    normalisation is applied inside.

    Example:
        >>> model = DFMModel("resnet18", "layer3", pre_trained=False)
        >>> feats, shape = model.get_features(torch.rand(4, 3, 64, 64))
        >>> _ = model.fit(feats)
        >>> model(torch.rand(2, 3, 64, 64)).pred_score.shape
        torch.Size([2])
        >>> DFMModel.from_config(model.get_config()).get_config() == model.get_config()
        True
    """

    def __init__(
        self,
        backbone: str,
        layer: str | Sequence[str],
        pre_trained: bool = ModelConfig.pre_trained,
        pooling_kernel_size: int = POOLING_KERNEL_SIZE,
        n_comps: float | int = ModelConfig.n_comps,
        score_type: str = ModelConfig.score_type,
        *,
        pooling: str = ModelConfig.pooling,
        pooling_params: dict[str, Any] | None = None,
        weights: str | Path | None = None,
        precision: str = ModelConfig.precision,
        scorer_params: dict[str, Any] | None = None,
        device: str | torch.device = ModelConfig.device,
        optimize: str = ModelConfig.optimize,
        combine: str = ModelConfig.combine,
        reduction: str = ModelConfig.reduction,
        reduction_topk: float = ModelConfig.reduction_topk,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        if config is None:
            params = dict(pooling_params or {})
            if isinstance(pooling, str) and "kernel_size" in pooling_fields(pooling):
                params.setdefault("kernel_size", pooling_kernel_size)
            config = ModelConfig(
                backbone=backbone, layers=layer, pre_trained=pre_trained, weights=weights,
                pooling=pooling, pooling_params=params, n_comps=n_comps,
                score_type=score_type, scorer_params=dict(scorer_params or {}),
                precision=precision, device=str(device), optimize=optimize,
                combine=combine, reduction=reduction, reduction_topk=reduction_topk,
            )
        self._build(config)

    @classmethod
    def from_config(cls, config: ModelConfig | Mapping[str, Any]) -> DFMModel:
        """A new (unfitted) model from a record or its dict (:meth:`get_config`)."""
        if not isinstance(config, ModelConfig):
            config = ModelConfig.from_dict(config)
        return cls(config.backbone, list(config.layers), config=config)

    def get_config(self) -> dict[str, Any]:
        """The model's options as a plain JSON-able dict (:meth:`ModelConfig.to_dict`)."""
        return self.config.to_dict()

    def _build(self, config: ModelConfig) -> None:
        # Imported here: the feature layer pulls in timm, which the pure math does not need.
        from dfmx.features import FeatureExtractor

        self.config = config
        scorer = build_scorer(config.score_type, dict(config.scorer_params))
        check_reduction(config, scorer)
        self.pool = build_pooling(config.pooling, dict(config.pooling_params))
        self.feature_extractor = FeatureExtractor(
            config.backbone, list(config.layers), pre_trained=config.pre_trained,
            weights=config.weights, precision=config.precision, device=config.device,
            optimize=config.optimize,
        )
        #: One PCA + scorer per layer (``combine="ensemble"``), else ``None``.
        self.ensemble: LayerEnsemble | None = None
        if config.combine == "ensemble":
            self.ensemble = LayerEnsemble(
                len(config.layers), lambda: PCA(n_components=config.n_comps),
                lambda: build_scorer(config.score_type, dict(config.scorer_params)),
                config.reduction, config.reduction_topk)
            self._layer_pools = self._common_grid_pools()
        else:
            self.scorer = scorer
            self.pca_model = PCA(n_components=config.n_comps)
        # (C, h, w) of the pooled features seen in training; saved with the model.
        self.register_buffer("feature_shape_", torch.zeros(0, dtype=torch.long))
        self._last_shape: tuple[int, ...] | None = None

    # The record's fields, under the names the rest of dfmx reads.
    backbone = property(lambda self: self.config.backbone)
    layers = property(lambda self: list(self.config.layers))
    pre_trained = property(lambda self: self.config.pre_trained)
    pooling = property(lambda self: self.config.pooling)
    n_comps = property(lambda self: self.config.n_comps)
    score_type = property(lambda self: self.config.score_type)
    scorer_params = property(lambda self: dict(self.config.scorer_params))

    @property
    def pooling_kernel_size(self) -> int:
        """The pooling window (1 for a pooling without ``kernel_size``)."""
        return int(getattr(self.pool, "kernel_size", 1))

    @property
    def layer(self) -> str | list[str]:
        return self.layers[0] if len(self.layers) == 1 else list(self.layers)

    @property
    def is_fitted(self) -> bool:
        if self.ensemble is not None:
            return self.ensemble.is_fitted
        return self.pca_model.is_fitted

    @property
    def produces_maps(self) -> bool:
        """Whether scoring gives maps (an ensemble: only if every member's scorer does)."""
        if self.ensemble is not None:
            return self.ensemble.produces_maps
        return bool(self.scorer.produces_maps)

    @property
    def n_components(self) -> int:
        """PCA components kept by the fit (an ensemble: all its members' together)."""
        if self.ensemble is not None:
            return self.ensemble.n_components
        return self.pca_model.n_components_

    @property
    def feature_dim(self) -> int:
        """Values per image of the pooled features, ``C·h·w``."""
        return int(torch.prod(self.feature_shape_)) if self.feature_shape_.numel() else 0

    # ---------------------------------------------------------------- features
    def raw_features(self, batch: Tensor) -> dict[str, Tensor]:
        """Unpooled backbone maps ``{layer: (N, C_layer, H / r, W / r)}``, float32.

        ``batch`` is images ``(N, 3, H, W)``. These maps depend only on the backbone, its
        weights, precision and the images: the feature cache stores them.
        """
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W); got {tuple(batch.shape)}")
        return self.feature_extractor(batch)

    def _common_grid_pools(self) -> dict[str, Any]:
        """One pooling per layer for ``combine="ensemble"``: the configured kernel on the
        finest layer (smallest stride), the kernel shrunk by the stride ratio on the
        others, so that they all pool to (about) the same grid."""
        reductions = self.feature_extractor.reductions
        finest = min(reductions[n] for n in self.layers)
        params = dict(self.config.pooling_params)
        pools = {}
        for name in self.layers:
            layer_params = dict(params)
            if "kernel_size" in layer_params or "kernel_size" in pooling_fields(self.pooling):
                kernel = int(getattr(self.pool, "kernel_size", 1))
                layer_params["kernel_size"] = max(1, kernel * finest // reductions[name])
            pools[name] = build_pooling(self.pooling, layer_params)
        return pools

    def _pool_to_common_grid(self, raw: dict[str, Tensor]) -> Tensor:
        """Each layer pooled by its own pooling, resized to the finest pooled grid (adaptive
        average where larger, bilinear where smaller), concatenated: ``(N, ΣC, h, w)``."""
        pooled = [self._layer_pools[name](raw[name]) for name in self.layers]
        grid = max((p.shape[-2:] for p in pooled), key=lambda s: s[0] * s[1])
        same = []
        for p in pooled:
            if p.shape[-2:] == grid:
                same.append(p)
            elif p.shape[-2] >= grid[0] and p.shape[-1] >= grid[1]:
                same.append(F.adaptive_avg_pool2d(p, grid))
            else:
                same.append(F.interpolate(p, size=grid, mode="bilinear", align_corners=False))
        return torch.cat(same, dim=1)

    def pool_and_fuse(
        self, raw: dict[str, Tensor], image_size: Sequence[int] | None = None
    ) -> Tensor:
        """Fuse the layers of ``raw`` (:meth:`raw_features`) and pool: ``(N, C, h, w)``.

        ``combine="ensemble"``: each layer is pooled onto one common grid (the finest
        layer pooled with the configured kernel; deeper layers with the kernel divided by
        their stride ratio, resized where that is not whole) and the results are
        concatenated along channels; the ensemble splits them again by layer.

        ``combine="concat"``: several layers are resized (bilinear) to the grid of the
        first and concatenated along channels, then pooled once, so every layer keeps the
        first layer's resolution. (On MVTec bottle this beats pooling each layer first on
        pixel AUROC; see ``benchmarks/test_multilayer.py``.) ``image_size`` ``(H, W)``
        only words the error for maps that pool to nothing.
        """
        if self.ensemble is not None:
            try:
                pooled = self._pool_to_common_grid(raw)
            except ValueError as exc:  # a map smaller than the pooling window
                raise ConfigError(self._too_small(raw, image_size)) from exc
            if pooled.shape[-2] < 1 or pooled.shape[-1] < 1:
                raise ConfigError(self._too_small(raw, image_size))
            return pooled
        grid = raw[self.layers[0]].shape[-2:]
        maps = [raw[name] if raw[name].shape[-2:] == grid else
                F.interpolate(raw[name], size=grid, mode="bilinear", align_corners=False)
                for name in self.layers]
        fused = maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)
        try:
            pooled = self.pool(fused)
        except ValueError as exc:  # a map smaller than the pooling window
            raise ConfigError(self._too_small(raw, image_size)) from exc
        if pooled.shape[-2] < 1 or pooled.shape[-1] < 1:
            raise ConfigError(self._too_small(raw, image_size))
        return pooled

    def _too_small(self, raw: dict[str, Tensor], image_size: Sequence[int] | None) -> str:
        """Why pooled maps came out empty, and the smallest image size that works."""
        what = (f"images of size {tuple(int(v) for v in image_size)}"
                if image_size is not None else "the images")
        shapes = ", ".join(f"{n}: {tuple(raw[n].shape[-2:])}" for n in self.layers)
        stride = max(self.feature_extractor.reductions.get(n, 1) for n in self.layers)
        need = stride * self.pooling_kernel_size
        return (
            f"{what} are too small for backbone {self.backbone!r} layer(s) {self.layers} "
            f"(stride {stride}) with pooling kernel {self.pooling_kernel_size}: feature maps "
            f"{shapes}. Use image_size >= {need}, a smaller pooling.kernel_size or a "
            "shallower layer"
        )

    def feature_maps(self, batch: Tensor) -> Tensor:
        """Pooled (and, for several layers, fused) feature maps ``(N, C, h, w)``, float32."""
        return self.pool_and_fuse(self.raw_features(batch), image_size=batch.shape[-2:])

    def get_features(self, batch: Tensor) -> tuple[Tensor, torch.Size]:
        """``(features (N, C·h·w), feature_shape (N, C, h, w))`` for images ``(N, 3, H, W)``."""
        maps = self.feature_maps(batch)
        self._last_shape = tuple(maps.shape[1:])  # lets fit() run without a shape argument
        return maps.reshape(maps.shape[0], -1), maps.shape

    # ---------------------------------------------------------------- fitting
    def fit(self, dataset: Tensor, feature_shape: Sequence[int] | None = None) -> DFMModel:
        """Fit PCA (and the scorer) on training features ``(N, C·h·w)``; returns ``self``.

        ``feature_shape`` is ``(C, h, w)`` (or ``(N, C, h, w)``); it defaults to the shape
        of the last :meth:`get_features` call's maps. ``dataset`` is never modified.
        """
        if dataset.ndim != 2:
            raise ValueError(f"fit expects features (N, C*h*w); got shape {tuple(dataset.shape)}")
        chw = self._resolve_shape(dataset, feature_shape)
        if self.ensemble is not None:
            self.ensemble.fit(dataset.reshape(-1, *chw), self._channels(dataset.device))
        else:
            self.pca_model.fit(dataset)
            self.scorer.fit(dataset.reshape(-1, *chw), self.pca_model)
        self.feature_shape_ = torch.tensor(chw, dtype=torch.long)
        return self

    def _channels(self, device: torch.device) -> list[int]:
        """Each layer's channel count (one backbone call on a small image, not fitted)."""
        known = getattr(self.feature_extractor, "channels", None)
        if isinstance(known, Mapping) and all(n in known for n in self.layers):
            return [int(known[n]) for n in self.layers]
        probe = torch.zeros(1, 3, 64, 64)
        with torch.inference_mode():
            raw = self.raw_features(probe)
        return [int(raw[n].shape[1]) for n in self.layers]

    def calibrate(self, raw: dict[str, Tensor]) -> DFMModel:
        """Set the per-layer ensemble's standardising statistics from validation normals.

        ``raw`` is their unpooled backbone maps ``{layer: (N, C, h, w)}`` (as
        :meth:`raw_features` returns), ``N >= 2``, images of the training size. A
        ``combine="concat"`` model has nothing to calibrate and is returned unchanged.
        Returns ``self``.
        """
        if self.ensemble is None:
            return self
        if not self.is_fitted:
            raise RuntimeError("DFMModel is not fitted yet: call fit() before calibrate()")
        features = self.pool_and_fuse(raw)
        shape = tuple(int(v) for v in features.shape[1:])
        if shape != tuple(int(v) for v in self.feature_shape_):
            raise ValueError(f"validation features of shape {shape} do not match the fitted "
                             f"shape {tuple(self.feature_shape_.tolist())}: use the "
                             "training image size")
        self.ensemble.calibrate(features)
        return self

    def _resolve_shape(self, features: Tensor, shape: Sequence[int] | None) -> tuple[int, ...]:
        if shape is None:
            if self.feature_shape_.numel() == 3:
                chw = tuple(int(v) for v in self.feature_shape_)
            elif self._last_shape is not None:
                chw = self._last_shape
            else:
                raise ValueError("feature_shape is unknown: pass it, or use get_features first")
        else:
            chw = tuple(int(v) for v in shape)[-3:]
        if len(chw) != 3 or chw[0] * chw[1] * chw[2] != features.shape[1]:
            raise ValueError(f"feature shape {chw} does not match {features.shape[1]} features")
        return chw

    # ---------------------------------------------------------------- scoring
    def score(
        self, features: Tensor, feature_shapes: Sequence[int], maps: bool | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Scores ``(N,)`` and feature-grid maps ``(N, 1, h, w)`` (or ``None``).

        ``maps=True`` demands maps and raises ``ValueError`` for an image-only scorer such
        as NLL; ``maps=False`` drops them; ``None`` returns what the scorer gives.
        """
        if not self.is_fitted:
            raise RuntimeError("DFMModel is not fitted yet: call fit() first")
        if maps and not self.produces_maps:
            raise ValueError(
                f"score_type {self.score_type!r} gives image scores only, no anomaly maps; "
                "use score_type='fre' (or a scorer plugin with maps) for pixel maps"
            )
        shape = tuple(int(v) for v in feature_shapes)[-3:]
        expected = tuple(int(v) for v in self.feature_shape_)
        if shape != expected:
            raise ValueError(
                f"features of shape {shape} do not match the fitted feature shape {expected}: "
                "score images at the size the model was fitted on"
            )
        if self.ensemble is not None:
            scores, grid_maps = self.ensemble.score(features.reshape(-1, *shape))
            return scores, (grid_maps if maps is not False else None)
        out = self.scorer.score(features.reshape(-1, *shape), self.pca_model)
        scores = out.scores
        if self.config.reduction != "sum" and out.maps is not None:
            scores = reduce_maps(out.maps, self.config.reduction, self.config.reduction_topk)
        return scores, (out.maps if maps is not False else None)

    def forward(self, batch: Tensor, maps: bool | None = None) -> InferenceBatch:
        """Scores and anomaly maps upsampled to the input size for images ``(N, 3, H, W)``.

        Maps are resized with :func:`upsample_maps`.
        """
        features, shape = self.get_features(batch)
        scores, feature_maps = self.score(features, shape, maps=maps)
        if feature_maps is not None:
            feature_maps = upsample_maps(feature_maps, batch.shape[-2:])
        return InferenceBatch(pred_score=scores, anomaly_map=feature_maps)
