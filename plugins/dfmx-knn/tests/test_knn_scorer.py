import pytest
import torch

from dfmx import DFMModel, registry
from dfmx.engine.pca import PCA
from dfmx_knn import KNNScorer


def _features(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 2, 2, generator=g)


def test_registered_through_entry_point() -> None:
    assert "knn" in registry.names("scorer")
    assert registry.load("scorer", "knn") is KNNScorer


def test_scores_are_knn_distances_in_pca_space() -> None:
    train = _features(30, 0)
    pca = PCA(5).fit(train.flatten(1))
    scorer = KNNScorer(n_neighbors=3).fit(train, pca)
    test = _features(4, 1)
    out = scorer.score(test, pca)
    assert out.maps is None
    coords = pca.transform(test.flatten(1))
    train_coords = pca.transform(train.flatten(1))
    brute = torch.stack([
        torch.sort(((train_coords - c) ** 2).sum(1).sqrt()).values[:3].mean() for c in coords
    ])
    torch.testing.assert_close(out.scores, brute, rtol=1e-4, atol=1e-5)


def test_far_points_score_higher() -> None:
    train = _features(30, 0)
    pca = PCA(5).fit(train.flatten(1))
    scorer = KNNScorer().fit(train, pca)
    near, far = train[:1] * 0.5, train[:1] * 0 + 10
    assert scorer.score(far, pca).scores > scorer.score(near, pca).scores


def test_rejects_bad_parameter_and_state_roundtrip() -> None:
    with pytest.raises(ValueError, match="n_neighbors"):
        KNNScorer(n_neighbors=0)
    train = _features(10, 0)
    pca = PCA(3).fit(train.flatten(1))
    scorer = KNNScorer(n_neighbors=2, whiten=True).fit(train, pca)
    fresh = KNNScorer(n_neighbors=2, whiten=True)
    fresh.load_state_dict(scorer.state_dict())
    test = _features(3, 2)
    assert torch.equal(fresh.score(test, pca).scores, scorer.score(test, pca).scores)


def test_usable_as_score_type_of_dfm_model() -> None:
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2,
                     score_type="knn", scorer_params={"n_neighbors": 2})
    train = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    feats, shape = model.get_features(train)
    model.fit(feats, shape)
    out = model(torch.rand(2, 3, 64, 64))
    assert out.pred_score.shape == (2,) and out.anomaly_map is None
