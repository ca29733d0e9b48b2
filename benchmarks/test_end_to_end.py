"""End to end (fit + test on MVTec AD bottle): dfmx against the naive fp32 recipe.

    pytest benchmarks/test_end_to_end.py --benchmark-enable -s

The reference (``reference_pipeline.py``) decodes sequentially with PIL, runs an fp32 NCHW
backbone and a full float64 SVD. dfmx runs ``run_experiment`` with its defaults
(``precision=auto``, ``optimize=auto``: bf16 and a frozen graph on an AMX CPU); both times
include building the model.

This machine's speed swings by 2x within a minute (other tenants share its cores), so the
two are measured in :data:`ROUNDS` alternating rounds (reference, then dfmx) and compared
best against best, as ``timeit`` does: the fastest run of each is the one least slowed by
others. Each round's own ratio is printed too.

* **cold**: no feature cache, no decoded-image cache: every image decoded.
* **images cached** (one run): the decoded images of the same files are in the cache, as
  for the second job of a sweep over backbones (features still extracted, no decoding).

Also printed: how long decoding alone takes (dfmx's threads, no backbone) against the
reference's sequential decoding. The 4x target is asserted on the cold runs.
"""

from __future__ import annotations

import time

import pytest

from benchmarks.reference_pipeline import ReferenceDFM, run_reference
from benchmarks.test_accuracy import _config as accuracy_config
from dfmx.data.batches import image_batches
from dfmx.experiment.run import load_samples, run_experiment
from dfmx.features.cache import FeatureCache

CASES = {
    "efficientnet_lite0": ("blocks.4", True),
    "wide_resnet50": ("layer3", False),
}


def _config(root, backbone: str) -> dict:
    layer, pretrained = CASES[backbone]
    return accuracy_config(root, "auto", backbone, f"backbone.pretrained={str(pretrained).lower()}",
                           f"backbone.layers=[{layer}]")


def _run_dfmx(cfg: dict, out, cache) -> dict[str, float]:
    start = time.perf_counter()
    metrics = run_experiment(cfg, out, cache=cache).metrics
    return {**metrics, "seconds_total": time.perf_counter() - start}


def _decode(samples, interpolation: str, store=None) -> float:
    start = time.perf_counter()
    for _ in image_batches(samples, 256, interpolation, 16, store=store):
        pass
    return time.perf_counter() - start


ROUNDS = 3


@pytest.mark.mvtec
@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(CASES))
def test_end_to_end_vs_reference(benchmark, bottle_root, tmp_path, backbone: str) -> None:
    cfg = _config(bottle_root, backbone)
    layer, pretrained = CASES[backbone]
    train, test = load_samples(cfg["data"])
    refs, colds = [], []
    interpolation = ""

    def one_round(i: int) -> dict[str, float]:
        nonlocal interpolation
        start = time.perf_counter()
        ref_model = ReferenceDFM(backbone, layer, pretrained, kernel_size=2, level=0.97)
        refs.append((time.perf_counter() - start, run_reference(ref_model, train, test, 256)))
        interpolation = ref_model.interpolation
        colds.append(_run_dfmx(cfg, tmp_path / f"cold{i}", False))
        return colds[-1]

    benchmark.pedantic(one_round, args=(0,), rounds=1, iterations=1)
    for i in range(1, ROUNDS):
        one_round(i)
    decode = _decode(train + test, interpolation)
    cache = FeatureCache(tmp_path / "cache")
    _decode(train, interpolation, cache)  # what an earlier job of a sweep leaves
    _decode(test, interpolation, cache)
    warm = _run_dfmx(cfg, tmp_path / "warm", cache)
    assert (warm["cache_hit_train"], warm["cache_hit_test"]) == (0.0, 0.0)  # features: miss

    ref_times = [build + r.seconds_total for build, r in refs]
    cold_times = [c["seconds_total"] for c in colds]
    ref_best, cold_best = min(ref_times), min(cold_times)
    speedup, warm_speedup = ref_best / cold_best, ref_best / warm["seconds_total"]
    ref, cold = refs[ref_times.index(ref_best)][1], colds[cold_times.index(cold_best)]
    n = len(train) + len(test)
    rounds = ", ".join(f"{r:.1f}/{c:.1f} s = {r / c:.2f}x"
                       for r, c in zip(ref_times, cold_times, strict=True))
    print(
        f"\n{backbone} {layer} bottle ({n} images, 256px, FRE), reference/dfmx cold per "
        f"round: {rounds}\n"
        f"  best: reference fp32 {ref_best:.1f} s (decoding {ref.seconds_decode:.1f} s "
        f"sequential); dfmx cold {cold_best:.1f} s (build {cold['time_build_model']:.1f} s, "
        f"extract train {cold['time_extract_train']:.1f} s, fit {cold['time_fit']:.2f} s, "
        f"score test {cold['time_score_test']:.1f} s) -> {speedup:.2f}x; "
        f"its decoding alone {decode:.1f} s\n"
        f"  dfmx with the decoded images cached {warm['seconds_total']:.1f} s "
        f"(extract train {warm['time_extract_train']:.1f} s, score test "
        f"{warm['time_score_test']:.1f} s) -> {warm_speedup:.2f}x\n"
        f"  image AUROC ref {ref.metrics['image_AUROC']:.4f} dfmx {cold['image_AUROC']:.4f}; "
        f"pixel AUROC ref {ref.metrics['pixel_AUROC']:.4f} dfmx {cold['pixel_AUROC']:.4f}"
    )
    benchmark.extra_info.update(speedup=speedup, speedup_images_cached=warm_speedup,
                                reference_s=ref_times, dfmx_s=cold_times, decode_s=decode)
    assert speedup >= 4
