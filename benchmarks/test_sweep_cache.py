"""A sweep over pooling, PCA level and scorer on one backbone costs about one job.

    .venv/bin/pytest benchmarks/test_sweep_cache.py --benchmark-enable -s

Runs the 8 configurations of ``scorer=fre,nll pooling.kernel_size=2,4
pca_level=0.9,0.97`` in sequence, in process, sharing one new cache: the first job is a
single configuration with a cold cache, the other seven read its raw features. MVTec AD
bottle (when present) and the demo data, EfficientNet-Lite0 (offline weights) at 256 px,
no model files, no overlays. The ratio is the whole sweep's time over its first job's: both
in the same minutes, because this machine's speed swings too much between minutes for a
separate single run to compare with (it once gave 1.72x and, minutes later, 1.20x).
Checks the ratio is at most 1.5 on bottle. A separate single run before the sweep (same
config as one sweep job: same AUROC) is printed for information. Also prints the ratio of
the part the cache acts on (the jobs' ``time_total``: build, extract, fit, score), without
metrics, plots and files, which every job pays in full.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import mvtec_root
from dfmx.cli.compose import compose_config
from dfmx.data import demo_root
from dfmx.experiment.run import RunResult, build_model, load_samples, run_experiment
from dfmx.features.cache import FeatureCache

MAX_RATIO = 1.5
SWEEP = list(itertools.product(("fre", "nll"), (2, 4), (0.9, 0.97)))


def _config(data: tuple[Path, str], scorer: str, kernel: int, pca_level: float) -> dict[str, Any]:
    root, category = data
    return compose_config([
        "data=mvtec", f"data.root={root}", f"data.category={category}", f"scorer={scorer}",
        f"pooling.kernel_size={kernel}", f"pca_level={pca_level}", "precision=fp32",
        "save_model=false", "overlays=0",
    ])


@pytest.fixture(params=["bottle", "demo"])
def data(request: pytest.FixtureRequest) -> tuple[Path, str]:
    if request.param == "demo":
        return demo_root(), "demo"  # generated once, outside the timings
    root = mvtec_root()
    if root is None:
        pytest.skip("MVTec AD bottle data not found")
    return root, "bottle"


def test_sweep_of_8_costs_at_most_1_5x_one_job(benchmark, tmp_path: Path, data) -> None:
    root = data
    warm_cfg = _config(root, "fre", 2, 0.97)
    load_samples(warm_cfg["data"])
    build_model(warm_cfg)  # imports and first model construction, outside the timings

    start = time.perf_counter()
    single = run_experiment(warm_cfg, tmp_path / "single", cache=FeatureCache(tmp_path / "c1"))
    single_s = time.perf_counter() - start
    assert single.metrics["cache_hit_train"] == 0.0 and single.metrics["cache_hit_test"] == 0.0

    cache = FeatureCache(tmp_path / "c8")
    results: list[RunResult] = []
    walls: list[float] = []

    # Composed before the clock starts, as the single job's config is (0.13 s each).
    configs = [_config(root, *params) for params in SWEEP]

    def sweep() -> None:
        for i, cfg in enumerate(configs):
            t0 = time.perf_counter()
            result = run_experiment(cfg, tmp_path / f"job{i}", cache=cache)
            walls.append(time.perf_counter() - t0)
            results.append(result)

    start = time.perf_counter()
    benchmark.pedantic(sweep, rounds=1, iterations=1)
    sweep_s = time.perf_counter() - start

    first_s = walls[0]  # a single configuration, cold cache, in the sweep's minutes
    ratio = sweep_s / first_s
    # The part the cache acts on: build, extract, fit, score (no metrics, plots, files).
    pipeline_first = results[0].metrics["time_total"]
    pipeline_sweep = sum(r.metrics["time_total"] for r in results)
    pipeline_ratio = pipeline_sweep / pipeline_first
    hits = [(r.metrics["cache_hit_train"], r.metrics["cache_hit_test"]) for r in results]
    print(f"\nsweep of {len(SWEEP)} jobs with the cache: {sweep_s:.2f} s; its first job "
          f"(cold cache) {first_s:.2f} s; ratio {ratio:.2f} (limit {MAX_RATIO}); a separate "
          f"single job before it: {single_s:.2f} s ({sweep_s / single_s:.2f}x)")
    print(f"build+extract+fit+score only: first job {pipeline_first:.2f} s, sweep "
          f"{pipeline_sweep:.2f} s; ratio {pipeline_ratio:.2f}")
    for params, r, wall in zip(SWEEP, results, walls, strict=True):
        m = r.metrics
        print(f"  scorer={params[0]} k={params[1]} pca={params[2]}: "
              f"hit={m['cache_hit_train']:.0f}/{m['cache_hit_test']:.0f} "
              f"build {m['time_build_model']:.2f} s, extract {m['time_extract_train']:.2f} s, "
              f"fit {m['time_fit']:.2f} s, score {m['time_score_test']:.2f} s, "
              f"metrics+files {wall - m['time_total']:.2f} s, "
              f"image AUROC {m['image_AUROC']:.4f}")
    benchmark.extra_info.update({"single_s": single_s, "first_s": first_s, "sweep_s": sweep_s,
                                 "ratio": ratio, "pipeline_ratio": pipeline_ratio})
    assert hits == [(0.0, 0.0)] + [(1.0, 1.0)] * (len(SWEEP) - 1)
    same = results[SWEEP.index(("fre", 2, 0.97))].metrics
    assert same["image_AUROC"] == single.metrics["image_AUROC"]
    assert pipeline_ratio <= MAX_RATIO
    if data[1] == "bottle":
        # On the tiny demo set (110 images of 256 px) a warm job's metrics and plots
        # (~0.9 s) weigh as much as the extraction the cache saves; the whole-job target
        # is checked on a real data set.
        assert ratio <= MAX_RATIO
