"""``run_experiment`` in-process on a tiny plain-folder data set (random resnet18, 64 px)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dfmx.data.demo import demo_root
from dfmx.data.overlaps import DataOverlapError
from dfmx.data.sources import FolderData, MVTecData
from dfmx.experiment.run import (
    LoaderSettings,
    build_model,
    load_samples,
    load_splits,
    run_experiment,
    score_samples,
)
from dfmx.metrics.threshold import fpr_threshold
from dfmx.registry import UnknownPluginError


@pytest.fixture(scope="module")
def folders(dfmx_cache_dir: Path, tmp_path_factory) -> dict[str, str]:
    """6 normal images (2 held out for testing), 3 anomalies with ``<stem>_mask.png`` masks."""
    demo = demo_root(dfmx_cache_dir) / "demo"
    root = tmp_path_factory.mktemp("folder-data")
    dirs = {k: root / k for k in ("normal", "abnormal", "mask")}
    for d in dirs.values():
        d.mkdir()
    for src in sorted((demo / "train" / "good").glob("*.png"))[:6]:
        shutil.copyfile(src, dirs["normal"] / src.name)
    for src in sorted((demo / "test" / "stain").glob("*.png"))[:3]:
        shutil.copyfile(src, dirs["abnormal"] / src.name)
        shutil.copyfile(demo / "ground_truth" / "stain" / f"{src.stem}_mask.png",
                        dirs["mask"] / f"{src.stem}_mask.png")
    return {f"{k}_dir": str(v) for k, v in dirs.items()}


@pytest.fixture
def tiny_config(job_config, folders, dfmx_cache_dir, monkeypatch):
    monkeypatch.setenv("DFMX_CACHE_DIR", str(dfmx_cache_dir))

    def make(data=None, **overrides):
        return job_config(backbone="resnet18", pretrained=False, image_size=64,
                          data=data or {"name": "folder", **folders,
                                        "normal_test_fraction": 0.34},
                          **overrides)
    return make


def _scores(run_dir: Path) -> list[float]:
    with (run_dir / "predictions.csv").open(newline="") as fh:
        return [float(r["score"]) for r in csv.DictReader(fh)]


def test_run_writes_its_files_and_returns_the_result(tiny_config, tmp_path: Path) -> None:
    result = run_experiment(tiny_config(overlays=2), tmp_path / "run")
    # 4 training normals: 2 held out for validation (the minimum of 5, lowered so 2 fit)
    assert (result.n_train, result.n_val, result.n_test) == (2, 2, 5)
    assert result.output_dir == tmp_path / "run"
    assert set(result.files) >= {"metrics", "predictions", "roc", "histogram", "overlays",
                                 "model"}
    for key, path in result.files.items():
        assert path.exists(), key
    m = result.metrics
    for key in ("image_AUROC", "image_AUPR", "image_F1_oracle", "pixel_AUROC", "pixel_AUPR",
                "pixel_PRO", "time_total", "images_per_s", "image_threshold",
                "image_FPR_at_val_threshold", "image_TPR_at_val_threshold",
                "val_synthetic_AUROC", "val_synthetic_pixel_AUROC"):
        assert math.isfinite(m[key]), key
    assert (m["n_train"], m["n_val"], m["n_test"]) == (2.0, 2.0, 5.0)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (written["n_train"], written["n_val"], written["n_test"]) == (2, 2, 5)
    assert m["feature_dim"] == 256 * 2 * 2  # layer3 at 64 px: 4x4, avg-pooled by 2
    assert m["n_components"] == 1            # at most n_train - 1
    assert len(list((tmp_path / "run" / "overlays").glob("*.png"))) == 4
    assert result.model.is_fitted and result.model.layers == ["layer3"]


def test_same_config_gives_the_same_scores(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(save_model=False)
    run_experiment(cfg, tmp_path / "a")
    run_experiment(cfg, tmp_path / "b")
    a, b = _scores(tmp_path / "a"), _scores(tmp_path / "b")
    assert len(a) == 5
    np.testing.assert_array_equal(a, b)


def test_image_only_scorer_without_model_file(tiny_config, tmp_path: Path) -> None:
    result = run_experiment(tiny_config(scorer="nll", overlays=2, save_model=False),
                            tmp_path / "run")
    assert not any(k.startswith("pixel_") for k in result.metrics)
    assert not (tmp_path / "run" / "overlays").exists()
    assert not (tmp_path / "run" / "model").exists()
    assert "model" not in result.files


def test_layer_selection_overrides_the_backbone_default(job_config) -> None:
    cfg = job_config(backbone="resnet18", pretrained=False,
                     layer={"name": "default", "names": ["layer2", "layer3"],
                            "fusion": "concat"})
    assert build_model(cfg).layers == ["layer2", "layer3"]
    assert build_model(job_config(backbone="resnet18", pretrained=False)).layers == ["layer3"]


def test_too_few_training_images_is_refused(folders) -> None:
    data = {"name": "folder", "normal_dir": folders["normal_dir"], "normal_test_fraction": 0.8}
    with pytest.raises(ValueError, match="at least 2"):
        load_samples(data)


def test_unknown_data_source_lists_the_installed_ones() -> None:
    with pytest.raises(UnknownPluginError, match=r"unknown data 'mvtech'\. Did you mean 'mvtec'"):
        load_samples({"name": "mvtech"})


def test_data_sources_name_missing_required_options() -> None:
    """When the source is made (as the start-up check of the options does), not at load."""
    with pytest.raises(ValueError, match=r"data\.root is required"):
        MVTecData()
    with pytest.raises(ValueError, match=r"data\.category is required"):
        MVTecData(root="/somewhere")
    with pytest.raises(ValueError, match=r"data\.normal_dir is required"):
        FolderData(abnormal_dir="/x")


def test_threshold_is_set_on_the_validation_normals_only(tiny_config, folders,
                                                          tmp_path: Path) -> None:
    """Another test set (other labels, other scores) leaves the threshold where the
    validation normals put it; predictions.csv and the saved model use it."""
    cfg = tiny_config(overlays=0, data={"name": "folder", **folders,
                                        "normal_test_fraction": 0.34, "val_fraction": 0.5})
    few = tmp_path / "one-anomaly"
    few.mkdir()
    first = sorted(Path(folders["abnormal_dir"]).glob("*.png"))[0]
    shutil.copyfile(first, few / first.name)
    other = {**cfg, "data": {**cfg["data"], "abnormal_dir": str(few)}}
    a = run_experiment(cfg, tmp_path / "a")
    b = run_experiment(other, tmp_path / "b")
    assert a.n_test == 5 and b.n_test == 3 and a.n_val == b.n_val == 2
    assert a.metrics["image_threshold"] == b.metrics["image_threshold"]

    _, val, _ = load_splits(cfg["data"], cfg["seed"])
    val_scores = score_samples(a.model, val, LoaderSettings.from_config(cfg), split="val")["scores"]
    assert a.metrics["image_threshold"] == fpr_threshold(val_scores, cfg.get("threshold_fpr",
                                                                            0.01))
    assert a.metrics["image_threshold"] > val_scores.max()  # 2 images < 1 / 0.01
    with (tmp_path / "a" / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["prediction"]) for r in rows] == [
        int(float(r["score"]) >= a.metrics["image_threshold"]) for r in rows]
    saved = json.loads((tmp_path / "a" / "model" / "model.json").read_text())
    assert saved["metadata"]["threshold"] == a.metrics["image_threshold"]
    assert saved["metadata"]["threshold_fpr"] == 0.01


def test_a_source_may_give_its_own_validation_images(tiny_config, folders, dfmx_cache_dir,
                                                       tmp_path: Path) -> None:
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    demo = demo_root(dfmx_cache_dir) / "demo" / "train" / "good"
    for i, src in enumerate(sorted(demo.glob("*.png"))[6:9]):  # not among the fixture's 6
        shutil.copyfile(src, val_dir / f"v{i}.png")
    cfg = tiny_config(data={"name": "folder", **folders, "normal_test_fraction": 0.34,
                            "val_dir": str(val_dir)}, save_model=False, overlays=0)
    result = run_experiment(cfg, tmp_path / "run")
    assert (result.n_train, result.n_val, result.n_test) == (4, 3, 5)
    # a validation image that is also a test image (a held-out normal) is refused
    _, test = load_samples(cfg["data"])
    shutil.copyfile(next(s.path for s in test if s.label == 0), val_dir / "dup.png")
    with pytest.raises(DataOverlapError, match="identical contents"):
        run_experiment(cfg, tmp_path / "dup")


def test_no_validation_images_no_threshold(tiny_config, folders, tmp_path: Path) -> None:
    cfg = tiny_config(data={"name": "folder", **folders, "normal_test_fraction": 0.34,
                            "val_fraction": 0.0}, save_model=False, overlays=0)
    result = run_experiment(cfg, tmp_path / "run")
    assert result.n_val == 0 and math.isnan(result.metrics["image_threshold"])
    assert "val_synthetic_AUROC" not in result.metrics
    assert "threshold" in result.notes
