"""bf16 features must not change DFM's accuracy: image and pixel AUROC within 0.005 of fp32.

Runs the whole pipeline (:func:`dfmx.experiment.run.run_experiment`) on the embedded demo
data twice with the offline EfficientNet-Lite0 weights: the exact baseline (fp32, eager)
and what ``precision=bf16`` runs by default (a frozen bf16 graph on the CPU).
"""

from __future__ import annotations

import pytest

from dfmx.cli.compose import compose_config
from dfmx.experiment.run import run_experiment
from dfmx.features.precision import cpu_has_fast_bf16

TOLERANCE = 0.005


def _config(precision: str, optimize: str) -> dict:
    return compose_config([
        f"precision={precision}", f"optimize={optimize}", "image_size=128", "num_workers=0",
        "save_model=false", "overlays=0", "pooling.kernel_size=2", "cache.enabled=false",
    ])


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 is emulated (slow) on this CPU")
def test_bf16_matches_fp32_auroc(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "cache"))
    fp32 = run_experiment(_config("fp32", "none"), tmp_path / "fp32").metrics
    bf16 = run_experiment(_config("bf16", "auto"), tmp_path / "bf16").metrics
    print({k: (fp32[k], bf16[k]) for k in ("image_AUROC", "pixel_AUROC")})
    for key in ("image_AUROC", "pixel_AUROC"):
        assert abs(bf16[key] - fp32[key]) <= TOLERANCE, (key, fp32[key], bf16[key])
