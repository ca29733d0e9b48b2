"""Job-level options are checked before a job reads any data, with messages that name them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dfmx.cli.compose import compose_config
from dfmx.cli.config_store import job_value_problem
from dfmx.experiment.job_config import JobConfig, check_job_config
from dfmx.experiment.run import model_config, run_experiment


@pytest.fixture(scope="module")
def default() -> dict[str, Any]:
    return compose_config(["tracking=none"])


def test_the_default_config_and_edge_values_pass(default: dict[str, Any]) -> None:
    check_job_config(default)
    check_job_config({**default, "num_workers": 0, "overlays": 0, "seed": -1,
                      "pca_level": 5, "image_size": np.int64(1), "save_model": False})
    check_job_config({"image_size": 64, "batch_size": 1, "pca_level": 0.5})  # rest default


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("image_size", 0, "image_size must be a whole number >= 1"),
    ("image_size", -5, "got -5"),
    ("image_size", "abc", "got 'abc'"),
    ("image_size", [64, 96], "got [64, 96]"),
    ("image_size", 128.0, "got 128.0"),
    ("image_size", True, "got True"),
    ("batch_size", 0, "batch_size must be a whole number >= 1 (images per backbone call)"),
    ("num_workers", -3, "num_workers must be a whole number >= 0 or null"),
    ("overlays", -1, "overlays must be a whole number >= 0"),
    ("seed", "abc", "seed must be a whole number"),
    ("save_model", "maybe", "save_model must be true or false; got 'maybe'"),
    ("debug", "maybe", "debug must be true or false; got 'maybe'"),
    ("threshold_fpr", 0.0, "threshold_fpr must be a number in (0, 1)"),
    ("threshold_fpr", 1.5, "got 1.5"),
    ("select_metric", "", "select_metric must be a metric name"),
    ("data", {"name": "demo", "val_fraction": 1.0},
     "data.val_fraction must be a number in [0, 1) (share of the training normals"),
])
def test_a_bad_value_is_named(default: dict[str, Any], key: str, value: Any,
                              needle: str) -> None:
    with pytest.raises(ValueError) as err:
        check_job_config({**default, key: value})
    assert needle in str(err.value)


def test_every_problem_in_one_message(default: dict[str, Any]) -> None:
    cfg = {k: v for k, v in default.items() if k != "image_size"}
    with pytest.raises(ValueError) as err:
        check_job_config({**cfg, "overlays": -1, "batch_size": None})
    assert str(err.value).startswith("the config has no image_size")
    for needle in ("overlays", "batch_size", "got None"):
        assert needle in str(err.value)


@pytest.mark.parametrize(("value", "needle"), [
    (1.5, "pca_level must be a variance ratio in (0, 1)"),
    (0, "got 0"),
    (float("nan"), "got nan"),
    ("0.9", "got '0.9'"),
])
def test_pca_level_is_checked_by_the_model_record(default: dict[str, Any], value: Any,
                                                  needle: str) -> None:
    with pytest.raises(ValueError) as err:
        model_config({**default, "pca_level": value})
    assert needle in str(err.value) and "n_comps" not in str(err.value)


def test_schema_types_and_defaults(default: dict[str, Any]) -> None:
    """The composed config's job-level values are the schema's defaults, and a value of
    the wrong type fails Hydra's composition (the CLI words it first, see below)."""
    from hydra.errors import ConfigCompositionException

    schema = dataclasses.asdict(JobConfig())
    for key in ("pca_level", "image_size", "batch_size", "num_workers", "precision",
                "optimize", "device", "seed", "save_model", "overlays", "resume", "debug",
                "cache", "threshold_fpr", "select_metric", "combine", "reduction",
                "reduction_topk"):
        assert default[key] == schema[key], key
    assert (default["combine"], default["reduction"]) == ("ensemble", "auto")
    assert default["pooling"]["kernel_size"] == 2   # the command line's own kernel
    assert default["select_metric"] == "val_synthetic_AUROC"
    assert default["data"]["val_fraction"] == 0.2   # added to every data source's node
    assert compose_config(["tracking=none", "image_size=64"])["image_size"] == 64
    with pytest.raises(ConfigCompositionException, match=r"cache\.max_gb"):
        compose_config(["tracking=none", "cache.max_gb=lots"])


@pytest.mark.parametrize(("overrides", "needles"), [
    ({"image_size": [0], "batch_size": ["abc"]},
     ["image_size must be a whole number >= 1", "got 0", "batch_size must be", "got 'abc'"]),
    ({"cache.max_gb": ["lots"], "resume": ["maybe"]},
     ["cache.max_gb must be a number; got 'lots'", "resume must be true or false"]),
    ({"pca_level": ["abc"]}, ["pca_level must be a number; got 'abc'"]),
    ({"num_workers": [2, -1]}, ["num_workers must be a whole number >= 0 or null", "got -1"]),
])
def test_command_line_values_are_worded_before_hydra(overrides, needles) -> None:
    message = job_value_problem(overrides)
    assert message is not None and "\n" not in message
    for needle in needles:
        assert needle in message


def test_good_command_line_values_pass() -> None:
    assert job_value_problem({"image_size": [64], "num_workers": [None], "seed": [1, 2],
                              "cache.max_gb": [0.5], "pca_level": [5, 0.9],
                              "backbone.arch": ["x"]}) is None


def test_a_job_refuses_before_reading_data(default: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "job"
    with pytest.raises(ValueError, match="batch_size must be"):
        run_experiment({**default, "batch_size": 0}, out)
    assert not out.exists()
