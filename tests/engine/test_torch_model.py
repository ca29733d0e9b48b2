import pytest
import torch
import torch.nn.functional as F

from dfmx import Dfm, DFMModel


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 3, 64, 64, generator=g), torch.rand(5, 3, 64, 64, generator=g)


def _fitted(score_type: str, train: torch.Tensor, **kw) -> DFMModel:
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2,
                     n_comps=0.9, score_type=score_type, **kw)
    feats, shape = model.get_features(train)
    return model.fit(feats, shape)


def test_get_features_shapes(images) -> None:
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2)
    feats, shape = model.get_features(images[0])
    # layer2 of resnet18: 128 channels at stride 8 → 8x8, pooled by 2 → 4x4.
    assert tuple(shape) == (12, 128, 4, 4)
    assert feats.shape == (12, 128 * 16)


def test_fre_scores_and_maps_match_direct_computation(images) -> None:
    train, test = images
    model = _fitted("fre", train)
    feats, shape = model.get_features(test)
    scores, maps = model.score(feats, shape)
    pca = model.pca_model
    recon = (feats - pca.mean_) @ pca.components_.T @ pca.components_ + pca.mean_
    direct = (feats - recon).square()
    torch.testing.assert_close(scores, direct.sum(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(maps, direct.reshape(shape).sum(1, keepdim=True), rtol=1e-4,
                               atol=1e-5)
    out = model(test)
    assert out.anomaly_map.shape == (5, 1, 64, 64)
    expected = F.interpolate(maps, size=(64, 64), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out.anomaly_map, expected.clamp_min(0))


def test_nll_path_runs_and_matches_gaussian(images) -> None:
    train, test = images
    model = _fitted("nll", train)
    out = model(test)
    assert out.anomaly_map is None
    assert out.pred_score.shape == (5,) and torch.isfinite(out.pred_score).all()
    coords = model.pca_model.transform(model.get_features(test)[0])
    torch.testing.assert_close(out.pred_score, model.scorer.gaussian.score_samples(coords))
    with pytest.raises(ValueError, match="image scores only"):
        model(test, maps=True)


@pytest.mark.parametrize("score_type", ["fre", "nll"])
def test_batch_of_one_everywhere(images, score_type: str) -> None:
    train, test = images
    model = _fitted(score_type, train)
    out = model(test[:1])
    assert out.pred_score.shape == (1,)
    dfm = Dfm(backbone="resnet18", layer="layer2", pre_trained=False, pooling_kernel_size=2,
              pca_level=0.9, score_type=score_type)
    for i in range(train.shape[0]):  # training batches of a single image
        dfm.training_step(train[i : i + 1])
    dfm.fit()
    assert dfm.model.pca_model.n_samples_ == train.shape[0]
    result = dfm.validation_step({"image": test[:1], "label": torch.tensor([0])})
    assert result["pred_score"].shape == (1,)
    assert "label" in result


def test_dfm_defaults_and_api() -> None:
    dfm = Dfm(pre_trained=False)
    assert dfm.model.backbone == "resnet50" and dfm.model.layer == "layer3"
    assert dfm.model.pooling_kernel_size == 4 and dfm.model.n_comps == 0.97
    assert dfm.model.score_type == "fre"
    assert dfm.configure_optimizers() is None
    assert dfm.learning_type == "one_class"
    assert dfm.trainer_arguments == {"gradient_clip_val": 0, "max_epochs": 1,
                                     "num_sanity_val_steps": 0}


def test_inputs_unchanged_and_deterministic(images) -> None:
    train, test = images
    train_before, test_before = train.clone(), test.clone()
    a = _fitted("fre", train)
    feats, shape = a.get_features(train)
    feats_before = feats.clone()
    a.fit(feats, shape)
    assert torch.equal(feats, feats_before)
    s1 = a(test).pred_score
    s2 = a(test).pred_score
    assert torch.equal(s1, s2)
    assert torch.equal(train, train_before) and torch.equal(test, test_before)


def test_multi_layer_concat(images) -> None:
    train, test = images
    model = DFMModel("resnet18", ["layer2", "layer3"], pre_trained=False, pooling_kernel_size=1,
                     n_comps=0.9)
    feats, shape = model.get_features(train)
    assert tuple(shape) == (12, 128 + 256, 8, 8)
    model.fit(feats, shape)
    assert model(test).anomaly_map.shape == (5, 1, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score_type": "bogus"}, "unknown score_type.*fre.*nll"),
        ({"n_comps": 0}, "n_comps"),
        ({"n_comps": -0.5}, "n_comps"),
        ({"n_comps": 1.5}, "n_comps"),
        ({"pooling_kernel_size": 0}, "kernel_size"),
        ({"pooling": "median"}, "unknown pooling.*avg"),
        ({"scorer_params": {"k": 3}}, "no parameter"),
    ],
)
def test_bad_parameters(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DFMModel("resnet18", "layer2", pre_trained=False, **kwargs)


def test_errors_on_misuse(images) -> None:
    train, test = images
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        model(test)
    fitted = _fitted("fre", train)
    with pytest.raises(ValueError, match="fitted feature shape"):
        fitted(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fitted(torch.rand(3, 64, 64))
