"""The naive fp32 DFM recipe that the end-to-end benchmark measures dfmx against.

Same math as dfmx's FRE model (backbone features -> average pooling -> PCA at a variance
level -> squared reconstruction error per location, summed over channels, bicubic
upsampling), written the plain way: images decoded one by one with PIL in the main
process, an fp32 NCHW backbone without autocast, every feature held in memory, and PCA by
a full float64 ``torch.linalg.svd``. Not a test module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from dfmx.features.backbones import BACKBONE_ALIASES, available_layers
from dfmx.features.weights import load_pretrained
from dfmx.metrics import compute_metrics

_PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@dataclass
class ReferenceResult:
    """Metrics of one reference run and the split of its time."""

    metrics: dict[str, float]
    seconds_decode: float
    seconds_total: float


def _decode(path: Path, size: int, interpolation: str) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((size, size), _PIL_FILTERS[interpolation])
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _mask(path: Path | None, size: int) -> np.ndarray:
    if path is None:
        return np.zeros((size, size), dtype=bool)
    return np.asarray(Image.open(path).convert("L").resize((size, size), Image.NEAREST)) > 0


class ReferenceDFM:
    """fp32 NCHW backbone + float64 SVD PCA + FRE, as in the DFM paper's recipe.

    Args:
        backbone: a dfmx alias (``wide_resnet50``, ``efficientnet_lite0``).
        layer: the timm feature module name (``layer3``, ``blocks.4``).
        pretrained: load the same pretrained weights dfmx would.
        kernel_size: average pooling kernel and stride.
        level: PCA explained variance level.
    """

    def __init__(self, backbone: str, layer: str, pretrained: bool, kernel_size: int,
                 level: float) -> None:
        timm_name = BACKBONE_ALIASES.get(backbone, backbone)
        index = available_layers(backbone).index(layer)
        self.net = timm.create_model(timm_name, features_only=True, out_indices=(index,))
        if pretrained:
            load_pretrained(self.net, timm_name, None, backbone)
        self.net.eval()
        cfg = self.net.pretrained_cfg
        self.interpolation = str(cfg.get("interpolation", "bilinear"))
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        self.kernel_size = kernel_size
        self.level = level

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.net((images - self.mean) / self.std)[-1]
        return F.avg_pool2d(fmap, self.kernel_size)

    def fit(self, feats: torch.Tensor) -> None:
        x = feats.reshape(feats.shape[0], -1).double()
        self.pca_mean = x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x - self.pca_mean, full_matrices=False)
        var = s.square()
        ratio = torch.cumsum(var / var.sum(), dim=0)
        k = int(torch.searchsorted(ratio, torch.tensor(self.level - 1e-12, dtype=ratio.dtype)))
        self.components = vh[: k + 1]

    def score(self, feats: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = feats.shape
        x = feats.reshape(n, -1).double() - self.pca_mean
        err = (x - (x @ self.components.T) @ self.components).square()
        maps = err.reshape(n, c, h, w).sum(dim=1, keepdim=True).float()
        up = F.interpolate(maps, size=(size, size), mode="bicubic", align_corners=False)
        return maps.sum(dim=(1, 2, 3)), up.clamp_min(0)[:, 0]


def run_reference(model: ReferenceDFM, train: Sequence, test: Sequence, size: int,
                  batch_size: int = 16) -> ReferenceResult:
    """Fit on ``train`` and score ``test`` (dfmx ``Sample`` lists); metrics as dfmx's."""
    import time

    start = time.perf_counter()
    decode = 0.0

    def batches(samples: Sequence):
        nonlocal decode
        for i in range(0, len(samples), batch_size):
            t = time.perf_counter()
            imgs = torch.stack([_decode(s.path, size, model.interpolation)
                                for s in samples[i : i + batch_size]])
            decode += time.perf_counter() - t
            yield imgs

    train_feats = torch.cat([model.features(b) for b in batches(train)])
    model.fit(train_feats)
    scores, maps = [], []
    for b in batches(test):
        s, m = model.score(model.features(b), size)
        scores.append(s)
        maps.append(m)
    masks = np.stack([_mask(s.mask_path, size) for s in test])
    labels = np.array([int(s.label) for s in test])
    metrics = compute_metrics(labels, torch.cat(scores).double().numpy(),
                              masks=masks, maps=torch.cat(maps).numpy())
    return ReferenceResult(metrics, decode, time.perf_counter() - start)
