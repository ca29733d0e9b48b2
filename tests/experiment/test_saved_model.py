"""Saved models: a run's ``model/`` folder loads back into a model that scores identically.

Three real jobs run in-process (``run_experiment``): the offline efficientnet_lite0 with
FRE (backbone rebuilt from its weights package, checked against the fingerprint), and a
randomly initialised resnet18 (weights stored in the file) with NLL and with the ``knn``
plugin scorer.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dfmx
from dfmx import registry
from dfmx.experiment.run import (
    LoaderSettings,
    RunResult,
    load_samples,
    run_experiment,
    score_samples,
)
from dfmx.experiment.saved_model import (
    CONFIG,
    TENSORS,
    ModelFileError,
    description_sha256,
    load_model,
    load_model_metadata,
    save_model,
)
from dfmx.features import FeatureExtractor

JOBS = {
    "lite0_fre": {"precision": "bf16", "image_size": 64},
    "r18_nll": {"backbone": "resnet18", "pretrained": False, "scorer": "nll", "image_size": 64},
    "r18_knn": {"backbone": "resnet18", "pretrained": False, "image_size": 64,
                "scorer": {"name": "knn", "n_neighbors": 3, "whiten": True}},
}


@pytest.fixture(scope="module")
def jobs(job_config, dfmx_cache_dir: Path, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """``{name: {"cfg", "result", "test" (samples)}}`` of the three finished jobs."""
    out = tmp_path_factory.mktemp("saved-model-runs")
    done = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFMX_CACHE_DIR", str(dfmx_cache_dir))
        for name, overrides in JOBS.items():
            if name == "r18_knn":
                try:
                    registry.load("scorer", "knn")
                except registry.UnknownPluginError:
                    continue  # the dfmx-knn example plugin is not installed
            cfg = job_config(**overrides)
            result = run_experiment(cfg, out / name)
            done[name] = {"cfg": cfg, "result": result, "test": load_samples(cfg["data"])[1]}
    return done


@pytest.fixture(params=list(JOBS))
def job(request, jobs) -> dict[str, Any]:
    if request.param not in jobs:
        pytest.skip("the dfmx-knn plugin is not installed")
    return jobs[request.param]


def _csv_scores(run_dir: Path) -> dict[str, float]:
    with (run_dir / "predictions.csv").open(newline="") as fh:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(fh)}


def test_loaded_model_scores_exactly_like_the_run(job: dict[str, Any]) -> None:
    result: RunResult = job["result"]
    cfg, test = job["cfg"], job["test"]
    torch.manual_seed(12345)  # a random backbone rebuilt instead of loaded would differ
    loaded = dfmx.load_model(result.output_dir / "model")

    for key, value in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    again = score_samples(loaded, test, LoaderSettings.from_config(cfg))
    from_csv = _csv_scores(result.output_dir)
    np.testing.assert_array_equal(again["scores"], [from_csv[str(s.path)] for s in test])
    # maps too, against the in-memory model (on a few normal and anomalous images)
    few = test[:3] + test[-3:]
    loader = LoaderSettings.from_config(cfg)
    mine, theirs = score_samples(loaded, few, loader), score_samples(result.model, few, loader)
    np.testing.assert_array_equal(mine["scores"], theirs["scores"])
    if cfg["scorer"]["name"] == "fre":
        assert mine["maps"] is not None
        np.testing.assert_array_equal(mine["maps"], theirs["maps"])
    else:
        assert again["maps"] is None and theirs["maps"] is None

    assert loaded.metadata["image_size"] == cfg["image_size"]
    threshold = result.metrics["image_threshold"]
    assert loaded.metadata["threshold"] == pytest.approx(threshold)
    assert loaded.score_type == cfg["scorer"]["name"]
    assert loaded.feature_extractor.precision == result.model.feature_extractor.precision


def test_backbone_weights_are_stored_only_when_they_cannot_be_rebuilt(jobs) -> None:
    for name, job in jobs.items():
        model_dir = job["result"].output_dir / "model"
        meta = load_model_metadata(model_dir)
        with safe_open(str(model_dir / TENSORS), framework="pt") as fh:
            stored_backbone = [k for k in fh.keys() if k.startswith("feature_extractor.")]  # noqa: SIM118
        random_backbone = not job["cfg"]["backbone"]["pretrained"]
        assert meta["backbone_included"] is random_backbone, name
        assert bool(stored_backbone) is random_backbone, name
        if not random_backbone:
            assert meta["weights_source"].startswith("package:"), meta["weights_source"]


def _copy_model(jobs, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(jobs[name]["result"].output_dir / "model", tmp_path / "model"))


def test_flipped_byte_fails_the_checksum(jobs, tmp_path: Path) -> None:
    model_dir = _copy_model(jobs, "r18_nll", tmp_path)
    data = bytearray((model_dir / TENSORS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model_dir / TENSORS).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(model_dir)


def test_truncated_tensor_file_is_refused(jobs, tmp_path: Path) -> None:
    model_dir = _copy_model(jobs, "r18_nll", tmp_path)
    (model_dir / TENSORS).write_bytes((model_dir / TENSORS).read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(model_dir)


def test_non_json_description_is_a_clear_error(jobs, tmp_path: Path) -> None:
    model_dir = _copy_model(jobs, "r18_nll", tmp_path)
    (model_dir / CONFIG).write_text("this is { not json")
    with pytest.raises(ModelFileError, match=r"model\.json is not valid JSON"):
        load_model(model_dir)
    (model_dir / CONFIG).write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not a dfmx model description"):
        load_model(model_dir)


def test_missing_files_and_other_versions_are_refused(jobs, tmp_path: Path) -> None:
    model_dir = _copy_model(jobs, "r18_nll", tmp_path)
    with pytest.raises(ModelFileError, match=r"model\.json is missing"):
        load_model(tmp_path / "elsewhere")
    meta = json.loads((model_dir / CONFIG).read_text())
    (model_dir / CONFIG).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(model_dir / CONFIG)
    (model_dir / CONFIG).write_text(json.dumps(meta))
    (model_dir / TENSORS).unlink()
    with pytest.raises(ModelFileError, match=r"model\.safetensors is missing"):
        load_model(model_dir)


def test_rebuilt_backbone_is_checked_against_the_fingerprint(jobs, tmp_path: Path) -> None:
    model_dir = _copy_model(jobs, "lite0_fre", tmp_path)
    meta = json.loads((model_dir / CONFIG).read_text())
    meta["backbone_fingerprint"] = "0" * 64
    meta["description_sha256"] = description_sha256(meta)  # an edit that keeps the sum
    (model_dir / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="differ from those the model was fitted with"):
        load_model(model_dir)


@pytest.mark.parametrize("name", ["lite0_fre", "r18_nll"])
def test_tensors_that_do_not_fit_the_model_are_refused(jobs, name: str, tmp_path: Path) -> None:
    """A tensor file re-signed after an edit: one tensor fewer, or one more (a backbone
    tensor where the backbone is rebuilt from its source), is refused."""
    model_dir = _copy_model(jobs, name, tmp_path)
    tensors = load_file(str(model_dir / TENSORS))
    dropped = dict(tensors)
    dropped.pop(sorted(k for k in tensors if k.startswith("pca"))[0])
    extra = {**tensors, "feature_extractor.mean": torch.zeros(1, 3, 1, 1),
             "stray": torch.zeros(1)}
    for edited in (dropped, extra):
        save_file(edited, str(model_dir / TENSORS))
        meta = json.loads((model_dir / CONFIG).read_text())
        meta["tensors_sha256"] = hashlib.sha256((model_dir / TENSORS).read_bytes()).hexdigest()
        meta["description_sha256"] = description_sha256(meta)
        (model_dir / CONFIG).write_text(json.dumps(meta))
        with pytest.raises(ModelFileError, match="does not fit the model"):
            load_model(model_dir)


def test_loading_never_unpickles(jobs, monkeypatch: pytest.MonkeyPatch) -> None:
    torch_loads: list[Path] = []
    real_torch_load = torch.load

    def guarded_torch_load(f, *args, **kwargs):
        torch_loads.append(Path(f).resolve())
        return real_torch_load(f, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("load_model unpickled something")

    monkeypatch.setattr(torch, "load", guarded_torch_load)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    for name, job in jobs.items():
        model_dir = (job["result"].output_dir / "model").resolve()
        torch_loads.clear()
        load_model(model_dir)
        # the only torch.load allowed is of the efficientnet weights package's own file
        # (weights_only); nothing in the model folder is ever read with it
        assert not any(model_dir in p.parents for p in torch_loads), (name, torch_loads)
        if not job["cfg"]["backbone"]["pretrained"]:
            assert torch_loads == [], name


def test_saving_an_unfitted_model_is_refused(tmp_path: Path) -> None:
    model = dfmx.DFMModel("resnet18", "layer3", pre_trained=False)
    with pytest.raises(ValueError, match="fitted"):
        save_model(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_backbone_not_built_is_not_built_to_save_the_model(
        jobs, dfmx_cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose backbone graph was kept by an earlier one never builds the net (its
    features come from the graph): saving its model must not build it either, and must
    write what a built one writes."""
    monkeypatch.setenv("DFMX_CACHE_DIR", str(dfmx_cache_dir))  # where the jobs kept it
    saved = jobs["lite0_fre"]["result"].output_dir / "model"
    model = load_model(saved)
    built = model.feature_extractor
    model.feature_extractor = FeatureExtractor(built.backbone, built.layers,
                                               precision=built.precision)
    assert "net" not in model.feature_extractor._modules
    assert "net" not in load_model(saved).feature_extractor._modules  # nor to load it
    save_model(model, tmp_path / "m", **load_model_metadata(saved)["metadata"])
    assert "net" not in model.feature_extractor._modules
    assert (tmp_path / "m" / TENSORS).read_bytes() == (saved / TENSORS).read_bytes()
