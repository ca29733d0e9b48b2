"""Feature extraction speed against the machine's compute limit.

    pytest benchmarks/test_extraction_speed.py --benchmark-enable -s

The limit of a backbone in a precision is its FLOPs per image (``FlopCounterMode``, a
multiply-add counts 2) divided by the measured rate of a 4096² matmul in that precision,
both measured in the same run. Each round measures the matmul rate right before the
extraction and the ratio is taken per round (the machine is shared and noisy); medians of
the rounds are printed. Runs on CUDA when it is available.
"""

from __future__ import annotations

import copy
import statistics

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._speed import bench_device, matmul_flops_per_s, seconds
from dfmx.features import FeatureExtractor
from dfmx.features.precision import cpu_has_fast_bf16

BATCH = 16
SIZE = 256
ROUNDS = 3
BACKBONES = {"wide_resnet50": "layer3", "efficientnet_lite0": "blocks.4"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def flops_per_image(fx: FeatureExtractor) -> float:
    """FLOPs of the backbone (to its deepest requested layer) for one SIZE x SIZE image."""
    with FlopCounterMode(display=False) as counter:
        fx(torch.rand(1, 3, SIZE, SIZE, device=fx.device))
    return float(counter.get_total_flops())


def _has_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_extraction_vs_limit(benchmark, backbone: str) -> None:
    device = bench_device()
    if not _has_bf16(device):
        pytest.skip("no fast bf16 on this device")
    images = torch.rand(BATCH, 3, SIZE, SIZE, device=device)
    rows = {}
    for precision, dtype in DTYPES.items():
        fx = FeatureExtractor(backbone, BACKBONES[backbone], pre_trained=False,
                              precision=precision, device=device)
        flops = flops_per_image(fx)
        fx(images)  # warm-up: oneDNN primitive creation
        rates, ratios = [], []
        for _ in range(ROUNDS):
            peak = matmul_flops_per_s(dtype, device)
            ips = BATCH / seconds(lambda fx=fx: fx(images), device)
            rates.append(ips)
            ratios.append(ips * flops / peak)
        rows[precision] = (statistics.median(rates), statistics.median(ratios), flops, fx)
    bf16_fx = rows["bf16"][3]
    benchmark.pedantic(bf16_fx, args=(images,), rounds=1, iterations=1)
    print(f"\n{backbone} to {BACKBONES[backbone]}, {SIZE}x{SIZE}, batch {BATCH}, {device}, "
          f"{rows['fp32'][2] / 1e9:.2f} GFLOPs/image, torch threads {torch.get_num_threads()}, "
          f"bf16 layout {'channels_last' if bf16_fx.channels_last else 'NCHW'}")
    for precision, (ips, ratio, _, _) in rows.items():
        print(f"  {precision}: {ips:6.2f} images/s, {ratio:5.1%} of the {precision} matmul limit")
    print(f"  bf16 / fp32 speed-up: {rows['bf16'][0] / rows['fp32'][0]:.2f}x")
    benchmark.extra_info.update(
        {f"{p}_images_per_s": r[0] for p, r in rows.items()}
        | {f"{p}_ratio_to_limit": r[1] for p, r in rows.items()}
    )
    if backbone == "wide_resnet50" and device.type == "cpu":
        assert rows["bf16"][1] >= 0.8


def _variant(net: torch.nn.Module, mode: str, channels_last: bool, x: torch.Tensor):
    """A forward closure: bf16 ``autocast``, bf16 weights, or fp32; NCHW or NHWC."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = copy.deepcopy(net).to(memory_format=fmt)
    if mode == "bf16_weights":
        net = net.to(torch.bfloat16)
        x = x.to(torch.bfloat16)
    x = x.contiguous(memory_format=fmt)

    def run() -> object:
        with torch.inference_mode():
            if mode == "autocast":
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    return net(x)
            return net(x)

    return run


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_layout_and_weight_variants(benchmark, backbone: str) -> None:
    """bf16 autocast vs weights cast to bf16 up front, NCHW vs channels_last (and fp32)."""
    device = bench_device()
    if not _has_bf16(device):
        pytest.skip("no fast bf16 on this device")
    fx = FeatureExtractor(backbone, BACKBONES[backbone], pre_trained=False, device=device)
    x = (torch.rand(BATCH, 3, SIZE, SIZE, device=device) - fx.mean) / fx.std
    variants = {
        f"{mode} {'channels_last' if cl else 'NCHW'}": _variant(fx.net, mode, cl, x)
        for mode in ("autocast", "bf16_weights", "fp32")
        for cl in (True, False)
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()
    for _ in range(ROUNDS):
        for name, run in variants.items():
            times[name].append(seconds(run, device))
    reference = variants["fp32 NCHW"]()[-1].float()
    benchmark.pedantic(variants["autocast channels_last"], rounds=1, iterations=1)
    print(f"\n{backbone}: seconds per {BATCH} images (median of {ROUNDS}), rel. error vs fp32")
    for name, run in variants.items():
        out = run()[-1].float()
        err = float((out - reference).norm() / reference.norm())
        print(f"  {name:26s} {statistics.median(times[name]):6.3f} s   {err:.2e}")
