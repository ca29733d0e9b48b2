"""Feature extraction speed against the machine's compute limit.

    pytest benchmarks/test_extraction_speed.py --benchmark-enable -s

The limit of a backbone in a precision is its FLOPs per image (``FlopCounterMode`` on the
eager net, a multiply-add counts 2) divided by the best measured rate of square matmuls in
that precision (``_speed.peak_matmul_flops_per_s``: 4096² and 8192², best of 3, in every
round). Each way of running the backbone is timed in every round, interleaved with the
matmuls; its best round over the best matmul rate is the ratio printed. (On this shared
2-core machine medians swing 2-3x between runs; best-of is repeatable to ~10%.)

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
#: name -> (precision, optimize); the default is what ``precision=auto optimize=auto`` gives.
WAYS = {
    "fp32 eager": ("fp32", "none"),
    "fp32 frozen": ("fp32", "freeze"),
    "bf16 eager": ("bf16", "none"),
    "bf16 frozen (default)": ("bf16", "freeze"),
    "bf16 compiled": ("bf16", "compile"),
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
    for name, (precision, optimize) in WAYS.items():
        fx = FeatureExtractor(backbone, layer, pre_trained=False, precision=precision,
                              optimize=optimize, device=device)
        start = time.perf_counter()
        fx(images)  # builds the graph (tracing, compiling) and oneDNN primitives
        setup[name] = time.perf_counter() - start
        fx(images)
        ways[name] = fx
    times: dict[str, list[float]] = {name: [] for name in ways}
    peaks: dict[str, list[float]] = {p: [] for p in DTYPES}
    for _ in range(ROUNDS):
        for precision, dtype in DTYPES.items():
            peaks[precision].append(peak_matmul_flops_per_s(dtype, device))
        for name, fx in ways.items():
            times[name].append(seconds(lambda fx=fx: fx(images), device))
    default = ways["bf16 frozen (default)"]
    benchmark.pedantic(default, args=(images,), rounds=1, iterations=1)
    peak = {p: max(v) for p, v in peaks.items()}
    rates = ", ".join(
        f"{p} {v / 1e9:,.0f} GFLOP/s (median {statistics.median(peaks[p]) / 1e9:,.0f})"
        for p, v in peak.items()
    )
    print(f"\n{backbone} to {layer}, {SIZE}x{SIZE}, batch {BATCH}, {device}, "
          f"{flops / 1e9:.2f} GFLOPs/image, torch threads {torch.get_num_threads()}; "
          f"best matmul {rates}")
    rows = {}
    for name, (precision, _) in WAYS.items():
        best = BATCH / min(times[name])
        limit = peak[precision] / flops
        rows[name] = (best, best / limit)
        median = BATCH / statistics.median(times[name])
        print(f"  {name:22s} {best:7.1f} images/s (median {median:6.1f})"
              f"  {best / limit:6.1%} of the {precision} limit ({limit:.1f} images/s)"
              f"  first call {setup[name]:.1f} s")
    gain = rows["bf16 frozen (default)"][0] / rows["fp32 eager"][0]
    print(f"  bf16 frozen / fp32 eager: {gain:.2f}x")
    benchmark.extra_info.update({f"{n}_images_per_s": r[0] for n, r in rows.items()}
                                | {f"{n}_ratio_to_limit": r[1] for n, r in rows.items()})
    if backbone == "wide_resnet50" and device.type == "cpu":
        assert max(r[1] for n, r in rows.items() if n.startswith("bf16")) >= 0.8


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
