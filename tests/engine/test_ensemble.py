"""Per-layer ensembles (``combine="ensemble"``) and image-score reductions."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from dfmx import DFMModel
from dfmx.engine.ensemble import UncalibratedEnsembleWarning
from dfmx.engine.model_config import ModelConfig, ModelConfigError
from dfmx.engine.plugins import build_scorer, check_plugin_options
from dfmx.engine.reduction import reduce_maps, topk_count
from dfmx.experiment.saved_model import CONFIG, load_model, save_model

LAYERS = ["layer2", "layer3"]  # resnet18: 128 channels at stride 8, 256 at stride 16


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {split: torch.rand(n, 3, 64, 64, generator=g)
            for split, n in (("train", 12), ("val", 6), ("test", 5))}


def _ensemble(images: dict[str, torch.Tensor], score_type: str = "fre", calibrate: bool = True,
              **kw) -> DFMModel:
    model = DFMModel("resnet18", LAYERS, pre_trained=False, pooling_kernel_size=2, n_comps=0.9,
                     score_type=score_type, combine="ensemble", **kw)
    feats, shape = model.get_features(images["train"])
    model.fit(feats, shape)
    if calibrate:
        with torch.inference_mode():
            model.calibrate(model.raw_features(images["val"]))
    return model


def test_layers_pool_onto_the_finest_layers_grid(images) -> None:
    model = DFMModel("resnet18", LAYERS, pre_trained=False, pooling_kernel_size=2,
                     combine="ensemble")
    _, shape = model.get_features(images["test"])
    # layer2 8x8 pooled by 2, layer3 4x4 pooled by 1: both 4x4, channels side by side.
    assert tuple(shape) == (5, 128 + 256, 4, 4)
    assert model.get_config()["combine"] == "ensemble"


@pytest.mark.parametrize("score_type", ["fre", "nll", "ppca", "knn"])
def test_scores_are_the_standardised_sum_of_each_layers_model(images, score_type) -> None:
    model = _ensemble(images, score_type)
    assert model.ensemble.is_calibrated
    val, _ = model.get_features(images["val"])
    test, shape = model.get_features(images["test"])
    # Each member is one layer's own PCA + scorer, fitted on that layer's channels only.
    parts = torch.split(test.reshape(shape), [128, 256], dim=1)
    vparts = torch.split(val.reshape(-1, *shape[1:]), [128, 256], dim=1)
    expected_scores, expected_maps = 0, 0
    for member, part, vpart in zip(model.ensemble.members, parts, vparts, strict=True):
        assert member.pca_model.mean_.numel() == part[0].numel()
        out = member.scorer.score(part, member.pca_model)
        vout = member.scorer.score(vpart, member.pca_model)
        expected_scores = expected_scores + (
            (out.scores.double() - vout.scores.double().mean()) / vout.scores.double().std())
        if out.maps is not None:
            expected_maps = expected_maps + out.maps / vout.maps.double().std()
    scores, maps = model.score(test, shape)
    torch.testing.assert_close(scores.double(), expected_scores, rtol=1e-4, atol=1e-4)
    if score_type in ("nll", "knn"):  # image-only scorers: no maps in the ensemble
        assert not model.produces_maps
        assert maps is None and model(images["test"]).anomaly_map is None
    else:
        torch.testing.assert_close(maps.double(), expected_maps.double(), rtol=1e-4, atol=1e-5)
        assert model(images["test"]).anomaly_map.shape == (5, 1, 64, 64)
    # Calibrated on the validation normals: their standardised scores average 0 per layer.
    torch.testing.assert_close(model.score(val, shape)[0].mean().double(),
                               torch.zeros((), dtype=torch.float64), atol=1e-3, rtol=0)


def test_uncalibrated_ensemble_warns_once_and_concat_has_nothing_to_calibrate(images) -> None:
    model = _ensemble(images, calibrate=False)
    assert not model.ensemble.is_calibrated
    with pytest.warns(UncalibratedEnsembleWarning, match="calibrate"):
        model(images["test"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(images["test"])  # once per model
    concat = DFMModel("resnet18", LAYERS, pre_trained=False, pooling_kernel_size=2)
    feats, shape = concat.get_features(images["train"])
    concat.fit(feats, shape)
    before = {k: v.clone() for k, v in concat.state_dict().items()}
    assert concat.calibrate(concat.raw_features(images["val"])) is concat
    assert all(torch.equal(before[k], v) for k, v in concat.state_dict().items())


def test_calibrate_needs_a_fitted_model_and_the_training_size(images) -> None:
    model = DFMModel("resnet18", LAYERS, pre_trained=False, pooling_kernel_size=2,
                     combine="ensemble")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.calibrate(model.raw_features(images["val"]))
    model = _ensemble(images)
    with pytest.raises(ValueError, match="training image size"):
        model.calibrate(model.raw_features(torch.rand(3, 3, 96, 96)))


def test_save_load_round_trip_keeps_members_and_calibration(images, tmp_path) -> None:
    model = _ensemble(images, reduction="topk", reduction_topk=0.25)
    save_model(model, tmp_path / "m", image_size=64)
    record = json.loads((tmp_path / "m" / CONFIG).read_text())["model"]
    assert record["combine"] == "ensemble" and record["reduction"] == "topk"
    loaded = load_model(tmp_path / "m")
    assert loaded.ensemble.is_calibrated and loaded.ensemble.reduction == "topk"
    for name in ("score_mean_", "score_std_", "map_std_"):
        assert torch.equal(getattr(loaded.ensemble, name), getattr(model.ensemble, name))
    with torch.inference_mode():
        a, b = model(images["test"]), loaded(images["test"])
    torch.testing.assert_close(a.pred_score, b.pred_score)
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map)


def test_an_ensemble_extracts_once_per_batch_for_all_its_layers(images) -> None:
    model = _ensemble(images)
    calls = []
    backbone = model.feature_extractor
    handle = backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.inference_mode():
            model(images["test"])
    finally:
        handle.remove()
    assert len(calls) == 1  # both layers come from one backbone pass


def test_reductions_of_a_hand_made_map() -> None:
    maps = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 10.0]]).reshape(2, 1, 2, 2)
    torch.testing.assert_close(reduce_maps(maps, "sum"), torch.tensor([10.0, 10.0]))
    torch.testing.assert_close(reduce_maps(maps, "max"), torch.tensor([4.0, 10.0]))
    torch.testing.assert_close(reduce_maps(maps, "topk", 0.5), torch.tensor([3.5, 5.0]))
    torch.testing.assert_close(reduce_maps(maps, "topk", 0.01), torch.tensor([4.0, 10.0]))
    assert topk_count(100, 0.05) == 5 and topk_count(64, 0.05) == 4 and topk_count(4, 1) == 4


def test_model_reduction_scores_the_feature_grid_map(images) -> None:
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2,
                     n_comps=0.9, reduction="max")
    feats, shape = model.get_features(images["train"])
    model.fit(feats, shape)
    test, tshape = model.get_features(images["test"])
    scores, maps = model.score(test, tshape)
    torch.testing.assert_close(scores, maps.amax(dim=(1, 2, 3)))
    plain = model.scorer.score(test.reshape(tshape), model.pca_model)
    torch.testing.assert_close(maps, plain.maps)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"combine": "stack"}, "combine must be one of concat, ensemble; got 'stack'"),
        ({"reduction": "median"}, "reduction must be one of sum, max, topk; got 'median'"),
        ({"reduction_topk": 0.0}, "reduction_topk must be a share of the map in (0, 1]"),
        ({"reduction_topk": 1.5}, "reduction_topk must be"),
        ({"reduction_topk": True}, "reduction_topk must be"),
    ],
)
def test_record_refuses_bad_combine_and_reduction(changes, needle) -> None:
    with pytest.raises(ModelConfigError) as info:
        ModelConfig.from_dict({"backbone": "resnet18", "layers": ["layer2"], **changes})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_image_only_scorers_refuse_map_reductions() -> None:
    record = ModelConfig(backbone="resnet18", layers=("layer2",), score_type="nll",
                         reduction="max")
    with pytest.raises(ModelConfigError, match="'nll' gives image scores only") as info:
        check_plugin_options(record)
    assert info.value.field == "reduction" and "\n" not in str(info.value)
    with pytest.raises(ModelConfigError, match="reduction=sum only"):
        DFMModel("resnet18", "layer2", pre_trained=False, score_type="nll", reduction="topk")
    assert not build_scorer("nll").produces_maps


def test_dfmx_predict_path_scores_a_saved_ensemble_like_the_fitted_one(images, tmp_path) -> None:
    from PIL import Image

    from dfmx.experiment.predict import predict_images

    model = _ensemble(images)
    save_model(model, tmp_path / "m", image_size=64)
    paths = []
    for i, image in enumerate(images["test"][:3]):
        path = tmp_path / f"{i}.png"
        Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(path)
        paths.append(path)
    model.metadata = {"image_size": 64}
    fitted = predict_images(model, paths, num_workers=0)
    loaded = predict_images(load_model(tmp_path / "m"), paths, num_workers=0)
    assert fitted.maps.shape == (3, 64, 64)
    torch.testing.assert_close(torch.from_numpy(loaded.scores), torch.from_numpy(fitted.scores))
    torch.testing.assert_close(torch.from_numpy(loaded.maps), torch.from_numpy(fitted.maps))
