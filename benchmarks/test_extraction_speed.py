"""Feature extraction speed against the machine's compute limit.

    pytest benchmarks/test_extraction_speed.py --benchmark-enable -s

The limit of a backbone in a precision is its FLOPs per image (``FlopCounterMode`` on the
eager net, a multiply-add counts 2) divided by the machine's matmul rate in that precision.
This shared 2-core machine's bf16 rate swings 2-3x within seconds (4096² products: 570 to
1,900 GFLOP/s), so the rate is measured right before each timing (the best of 3 products
of 4096², ``_speed.peak_matmul_flops_per_s``) and each timing is divided by its own rate:
the ratio printed is the median of those per-round ratios, which the swings cancel out of.
Images/s are printed as the best and the median round.

Ways of running it: eager fp32 and bf16 (autocast, channels_last, inference mode), the
frozen graph that ``optimize=auto`` picks on a CPU, and ``torch.compile`` (its compile
time is printed). Runs on CUDA when it is available.
"""

from __future__ import annotations

import copy
import statistics
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._speed import bench_device, peak_matmul_flops_per_s, seconds
from dfmx.features import FeatureExtractor
from dfmx.features.precision import cpu_has_fast_bf16

BATCH = 16
SIZE = 256
ROUNDS = 5
BACKBONES = {"wide_resnet50": "layer3", "efficientnet_lite0": "blocks.4"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: name -> (precision, optimize, images per backbone call); the default is what
#: ``precision=auto optimize=auto`` gives on an AMX CPU (8 images per call, CPU_MICRO_BATCH).
WAYS = {
    "fp32 eager": ("fp32", "none", 8),
    "fp32 frozen": ("fp32", "freeze", 8),
    "bf16 eager": ("bf16", "none", 8),
    "bf16 frozen (default)": ("bf16", "freeze", 8),
    "bf16 frozen, 16 a call": ("bf16", "freeze", 16),
    "bf16 compiled": ("bf16", "compile", 8),
}


def flops_per_image(backbone: str, layer: str, device: torch.device) -> float:
    """FLOPs of the backbone (to its deepest requested layer) for one SIZE x SIZE image."""
    fx = FeatureExtractor(backbone, layer, pre_trained=False, optimize="none", device=device)
    with FlopCounterMode(display=False) as counter:
        fx(torch.rand(1, 3, SIZE, SIZE, device=device))
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
    layer = BACKBONES[backbone]
    images = torch.rand(BATCH, 3, SIZE, SIZE, device=device)
    flops = flops_per_image(backbone, layer, device)
    ways, setup = {}, {}
    for name, (precision, optimize, micro_batch) in WAYS.items():
        fx = FeatureExtractor(backbone, layer, pre_trained=False, precision=precision,
                              optimize=optimize, device=device)
        fx.micro_batch = micro_batch
        start = time.perf_counter()
        fx(images)  # builds the graph (tracing, compiling) and oneDNN primitives
        setup[name] = time.perf_counter() - start
        fx(images)
        ways[name] = fx
    times: dict[str, list[float]] = {name: [] for name in ways}
    ratios: dict[str, list[float]] = {name: [] for name in ways}
    rates: dict[str, list[float]] = {p: [] for p in DTYPES}
    for _ in range(ROUNDS):
        for name, fx in ways.items():
            precision = WAYS[name][0]
            rate = peak_matmul_flops_per_s(DTYPES[precision], device, sizes=(4096,))
            elapsed = seconds(lambda fx=fx: fx(images), device)
            times[name].append(elapsed)
            rates[precision].append(rate)
            ratios[name].append(BATCH / elapsed * flops / rate)
    default = ways["bf16 frozen (default)"]
    benchmark.pedantic(default, args=(images,), rounds=1, iterations=1)
    measured = ", ".join(f"{p} {statistics.median(v) / 1e9:,.0f} (best {max(v) / 1e9:,.0f})"
                         for p, v in rates.items())
    print(f"\n{backbone} to {layer}, {SIZE}x{SIZE}, batch {BATCH}, {device}, "
          f"{flops / 1e9:.2f} GFLOPs/image, torch threads {torch.get_num_threads()}; "
          f"matmul GFLOP/s median {measured}")
    rows = {}
    for name, (precision, _, _) in WAYS.items():
        best, median = BATCH / min(times[name]), BATCH / statistics.median(times[name])
        ratio = statistics.median(ratios[name])
        rows[name] = (median, ratio)
        print(f"  {name:22s} {median:7.1f} images/s (best {best:6.1f})  {ratio:6.1%} of the "
              f"{precision} limit (per-round ratios {min(ratios[name]):.0%}-"
              f"{max(ratios[name]):.0%})  first call {setup[name]:.1f} s")
    gain = rows["bf16 frozen (default)"][0] / rows["fp32 eager"][0]
    print(f"  bf16 frozen / fp32 eager: {gain:.2f}x")
    benchmark.extra_info.update({f"{n}_images_per_s": r[0] for n, r in rows.items()}
                                | {f"{n}_ratio_to_limit": r[1] for n, r in rows.items()})
    if backbone == "wide_resnet50" and device.type == "cpu":
        assert rows["bf16 frozen (default)"][1] >= 0.8


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
