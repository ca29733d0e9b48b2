"""Accuracy of the command line's default configuration against its targets.

    pytest benchmarks/test_accuracy.py -s --benchmark-enable

runs the CLI default (``python -m dfmx``'s composed config, only the data and output
options changed) on MVTec AD bottle and on the embedded demo data, prints image and pixel
AUROC and PRO, and checks the targets: bottle image AUROC >= 0.995, pixel AUROC >= 0.980,
PRO >= 0.93; demo image AUROC >= 0.97. ``docs/accuracy.md`` says why the defaults are
what they are.
"""

from __future__ import annotations

import pytest

from dfmx.cli.compose import compose_config
from dfmx.experiment.run import run_experiment

_QUIET = ("tracking=none", "save_model=false", "overlays=0", "cache.enabled=false")


def _run(benchmark, overrides: list[str], out) -> dict[str, float]:
    result = benchmark.pedantic(run_experiment, args=(compose_config([*overrides, *_QUIET]), out),
                                rounds=1, iterations=1)
    m = result.metrics
    shown = {k: m[k] for k in ("image_AUROC", "pixel_AUROC", "pixel_PRO") if k in m}
    print("\n" + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    benchmark.extra_info.update(shown)
    return m


@pytest.mark.mvtec
def test_bottle_cli_default_targets(benchmark, bottle_root, tmp_path) -> None:
    m = _run(benchmark, ["data=mvtec", f"data.root={bottle_root}", "data.category=bottle"],
             tmp_path)
    assert m["image_AUROC"] >= 0.995
    assert m["pixel_AUROC"] >= 0.980
    assert m["pixel_PRO"] >= 0.93


def test_demo_cli_default_target(benchmark, tmp_path) -> None:
    m = _run(benchmark, ["data=demo"], tmp_path)
    assert m["image_AUROC"] >= 0.97
