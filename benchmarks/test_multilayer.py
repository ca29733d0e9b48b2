"""Which multi-layer combination is better: one model on concatenated layers, or one model
per layer with standardised scores summed? Measured on MVTec AD bottle.

    pytest benchmarks/test_multilayer.py -s --benchmark-enable

prints image and pixel AUROC for each single layer, for the concatenation dfmx uses
(``DFMModel(layer=[...])``: resize to the first layer's grid, concatenate, pool) and for
the per-layer sum. The concatenation is dfmx's multi-layer default.
"""

from __future__ import annotations

import pytest
import torch

from dfmx import DFMModel
from dfmx.data import ImageDataset, make_loader, mvtec_samples
from dfmx.metrics import image_auroc, pixel_auroc

LAYERS = ("blocks.2", "blocks.4")
KERNELS = {"blocks.2": 4, "blocks.4": 2}  # both end on an 8x8 grid at 256 px


def _images(samples):
    batches = list(make_loader(ImageDataset(samples, 256, interpolation="bicubic"), 16))
    return (torch.cat([b["image"] for b in batches]), torch.cat([b["mask"] for b in batches]),
            torch.cat([b["label"] for b in batches]))


def _run(layers, kernel, score_type, train, test):
    model = DFMModel("efficientnet_lite0", list(layers), pooling_kernel_size=kernel,
                     score_type=score_type, precision="bf16")
    feats, shape = model.get_features(train)
    model.fit(feats, shape)
    train_scores = model.score(feats, shape)[0]
    out = model(test)
    return out.pred_score, out.anomaly_map, train_scores


@pytest.mark.mvtec
@pytest.mark.parametrize("score_type", ["fre", "nll"])
def test_concat_vs_sum(benchmark, bottle_root, score_type) -> None:
    train, _, _ = _images(mvtec_samples(bottle_root, "bottle", "train"))
    test, masks, labels = _images(mvtec_samples(bottle_root, "bottle", "test"))
    masks, labels = masks[:, 0].numpy() > 0, labels.numpy()

    def measure():
        rows = {}
        single = {name: _run([name], KERNELS[name], score_type, train, test) for name in LAYERS}
        rows.update({f"{name} alone": single[name][:2] for name in LAYERS})
        rows["concat (dfmx)"] = _run(LAYERS, KERNELS[LAYERS[0]], score_type, train, test)[:2]
        z = sum((s - t.mean()) / t.std() for s, _, t in single.values())
        maps = None
        if single[LAYERS[0]][1] is not None:
            maps = sum(m / t.std() for _, m, t in single.values())
        rows["sum of per-layer models"] = (z, maps)
        return rows

    rows = benchmark.pedantic(measure, rounds=1, iterations=1)
    print(f"\nbottle {score_type}, EfficientNet-Lite0 {'+'.join(LAYERS)}:")
    for name, (scores, maps) in rows.items():
        pix = pixel_auroc(masks, maps[:, 0].numpy()) if maps is not None else float("nan")
        print(f"  {name:26s} image AUROC {image_auroc(labels, scores.numpy()):.4f}  "
              f"pixel AUROC {pix:.4f}")
