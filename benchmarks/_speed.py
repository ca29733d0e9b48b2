"""Timing helpers shared by the speed benchmarks (not a test module)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def bench_device() -> torch.device:
    """CUDA when there is one, else the CPU: every speed benchmark runs there."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Wait for queued kernels (CUDA) so wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def peak_matmul_flops_per_s(dtype: torch.dtype, device: torch.device,
                            sizes: tuple[int, ...] = (4096, 8192), reps: int = 3) -> float:
    """The best rate of square matmuls in ``dtype`` (FLOP/s, 2 n³ per product): the best
    of ``reps`` products at each size, so a product slowed by another process sharing
    the cores does not count."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up (oneDNN/cuBLAS kernel selection)
        best = max(best, 2 * n**3 / min(seconds(lambda a=a, b=b: a @ b, device)
                                        for _ in range(reps)))
    return best
