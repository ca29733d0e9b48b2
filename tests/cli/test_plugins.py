"""Plugin discovery through the CLI, with plugin packages pip-installed for the test only.

``conftest.plugin_sites`` builds three one-module packages and installs them with
``pip install --target`` (real dist-info, real entry points); the commands put the target
folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from cli_runner import CliResult, CliRunner, Job, assert_clean_failure

import dfmx

from .conftest import load_metrics

BROKEN_WARNING = re.compile(
    r"skipping a plugin: the scorer plugin 'brokenscorer' = 'dfmx_broken:BrokenScorer' "
    r"from package dfmx-broken 0\.1\.0 failed to load: ImportError: .*no_such_dependency"
)


def test_help_lists_an_installed_plugin_and_warns_about_a_broken_one(cli) -> None:
    result = cli.help  # run with the good site (maxerr and brokenscorer) on PYTHONPATH
    assert result.returncode == 0, result
    scorers = next(ln for ln in result.stdout.splitlines() if ln.startswith("scorer:"))
    assert [s.strip() for s in scorers.split(":", 1)[1].split(",")] == [
        "fre", "knn", "maxerr", "nll", "ppca"
    ]
    assert BROKEN_WARNING.search(result.stderr), result


def test_installed_plugin_runs_end_to_end_next_to_broken_and_duplicate_ones(
    cli_runs: dict[str, CliResult],
) -> None:
    result = cli_runs["maxerr"]
    assert result.returncode == 0, result
    assert "Traceback" not in result.output, result
    # both bad packages are named in a warning, and the run goes on
    assert BROKEN_WARNING.search(result.stderr), result
    assert "dfmx-fre-clone" in result.stderr
    run_dir = result.run_dir
    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert cfg["scorer"] == {"name": "maxerr", "scale": 2.5}
    metrics = load_metrics(run_dir)
    assert math.isfinite(metrics["image_AUROC"])
    assert not any(k.startswith("pixel_") for k in metrics)   # produces_maps = False
    saved = json.loads((run_dir / "model" / "model.json").read_text())
    assert (saved["model"]["score_type"], saved["model"]["scorer_params"]) == ("maxerr",
                                                                      {"scale": 2.5})


def test_asking_for_a_broken_plugin_names_it(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["broken_scorer"]
    assert_clean_failure(result, "brokenscorer", "failed to load")
    assert BROKEN_WARNING.search(result.stderr), result
    # The error itself gives the reason, not only the warning before it.
    error = next(line for line in result.stderr.splitlines() if line.startswith("dfmx: error:"))
    assert re.search(r"'brokenscorer' .* failed to load: ImportError: .*no_such_dependency\. "
                     r"Fix or uninstall that package to use scorer=brokenscorer\.", error), result
    assert not (result.run_dir / "metrics.json").exists()


def test_a_name_registered_twice_is_refused_naming_both_packages(
    cli_runs: dict[str, CliResult],
) -> None:
    result = cli_runs["duplicate_fre"]
    assert_clean_failure(result, "'fre' is registered more than once")
    assert re.search(r"'fre' = 'dfmx_fre_clone:FREClone' from package dfmx-fre-clone \S+",
                     result.output), result
    assert re.search(r"'fre' = 'dfmx\.scorers\.fre:FREScorer' from package dfmx \S+",
                     result.output), result
    assert not (result.run_dir / "metrics.json").exists()


def test_predict_without_the_scorer_plugin_names_its_package(
    cli: CliRunner, plugin_sites: dict[str, Path], demo_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model saved where the maxerr package is installed, scored by the real
    ``dfmx-predict`` where it is not: one line naming the scorer and the package."""
    import torch

    from dfmx import DFMModel, registry, save_model

    monkeypatch.syspath_prepend(str(plugin_sites["good"]))   # maxerr installed, in process
    registry.clear_cache()
    try:
        model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2,
                         score_type="maxerr")
        model.fit(*model.get_features(torch.rand(4, 3, 64, 64)))
        saved = save_model(model, tmp_path / "model", image_size=64)
    finally:
        registry.clear_cache()
    meta = json.loads((saved / "model.json").read_text())
    assert meta["plugin_packages"] == {"scorer": "dfmx-maxerr 0.1.0",
                                       "pooling": f"dfmx {dfmx.__version__}"}

    out = tmp_path / "preds"
    result = cli.run_job(Job([str(saved), str(demo_dir / "test" / "good" / "000.png"),
                              "-o", str(out)], script="dfmx-predict"))
    assert_clean_failure(result, "dfmx-predict: MissingPluginError:",
                         "needs the scorer plugin 'maxerr', which is not installed here",
                         "dfmx-maxerr 0.1.0", "pip install 'dfmx-maxerr==0.1.0'",
                         "Installed scorers: fre, knn, nll")
    assert not (out / "predictions.csv").exists()
