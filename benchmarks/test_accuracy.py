"""Accuracy of DFM on MVTec AD bottle with the offline EfficientNet-Lite0 backbone.

    pytest benchmarks/test_accuracy.py -s --benchmark-enable

prints image and pixel AUROC for each configuration and checks the targets the project
promised (image AUROC >= 0.99, pixel AUROC >= 0.97 for FRE, layer blocks.4, pooling 2,
256x256).
"""

from __future__ import annotations

import pytest

from dfmx.cli.compose import compose_config
from dfmx.experiment.run import run_experiment


def _config(root, precision: str = "fp32", backbone: str = "efficientnet_lite0",
            *extra: str) -> dict:
    return compose_config([
        "data=mvtec", f"data.root={root}", "data.category=bottle", f"backbone={backbone}",
        "pooling.kernel_size=2", "image_size=256", "scorer=fre", f"precision={precision}",
        *extra,
        "save_model=false", "overlays=0", "cache.enabled=false",
    ])


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
