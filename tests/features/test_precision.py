from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfmx.features import FeatureExtractor, resolve_device, resolve_precision
from dfmx.features import precision as precision_mod


@pytest.mark.parametrize(
    ("name", "expected"),
    [("fp32", "fp32"), ("bf16", "bf16"), ("FP32", "fp32"), ("bfloat16", "bf16")],
)
def test_explicit_names(name: str, expected: str) -> None:
    assert resolve_precision(name, "cpu") == expected


def test_unknown_precision_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_follows_hardware(
    monkeypatch: pytest.MonkeyPatch, fast: bool, expected: str
) -> None:
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_precision("auto", "cpu") == expected


def test_auto_on_other_devices_is_fp32() -> None:
    assert resolve_precision("auto", "meta") == "fp32"


def test_cpuinfo_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n")
    flags = precision_mod._cpuinfo_flags(info)
    assert {"amx_bf16", "avx512f"} <= flags
    assert precision_mod._cpuinfo_flags(tmp_path / "missing") == set()


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" auto ") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="Unknown device 'gpu'; use cpu, cuda"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match="device=cuda was asked for, but torch sees no CUDA"):
        FeatureExtractor("resnet18", "layer3", pre_trained=False, device="cuda")
    with pytest.raises(ValueError, match="device=auto to take a GPU only where there is one"):
        resolve_device("cuda:1")
