"""bf16 against fp32 features on MVTec AD bottle: image and pixel AUROC deltas.

    pytest benchmarks/test_bf16_accuracy.py --benchmark-enable -s

Same configuration as ``test_accuracy.py`` (EfficientNet-Lite0 offline weights,
blocks.4, pooling 2, FRE, 256x256); the feature cache is off. fp32 runs eagerly (the exact
baseline), bf16 as dfmx runs it by default (a frozen graph on the CPU).
"""

from __future__ import annotations

import pytest

from benchmarks.test_accuracy import _config
from dfmx.experiment.run import run_experiment
from dfmx.features.precision import cpu_has_fast_bf16


def _run(cfg: dict, out) -> dict[str, float]:
    return run_experiment(cfg, out).metrics


@pytest.mark.mvtec
@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 is emulated (slow) on this CPU")
def test_bf16_auroc_delta_bottle(benchmark, bottle_root, tmp_path) -> None:
    exact = _config(bottle_root, "fp32", "efficientnet_lite0", "optimize=none")
    fp32 = _run(exact, tmp_path / "fp32")
    bf16 = benchmark.pedantic(_run, args=(_config(bottle_root, precision="bf16"),
                                          tmp_path / "bf16"), rounds=1, iterations=1)
    deltas = {k: bf16[k] - fp32[k] for k in ("image_AUROC", "pixel_AUROC")}
    print(f"\nbottle lite0 FRE: image AUROC fp32 {fp32['image_AUROC']:.4f} bf16 "
          f"{bf16['image_AUROC']:.4f} (delta {deltas['image_AUROC']:+.4f}); pixel AUROC fp32 "
          f"{fp32['pixel_AUROC']:.4f} bf16 {bf16['pixel_AUROC']:.4f} "
          f"(delta {deltas['pixel_AUROC']:+.4f})")
    benchmark.extra_info.update(deltas)
    assert all(abs(d) <= 0.005 for d in deltas.values())
