"""Job-level options are checked before a job reads any data, with messages that name them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dfmx.cli.compose import compose_config
from dfmx.experiment.job_config import check_job_config
from dfmx.experiment.run import run_experiment


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
    ("pca_level", 1.5, "pca_level must be a variance ratio in (0, 1)"),
    ("pca_level", 0, "got 0"),
    ("pca_level", float("nan"), "got nan"),
    ("pca_level", "0.9", "got '0.9'"),
    ("save_model", "maybe", "save_model must be true or false; got 'maybe'"),
])
def test_a_bad_value_is_named(default: dict[str, Any], key: str, value: Any,
                              needle: str) -> None:
    with pytest.raises(ValueError) as err:
        check_job_config({**default, key: value})
    assert needle in str(err.value)


def test_every_problem_in_one_message(default: dict[str, Any]) -> None:
    cfg = {k: v for k, v in default.items() if k != "pca_level"}
    with pytest.raises(ValueError) as err:
        check_job_config({**cfg, "image_size": 0, "batch_size": None})
    assert str(err.value).startswith("image_size must be")
    for needle in ("image_size", "batch_size", "got None", "the config has no pca_level"):
        assert needle in str(err.value)


def test_a_job_refuses_before_reading_data(default: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "job"
    with pytest.raises(ValueError, match="batch_size must be"):
        run_experiment({**default, "batch_size": 0}, out)
    assert not out.exists()
