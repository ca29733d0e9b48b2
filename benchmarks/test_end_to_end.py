"""End to end (fit + test on MVTec AD bottle): dfmx in bf16 against the naive fp32 recipe.

    pytest benchmarks/test_end_to_end.py --benchmark-enable -s

The reference (``reference_pipeline.py``) decodes sequentially with PIL, runs an fp32 NCHW
backbone and a full float64 SVD. dfmx runs ``run_experiment`` with ``precision=bf16`` (its
DataLoader decodes in worker processes). Both in the same run, the reference first; the
feature cache is off. Also printed: how long decoding alone takes in each (dfmx: one pass
of its DataLoader without the backbone), to show decoding is not the bottleneck.
"""

from __future__ import annotations

import inspect
import time

import pytest

from benchmarks.reference_pipeline import ReferenceDFM, run_reference
from benchmarks.test_accuracy import _config as accuracy_config
from dfmx.data import ImageDataset, make_loader
from dfmx.experiment.run import load_samples, run_experiment

CASES = {
    "efficientnet_lite0": ("blocks.4", True),
    "wide_resnet50": ("layer3", False),
}


def _config(root, backbone: str) -> dict:
    layer, pretrained = CASES[backbone]
    return accuracy_config(root, "bf16", backbone, f"backbone.pretrained={str(pretrained).lower()}",
                           f"backbone.layers=[{layer}]")


def _run_dfmx(cfg: dict, out) -> dict[str, float]:
    kwargs = {"cache": False} if "cache" in inspect.signature(run_experiment).parameters else {}
    start = time.perf_counter()
    metrics = run_experiment(cfg, out, **kwargs).metrics
    return {**metrics, "seconds_total": time.perf_counter() - start}


def _decode_only(cfg: dict, samples, interpolation: str) -> float:
    loader = make_loader(ImageDataset(samples, 256, interpolation), batch_size=16)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


@pytest.mark.mvtec
@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(CASES))
def test_end_to_end_vs_reference(benchmark, bottle_root, tmp_path, backbone: str) -> None:
    cfg = _config(bottle_root, backbone)
    layer, pretrained = CASES[backbone]
    train, test = load_samples(cfg["data"])
    ref_model = ReferenceDFM(backbone, layer, pretrained, kernel_size=2, level=0.97)
    ref = run_reference(ref_model, train, test, size=256)
    ours = benchmark.pedantic(_run_dfmx, args=(cfg, tmp_path), rounds=1, iterations=1)
    decode = _decode_only(cfg, train + test, ref_model.interpolation)
    speedup = ref.seconds_total / ours["seconds_total"]
    n = len(train) + len(test)
    print(
        f"\n{backbone} {layer} bottle ({n} images, 256px, FRE): reference fp32 "
        f"{ref.seconds_total:.1f} s (decoding {ref.seconds_decode:.1f} s sequential), "
        f"dfmx bf16 {ours['seconds_total']:.1f} s (extract train {ours['time_extract_train']:.1f}"
        f" s, fit {ours['time_fit']:.2f} s, score test {ours['time_score_test']:.1f} s; "
        f"its DataLoader alone {decode:.1f} s) -> {speedup:.2f}x\n"
        f"  image AUROC ref {ref.metrics['image_AUROC']:.4f} dfmx {ours['image_AUROC']:.4f}; "
        f"pixel AUROC ref {ref.metrics['pixel_AUROC']:.4f} dfmx {ours['pixel_AUROC']:.4f}"
    )
    benchmark.extra_info.update(speedup=speedup, reference_s=ref.seconds_total,
                                dfmx_s=ours["seconds_total"], decode_s=decode)
    assert speedup >= 4
