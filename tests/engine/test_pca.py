import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from dfmx.engine import pca
from dfmx.engine.pca import PCA, NoVariationError, components_for_ratio


def _data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Decaying spectrum so that components are well separated.
    scales = torch.logspace(1, -2, d, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
    mixing = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    return (x @ mixing + 3.0).float()


def _assert_matches_sklearn(ours: PCA, sk: SkPCA) -> None:
    assert ours.n_components_ == sk.n_components_
    np.testing.assert_allclose(ours.mean_.numpy(), sk.mean_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        ours.explained_variance_.numpy(), sk.explained_variance_, rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(
        ours.explained_variance_ratio_.numpy(), sk.explained_variance_ratio_, rtol=1e-4, atol=1e-7
    )
    # Components agree up to sign.
    dots = np.abs(np.sum(ours.components_.numpy() * sk.components_, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-4)


@pytest.mark.parametrize(("n", "d"), [(40, 120), (300, 30)], ids=["n<d gram", "n>d covariance"])
@pytest.mark.parametrize("n_components", [0.9, 0.97, 5, 1])
def test_matches_sklearn(n: int, d: int, n_components: float | int) -> None:
    x = _data(n, d)
    ours = PCA(n_components).fit(x)
    sk = SkPCA(n_components=n_components, svd_solver="full").fit(x.double().numpy())
    _assert_matches_sklearn(ours, sk)
    z = ours.transform(x)
    z_sk = sk.transform(x.double().numpy())
    np.testing.assert_allclose(np.abs(z.numpy()), np.abs(z_sk), rtol=1e-3, atol=1e-3)


def test_int_one_is_one_component_not_a_ratio() -> None:
    assert PCA(1).fit(_data(50, 10)).n_components_ == 1


def test_ratio_keeps_smallest_k_reaching_level_not_one_fewer() -> None:
    ratio = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert components_for_ratio(ratio, 0.8) == 2  # 0.5 + 0.3 reaches 0.8 exactly
    assert components_for_ratio(ratio, 0.81) == 3
    assert components_for_ratio(ratio, 0.97) == 4
    assert components_for_ratio(ratio, 0.4) == 1


def test_int_k_capped_at_rank_available() -> None:
    pca = PCA(50).fit(_data(10, 30))
    assert pca.n_components_ <= 10


def test_inputs_never_modified() -> None:
    x = _data(30, 20)
    before = x.clone()
    pca = PCA(0.9)
    z = pca.fit_transform(x)
    pca.inverse_transform(z)
    pca.reconstruction_error(x)
    assert torch.equal(x, before)
    z_before = z.clone()
    pca.inverse_transform(z)
    assert torch.equal(z, z_before)


def test_inverse_transform_reconstructs_with_all_components() -> None:
    x = _data(100, 8)
    pca = PCA(8).fit(x)
    torch.testing.assert_close(pca.inverse_transform(pca.transform(x)), x, atol=1e-4, rtol=1e-4)
    assert pca.reconstruction_error(x).max() < 1e-6


def test_reconstruction_error_is_direct_residual() -> None:
    x = _data(60, 25)
    pca = PCA(0.9).fit(x)
    direct = (x - pca.inverse_transform(pca.transform(x))).square()
    torch.testing.assert_close(pca.reconstruction_error(x), direct, atol=1e-5, rtol=1e-4)


def test_streaming_fit_equals_batch_fit() -> None:
    x = _data(500, 16)
    full = PCA(0.95).fit(x)
    streamed = PCA(0.95).fit_batches(x.split(64))
    assert streamed.n_components_ == full.n_components_
    torch.testing.assert_close(streamed.mean_, full.mean_, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        streamed.explained_variance_, full.explained_variance_, atol=1e-6, rtol=1e-4
    )
    dots = (streamed.components_ * full.components_).sum(1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-4, rtol=0)


def test_deterministic_signs_and_state_dict_roundtrip() -> None:
    x = _data(40, 12)
    a, b = PCA(0.9).fit(x), PCA(0.9).fit(x)
    assert torch.equal(a.components_, b.components_)
    fresh = PCA(0.9)
    fresh.load_state_dict(a.state_dict())
    assert torch.equal(fresh.transform(x), a.transform(x))


@pytest.mark.parametrize("bad", [0, -1, 0.0, 1.0, 1.5, -0.3, True, "0.9"])
def test_bad_n_components(bad: object) -> None:
    with pytest.raises(ValueError, match="n_components"):
        PCA(bad)  # type: ignore[arg-type]


def test_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        PCA(0.9).fit(torch.randn(1, 5))
    with pytest.raises(ValueError, match="NaN or inf"):
        PCA(0.9).fit(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA(0.9).transform(torch.randn(3, 4))


def test_the_gram_pass_checks_and_sums_every_column_span(monkeypatch) -> None:
    """Wide features (n < d) are checked, averaged and multiplied span by span: the fit
    matches the one-span fit, and a bad value or the only variation in the last span
    is still seen."""
    torch.manual_seed(0)
    x = torch.randn(4, 3) @ torch.randn(3, 100) + 5.0
    whole = PCA(2).fit(x)
    monkeypatch.setattr(pca, "_BLOCK_ENTRIES", 64)  # spans of 16 columns
    spans = PCA(2).fit(x)
    for name in ("mean_", "components_", "explained_variance_"):
        torch.testing.assert_close(getattr(spans, name), getattr(whole, name))

    bad = x.clone()
    bad[1, -1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        PCA(2).fit(bad)
    same = x[:1].repeat(4, 1)
    with pytest.raises(NoVariationError, match="4 training samples carry no variation"):
        PCA(2).fit(same)
    same[2, -1] += 1.0
    assert PCA(1).fit(same).n_components_ == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6, 40), (40, 6)])  # the Gram and the covariance paths
def test_fitting_leaves_the_features_unchanged(dtype: torch.dtype, shape: tuple) -> None:
    x = _data(*shape).to(dtype)
    before = x.clone()
    PCA(0.9).fit(x)
    assert torch.equal(x, before)


def test_the_covariance_pass_checks_every_row_block(monkeypatch) -> None:
    """Tall features (n >= d) are checked and averaged block by block: a bad value or the
    only variation in the last block is seen."""
    monkeypatch.setattr(pca, "_BLOCK_ENTRIES", 16)  # blocks of 4 rows of 4 features
    same = torch.arange(4.0).repeat(10, 1)
    with pytest.raises(NoVariationError, match="10 training samples carry no variation"):
        PCA(2).fit(same)
    bad = same.clone()
    bad[-1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        PCA(2).fit(bad)
    same[-1, 3] += 1.0
    fitted = PCA(1).fit(same)
    torch.testing.assert_close(fitted.mean_, same.double().mean(dim=0).float())
