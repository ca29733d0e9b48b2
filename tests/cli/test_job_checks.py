"""Bad plugin, layer, job and model options are refused before a run folder, an MLflow
store or a run exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import CliResult, command_env, run_cli, warm_cache

from dfmx.cli.compose import compose_config
from dfmx.cli.job_checks import job_problem, plugin_problem


def test_good_config_has_no_problem() -> None:
    assert job_problem(compose_config(["scorer=knn", "scorer.n_neighbors=3"])) is None


@pytest.mark.parametrize("overrides, needle", [
    (["scorer=knn", "scorer.n_neighbors=0"], "n_neighbors must be >= 1; got 0"),
    (["pooling.kernel_size=0"], "pooling=avg"),
    (["image_size=0"], "image_size must be a whole number >= 1"),
    (["layer.names=[blocks.2,blocks.3]"], "Unknown layer(s) 'blocks.3' for backbone"),
    (["backbone=resnet18", "layer.names=[blocks.4]"], "its layers are: act1, layer1"),
    (["pca_level=1.5"], "pca_level must be a variance ratio in (0, 1)"),
    (["combine=bogus"], "combine must be one of concat, ensemble; got 'bogus'"),
    (["precision=fp16"], "precision must be one of auto, fp32, bf16; got 'fp16'"),
    (["reduction=bogus"], "reduction must be one of sum, max, topk; got 'bogus'"),
    (["data=mvtec", "data.root=/x"], "data=mvtec: data.category is required"),
    (["data=folder"], "data=folder: data.normal_dir is required"),
    (["reduction_topk=2.0"], "reduction_topk must be a share of the map in (0, 1]"),
    (["device=gpu"], "device must be cpu, cuda, cuda:N, mps or auto; got 'gpu'"),
    (["optimize=fast"], "optimize must be one of auto, none, freeze, compile; got 'fast'"),
    (["scorer=nll", "reduction=max"], "scorer 'nll' gives image scores only"),
])
def test_bad_options_are_named(overrides: list[str], needle: str) -> None:
    problem = job_problem(compose_config(overrides))
    assert problem is not None and needle in problem


def test_unknown_option_of_a_plugin_is_a_problem() -> None:
    problem = plugin_problem("scorer", {"name": "fre", "bogus": 1})
    assert problem is not None and "bogus" in problem


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def _dfmx(workdir: Path, *args: str) -> CliResult:
    env = command_env(warm_cache(workdir / "cache"),
                      MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    return run_cli(args, workdir, env, timeout=900)


@pytest.mark.parametrize("args, needle", [
    (["scorer=knn", "scorer.n_neighbors=0"], "n_neighbors must be >= 1; got 0"),
    (["scorer=knn", "scorer.n_neighbors=abc"], "bad value for scorer.n_neighbors"),
    (["-m", "scorer=knn", "scorer.n_neighbors=3,0"], "n_neighbors must be >= 1; got 0"),
    (["-m", "pooling.kernel_size=2,abc"], "could not be converted to Integer"),
    (["-m", "layer.names=[blocks.2,blocks.4],[blocks.3]"], "Unknown layer(s) 'blocks.3'"),
    # Each backbone and each layer list is good; two of the four jobs pair them wrongly.
    (["-m", "backbone=resnet18,efficientnet_lite0", "backbone.pretrained=false",
      "layer.names=[layer2],[blocks.2]"], "Unknown layer(s) 'blocks.2' for backbone "
     "'resnet18'; its layers are: act1, layer1, layer2, layer3, layer4. (sweep job #1: "
     "backbone=resnet18 layer.names=[blocks.2])"),
    (["pca_level=1.5"], "pca_level must be a variance ratio in (0, 1)"),
    (["combine=bogus"], "combine must be one of concat, ensemble; got 'bogus'"),
    (["precision=fp16"], "precision must be one of auto, fp32, bf16; got 'fp16'"),
    (["reduction=bogus"], "reduction must be one of sum, max, topk; got 'bogus'"),
    (["data=mvtec", "data.root=/x"], "data=mvtec: data.category is required"),
    (["data=folder"], "data=folder: data.normal_dir is required"),
    (["-m", "precision=fp32,fp16"], "precision must be one of auto, fp32, bf16; got 'fp16'"),
])
def test_bad_plugin_option_stops_before_any_run(workdir: Path, args: list[str],
                                                needle: str) -> None:
    result = _dfmx(workdir, *args)
    output = result.output
    assert result.returncode == 2, result
    assert output.count("dfmx: error:") == 1 and needle in output, result
    assert "Traceback" not in output, result
    assert not (workdir / "outputs").exists() and not (workdir / "multirun").exists()
    assert not (workdir / "mlflow.db").exists()  # no store made either


@pytest.mark.parametrize("value, needle", [
    ("${oops}", "cannot resolve pca_level: Interpolation key 'oops' not found"),
    ("${oc.env:DFMX_TEST_UNSET_VARIABLE}", "cannot resolve pca_level: "),
])
def test_an_unresolvable_value_is_one_line(workdir: Path, value: str, needle: str) -> None:
    """Resolved by the job (its interpolations may need Hydra's job-time values): one
    error line, exit status 1, no traceback."""
    result = _dfmx(workdir, "tracking=none", f"pca_level={value}")
    assert result.returncode == 1, result
    assert needle in result.output and "Traceback" not in result.output, result


def test_an_unresolvable_value_shows_its_traceback_with_debug(workdir: Path) -> None:
    """The one line's hint, "run with debug=true for the full traceback", holds."""
    result = _dfmx(workdir, "tracking=none", "pca_level=${oops}", "debug=true")
    assert result.returncode == 1, result
    assert "Traceback" in result.output and "cannot resolve pca_level" in result.output, result
