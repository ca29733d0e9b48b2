"""End to end (fit + test on MVTec AD bottle): dfmx against the naive fp32 recipe.

    pytest benchmarks/test_end_to_end.py --benchmark-enable -s

The reference (``reference_pipeline.py``) decodes sequentially with PIL, runs an fp32 NCHW
backbone and a full float64 SVD. dfmx runs ``run_experiment`` with its defaults
(``precision=auto``, ``optimize=auto``: bf16 and a frozen graph on an AMX CPU), in the
same run, after the reference; both times include building the model. Two dfmx runs:

* **cold**: no feature cache, no decoded-image cache: every image decoded.
* **images cached**: the decoded images of the same files are in the cache, as for the
  second job of a sweep over backbones (features still extracted, no decoding).

Also printed: how long decoding alone takes (dfmx's threads, no backbone) against the
reference's sequential decoding. The 4x target is asserted on the cold run.
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


@pytest.mark.mvtec
@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(CASES))
def test_end_to_end_vs_reference(benchmark, bottle_root, tmp_path, backbone: str) -> None:
    cfg = _config(bottle_root, backbone)
    layer, pretrained = CASES[backbone]
    train, test = load_samples(cfg["data"])
    start = time.perf_counter()
    ref_model = ReferenceDFM(backbone, layer, pretrained, kernel_size=2, level=0.97)
    ref = run_reference(ref_model, train, test, size=256)
    ref_seconds = time.perf_counter() - start
    cold = benchmark.pedantic(_run_dfmx, args=(cfg, tmp_path / "cold", False),
                              rounds=1, iterations=1)
    decode = _decode(train + test, ref_model.interpolation)
    cache = FeatureCache(tmp_path / "cache")
    _decode(train, ref_model.interpolation, cache)  # what an earlier job of a sweep leaves
    _decode(test, ref_model.interpolation, cache)
    warm = _run_dfmx(cfg, tmp_path / "warm", cache)
    assert (warm["cache_hit_train"], warm["cache_hit_test"]) == (0.0, 0.0)  # features: miss
    speedup, warm_speedup = ref_seconds / cold["seconds_total"], ref_seconds / warm["seconds_total"]
    n = len(train) + len(test)
    print(
        f"\n{backbone} {layer} bottle ({n} images, 256px, FRE): reference fp32 "
        f"{ref_seconds:.1f} s (decoding {ref.seconds_decode:.1f} s sequential)\n"
        f"  dfmx cold {cold['seconds_total']:.1f} s (build {cold['time_build_model']:.1f} s, "
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
                                reference_s=ref_seconds, dfmx_s=cold["seconds_total"],
                                decode_s=decode)
    assert speedup >= 4
