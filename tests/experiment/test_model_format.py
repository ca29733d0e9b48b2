"""``model.json``: format 2 is written and checked field by field; format 1 still loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dfmx import DFMModel
from dfmx.experiment.saved_model import (
    CONFIG,
    ModelFileError,
    load_model,
    load_model_metadata,
    save_model,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2, n_comps=3)
    feats, shape = model.get_features(torch.rand(4, 3, 64, 64))
    return save_model(model.fit(feats, shape), tmp_path_factory.mktemp("m") / "model",
                      image_size=64, threshold=2.5)


def _as_format_1(description: dict) -> dict:
    """The same description in format 1's layout: the record's fields at the top."""
    record = description.pop("model")
    old = {**description, "format_version": 1,
           "pooling_kernel_size": record["pooling_params"]["kernel_size"]}
    old.pop("description_sha256")
    old.update({k: record[k] for k in ("backbone", "layers", "pre_trained", "pooling",
                                       "n_comps", "score_type", "scorer_params", "precision")})
    return old


def test_format_2_holds_the_model_record(saved: Path) -> None:
    meta = load_model_metadata(saved)
    assert meta["format_version"] == 2
    assert meta["model"]["pooling_params"] == {"kernel_size": 2}
    assert meta["model"]["n_comps"] == 3 and meta["n_components"] == 3
    assert meta["metadata"] == {"image_size": 64, "threshold": 2.5}


def test_a_format_1_file_loads_by_mapping_its_keys(saved: Path, tmp_path: Path) -> None:
    copy = tmp_path / "old"
    copy.mkdir()
    for f in saved.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    old = _as_format_1(json.loads((copy / CONFIG).read_text()))
    (copy / CONFIG).write_text(json.dumps(old))
    model = load_model(copy)
    assert model.pooling_kernel_size == 2 and model.n_comps == 3
    assert model.metadata["threshold"] == 2.5
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(model(x).pred_score, load_model(saved)(x).pred_score)
    old["pooling_kernel_size"] = "two"
    (copy / CONFIG).write_text(json.dumps(old))
    with pytest.raises(ModelFileError, match=r"field model\.pooling_params: pooling kernel_size"):
        load_model(copy)


def test_a_non_finite_threshold_is_left_out_and_bad_metadata_refused(saved: Path,
                                                                     tmp_path: Path) -> None:
    model = load_model(saved)
    meta = load_model_metadata(save_model(model, tmp_path / "a", threshold=float("nan")))
    assert "threshold" not in meta["metadata"]
    with pytest.raises(ValueError, match=r"metadata\.image_size must be a whole number >= 1"):
        save_model(model, tmp_path / "b", image_size=0)
