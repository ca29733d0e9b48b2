"""PCA fit against a full float64 SVD, and the streaming fit's scaling with N.

    pytest benchmarks/test_pca_fit.py --benchmark-enable -s

Each measurement runs in a fresh subprocess (``_pca_probe.py``) so that the peak resident
memory it reports belongs to that fit alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

PROBE = Path(__file__).with_name("_pca_probe.py")


def _probe(*args: object) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(PROBE), *map(str, args)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _aligned_error(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Max |a - b| over entries and max ||a_i - b_i|| over rows, each row's sign aligned."""
    signs = torch.sign((a * b).sum(dim=1, keepdim=True))
    diff = a - signs * b
    return float(diff.abs().max()), float(torch.linalg.vector_norm(diff, dim=1).max())


def test_pca_fit_vs_full_svd(benchmark, tmp_path) -> None:
    n, d = 2000, 16384
    data, ours_file, ref_file = tmp_path / "x.pt", tmp_path / "dfmx.pt", tmp_path / "svd.pt"
    subprocess.run([sys.executable, str(PROBE), "make", str(n), str(d), str(data)], check=True)
    svd = _probe("svd", data, ref_file)
    ours = benchmark.pedantic(_probe, args=("fit", data, ours_file), rounds=1, iterations=1)
    k = int(ours["k"])
    comps, ref = torch.load(ours_file), torch.load(ref_file)
    k_cmp = min(k, comps.shape[0])
    entry_err, row_err = _aligned_error(comps[:k_cmp], ref[:k_cmp])
    time_ratio = ours["seconds"] / svd["seconds"]
    mem_ratio = ours["peak_extra_mib"] / svd["peak_extra_mib"]
    print(
        f"\nPCA fit {n}x{d} float32, level 0.97 -> k={k}: dfmx {ours['seconds']:.2f} s, "
        f"{ours['peak_extra_mib']:.0f} MiB extra; float64 SVD {svd['seconds']:.2f} s, "
        f"{svd['peak_extra_mib']:.0f} MiB extra; time ratio {time_ratio:.3f}, "
        f"memory ratio {mem_ratio:.3f}; components (first {k_cmp}) max |diff| {entry_err:.2e}, "
        f"max row-norm diff {row_err:.2e}"
    )
    benchmark.extra_info.update(time_ratio=time_ratio, memory_ratio=mem_ratio,
                                max_abs_diff=entry_err, max_row_diff=row_err)
    assert entry_err <= 1e-4
    assert time_ratio <= 0.3
    assert mem_ratio <= 0.5


def test_streaming_fit_scaling(benchmark) -> None:
    d = 4096
    rows = {}
    for n in (1_000, 5_000):
        rows[n] = _probe("stream", n, d)
    rows[20_000] = benchmark.pedantic(_probe, args=("stream", 20_000, d), rounds=1, iterations=1)
    print(f"\nPCA.fit_batches, d={d}, batches of 500 made on the fly (time includes making them)")
    print(f"{'N':>7} {'seconds':>8} {'peak extra MiB':>15} {'k':>5} {'materialised MiB':>17}")
    for n, r in rows.items():
        print(f"{n:>7} {r['seconds']:>8.2f} {r['peak_extra_mib']:>15.0f} {int(r['k']):>5} "
              f"{n * d * 4 / 2**20:>17.0f}")
    benchmark.extra_info.update({f"peak_mib_{n}": r["peak_extra_mib"] for n, r in rows.items()})
    # Memory follows d (a d x d float64 covariance is 128 MiB here), not N.
    assert rows[20_000]["peak_extra_mib"] < 1.5 * rows[1_000]["peak_extra_mib"] + 64
