"""Accuracy of DFM on MVTec AD bottle with the offline EfficientNet-Lite0 backbone.

    pytest benchmarks/test_accuracy_mvtec.py -s --benchmark-enable

prints image and pixel AUROC for each configuration and checks the targets the project
promised (image AUROC >= 0.99, pixel AUROC >= 0.97 for FRE, layer blocks.4, pooling 2,
256x256).
"""

from __future__ import annotations

import pytest

from dfmx.experiment.run import run_experiment

BASE = {
    "backbone": {"name": "efficientnet_lite0", "arch": "efficientnet_lite0", "pretrained": True,
                 "weights": None, "layers": ["blocks.4"]},
    "layer": {"name": "default", "names": []},
    "pooling": {"name": "avg", "kernel_size": 2},
    "scorer": {"name": "fre"},
    "pca_level": 0.97,
    "image_size": 256,
    "batch_size": 16,
    "num_workers": None,
    "precision": "fp32",
    "device": "cpu",
    "seed": 0,
    "save_model": False,
    "overlays": 0,
}


def _config(root, **overrides):
    cfg = {**BASE, "data": {"name": "mvtec", "root": str(root), "category": "bottle"}}
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


@pytest.mark.mvtec
def test_bottle_fre_lite0_targets(benchmark, bottle_root, tmp_path) -> None:
    result = benchmark.pedantic(
        run_experiment, args=(_config(bottle_root), tmp_path), rounds=1, iterations=1
    )
    m = result.metrics
    print(f"\nbottle FRE lite0 blocks.4 k=2: image AUROC {m['image_AUROC']:.4f}, "
          f"pixel AUROC {m['pixel_AUROC']:.4f}, PRO {m['pixel_PRO']:.4f}, "
          f"{m['images_per_s']:.1f} images/s")
    benchmark.extra_info.update({k: m[k] for k in ("image_AUROC", "pixel_AUROC", "pixel_PRO")})
    assert m["image_AUROC"] >= 0.99
    assert m["pixel_AUROC"] >= 0.97
