"""bf16 features must not change DFM's accuracy: image and pixel AUROC within 0.005 of fp32.

Runs the whole pipeline (:func:`dfmx.experiment.run.run_experiment`) on the embedded demo
data twice, in fp32 and in bf16, with the offline EfficientNet-Lite0 weights.
"""

from __future__ import annotations

import inspect

import pytest

from dfmx.experiment.run import run_experiment
from dfmx.features.precision import cpu_has_fast_bf16

TOLERANCE = 0.005


def _config(precision: str) -> dict:
    return {
        "backbone": {"name": "efficientnet_lite0", "arch": "efficientnet_lite0",
                     "pretrained": True, "weights": None, "layers": ["blocks.4"]},
        "layer": {"name": "default", "names": []},
        "pooling": {"name": "avg", "kernel_size": 2},
        "scorer": {"name": "fre"},
        "pca_level": 0.97,
        "image_size": 128,
        "batch_size": 16,
        "num_workers": 0,
        "precision": precision,
        "device": "cpu",
        "seed": 0,
        "save_model": False,
        "overlays": 0,
        "data": {"name": "demo", "cache_dir": None},
    }


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 is emulated (slow) on this CPU")
def test_bf16_matches_fp32_auroc(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "cache"))
    kwargs = {"cache": False} if "cache" in inspect.signature(run_experiment).parameters else {}
    fp32 = run_experiment(_config("fp32"), tmp_path / "fp32", **kwargs).metrics
    bf16 = run_experiment(_config("bf16"), tmp_path / "bf16", **kwargs).metrics
    print({k: (fp32[k], bf16[k]) for k in ("image_AUROC", "pixel_AUROC")})
    for key in ("image_AUROC", "pixel_AUROC"):
        assert abs(bf16[key] - fp32[key]) <= TOLERANCE, (key, fp32[key], bf16[key])
