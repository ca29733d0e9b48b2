"""``Dfm``: the training wrapper with anomalib's API around :class:`DFMModel`.

It works on its own (call ``training_step`` on each training batch, then ``fit``, then
``validation_step``). When the optional ``lightning`` package is installed, ``Dfm`` is a
``LightningModule`` and also trains under ``lightning.Trainer(**model.trainer_arguments)``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dfmx.engine.model_config import ModelConfig
from dfmx.engine.torch_model import POOLING_KERNEL_SIZE, DFMModel

if importlib.util.find_spec("lightning") is not None:
    from lightning.pytorch import LightningModule as _Base

    HAS_LIGHTNING = True
else:  # pragma: no cover - exercised where lightning is absent
    _Base = nn.Module
    HAS_LIGHTNING = False

ONE_CLASS = "one_class"


def _images(batch: Tensor | Mapping[str, Any]) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping) and "image" in batch:
        return batch["image"]
    if hasattr(batch, "image"):
        return batch.image
    raise TypeError("a batch must be an image tensor (N, 3, H, W) or a dict with an 'image' key")


class Dfm(_Base):
    """Deep Feature Modeling with anomalib's ``Dfm`` parameters and defaults.

    Args:
        backbone: backbone name (default ``"resnet50"``, as in anomalib).
        layer: feature layer (default ``"layer3"``).
        pre_trained: use pretrained weights.
        pooling_kernel_size: pooling kernel.
        pca_level: PCA variance ratio in (0, 1) or an int number of components (the
            model's ``n_comps``).
        score_type: ``"fre"`` or ``"nll"`` (or a scorer plugin).
        **kwargs: passed to :class:`DFMModel` (``weights``, ``precision``, ``pooling``...);
            ``precision`` defaults to ``"auto"``: bf16 only where the hardware has it.

    :meth:`from_config` builds one from a model record (``DFMModel.get_config()``).

    Example:
        >>> model = Dfm(backbone="resnet18", pre_trained=False)
        >>> model.training_step(torch.rand(4, 3, 64, 64))
        >>> _ = model.fit()
        >>> sorted(model.validation_step({"image": torch.rand(2, 3, 64, 64)}))
        ['anomaly_map', 'image', 'pred_score']
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        layer: str = "layer3",
        pre_trained: bool = ModelConfig.pre_trained,
        pooling_kernel_size: int = POOLING_KERNEL_SIZE,
        pca_level: float = ModelConfig.n_comps,
        score_type: str = ModelConfig.score_type,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.model = DFMModel(
            backbone=backbone,
            layer=layer,
            pre_trained=pre_trained,
            pooling_kernel_size=pooling_kernel_size,
            n_comps=pca_level,
            score_type=score_type,
            **kwargs,
        )
        self.embeddings: list[Tensor] = []
        if HAS_LIGHTNING:
            self.automatic_optimization = False

    @classmethod
    def from_config(cls, config: ModelConfig | Mapping[str, Any]) -> Dfm:
        """A ``Dfm`` around ``DFMModel.from_config(config)`` (a record or its dict)."""
        record = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
        return cls(backbone=record.backbone, layer=list(record.layers), config=record)

    def get_config(self) -> dict[str, Any]:
        """The model record as a plain JSON-able dict (:meth:`DFMModel.get_config`)."""
        return self.model.get_config()

    # ------------------------------------------------------------ anomalib API
    @staticmethod
    def configure_optimizers() -> None:
        """DFM has nothing to optimise."""
        return None

    def training_step(self, batch: Tensor | Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        """Collect the features of a training batch (a batch of one image is kept as one)."""
        features, _ = self.model.get_features(_images(batch))
        self.embeddings.append(features.detach().cpu())

    def fit(self) -> Dfm:
        """Fit PCA and the scorer on all collected training features."""
        if not self.embeddings:
            raise RuntimeError("no training features collected: call training_step first")
        embeddings = torch.cat(self.embeddings, dim=0)
        self.model.fit(embeddings)
        self.embeddings = []
        return self

    def validation_step(
        self, batch: Tensor | Mapping[str, Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """Score a batch: the batch (as a dict) plus ``pred_score`` and ``anomaly_map``."""
        images = _images(batch)
        out = self.model(images)
        result = dict(batch) if isinstance(batch, Mapping) else {"image": images}
        result.update(pred_score=out.pred_score, anomaly_map=out.anomaly_map)
        return result

    def test_step(self, batch: Tensor | Mapping[str, Any], *args: Any, **kwargs: Any) -> dict:
        return self.validation_step(batch)

    def predict_step(self, batch: Tensor | Mapping[str, Any], *args: Any, **kwargs: Any) -> dict:
        return self.validation_step(batch)

    def forward(self, batch: Tensor) -> Any:
        return self.model(batch)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """One epoch, no gradient clipping, no sanity validation."""
        return {"gradient_clip_val": 0, "max_epochs": 1, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> str:
        """DFM learns from normal images only."""
        return ONE_CLASS

    # ------------------------------------------------------------ lightning hooks
    def on_train_epoch_end(self) -> None:
        """Under a Lightning ``Trainer``: fit once every training batch was seen."""
        if self.embeddings:
            self.fit()
