"""The GPU path, where there is one: ``device=cuda`` gives the CPU's features and metrics.

Skipped on machines without CUDA. On a machine with a GPU they are the first check to run,
``pytest tests/features/test_cuda.py``, before the benchmarks (which pick CUDA by
themselves, see ``docs/performance.md``).
"""

from __future__ import annotations

import pytest
import torch

from dfmx.cli.compose import compose_config
from dfmx.experiment.run import run_experiment
from dfmx.features import FeatureExtractor, resolve_device, resolve_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_auto_picks_the_gpu_and_its_precision() -> None:
    assert resolve_device("auto").type == "cuda"
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert resolve_precision("auto", "cuda") == expected


@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-2), ("bf16", 3e-2)])
def test_gpu_features_match_the_cpu(precision: str, tol: float) -> None:
    """uint8 batches go to the device before the float conversion; outputs are float32,
    on the GPU; TF32/bf16 rounding only."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cpu = FeatureExtractor("resnet18", ["layer2", "layer3"], pre_trained=False,
                           precision="fp32", optimize="none")
    gpu = FeatureExtractor("resnet18", ["layer2", "layer3"], pre_trained=False,
                           precision=precision, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    assert gpu.optimize == "none" and gpu.device.type == "cuda"  # auto stays eager on CUDA
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    expected, out = cpu(images), gpu(images)
    for name in ("layer2", "layer3"):
        assert out[name].device.type == "cuda" and out[name].dtype == torch.float32
        assert _rel(out[name].cpu(), expected[name]) < tol


def test_a_demo_job_on_the_gpu_scores_as_on_the_cpu(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "cache"))
    common = ["image_size=128", "save_model=false", "overlays=0", "cache.enabled=false",
              "precision=fp32"]
    cpu = run_experiment(compose_config([*common, "device=cpu"]), tmp_path / "cpu").metrics
    gpu = run_experiment(compose_config([*common, "device=cuda"]), tmp_path / "gpu").metrics
    for key in ("image_AUROC", "pixel_AUROC"):
        assert abs(gpu[key] - cpu[key]) <= 0.005, (key, cpu[key], gpu[key])
