"""One PCA fit measurement in a fresh process (run by ``test_pca_fit.py``; not a test).

    python benchmarks/_pca_probe.py make N D X.pt
    python benchmarks/_pca_probe.py fit|svd X.pt OUT.pt
    python benchmarks/_pca_probe.py stream N D

Prints one JSON line: ``seconds`` of the fit and ``peak_extra_mib``, the growth of the
process's peak resident set size (``VmHWM``) during the fit, i.e. the peak
extra memory the method needed beyond the input. A small fit of the same kind runs first,
so that the libraries' code and thread pools paged in on first use are not counted. torch
allocations are invisible to ``tracemalloc``, hence a fresh process per measurement.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator

import torch

from dfmx.engine.pca import PCA


def _max_rss() -> int:
    """Peak resident bytes of this process image: ``VmHWM`` where Linux has it. Not
    ``ru_maxrss``: Linux carries that over ``fork`` + ``exec``, so a child of a large
    pytest process starts at its parent's peak and shows no growth (it did: 0 MiB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def synthetic_features(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``(n, d)`` float32 with a DFM-like decaying spectrum (``σ_i ∝ exp(-i / 150)``)."""
    g = torch.Generator().manual_seed(seed)
    r = min(n, d)
    scales = torch.exp(-torch.arange(r, dtype=torch.float32) / 150)
    latent = torch.randn(n, r, generator=g) * scales
    basis = torch.linalg.qr(torch.randn(d, r, generator=g))[0]
    return (latent @ basis.T + torch.randn(d, generator=g)).contiguous()


def streamed_batches(n: int, d: int, batch: int = 500, latent: int = 256) -> Iterator[torch.Tensor]:
    """``n`` rows of ``d`` features made on the fly, ``batch`` rows at a time."""
    g = torch.Generator().manual_seed(0)
    scales = torch.exp(-torch.arange(latent, dtype=torch.float32) / 60)
    mixing = torch.linalg.qr(torch.randn(d, latent, generator=g))[0].T.contiguous()
    offset = torch.randn(d, generator=g)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, latent, generator=g) * scales
        yield z @ mixing + offset + 0.01 * torch.randn(b, d, generator=g)


def _svd_components(x: torch.Tensor) -> torch.Tensor:
    xd = x.double()
    xd -= xd.mean(dim=0)
    return torch.linalg.svd(xd, full_matrices=False)[2]


def _pca_components(x: torch.Tensor) -> torch.Tensor:
    return PCA(0.97).fit(x).components_


def main() -> None:
    mode = sys.argv[1]
    if mode == "make":
        torch.save(synthetic_features(int(sys.argv[2]), int(sys.argv[3])), sys.argv[4])
        return
    if mode == "stream":
        n, d = int(sys.argv[2]), int(sys.argv[3])
        base = _max_rss()
        start = time.perf_counter()
        pca = PCA(0.97).fit_batches(streamed_batches(n, d))
        seconds = time.perf_counter() - start
        result = {"k": pca.n_components_}
    else:
        x = torch.load(sys.argv[2])  # loading peaks at about the size of x itself
        fit = _svd_components if mode == "svd" else _pca_components
        fit(synthetic_features(600, 2048, seed=1))  # pages in the code and thread pools
        base = _max_rss()
        start = time.perf_counter()
        components = fit(x)
        seconds = time.perf_counter() - start
        torch.save(components[:400].float().clone(), sys.argv[3])
        result = {"k": int(components.shape[0])}
    result.update(seconds=seconds, peak_extra_mib=(_max_rss() - base) / 2**20)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
