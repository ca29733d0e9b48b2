import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from dfmx.engine.gaussian import SingleClassGaussian


def test_nll_matches_brute_force_density() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    data = torch.randn(500, 4, generator=g, dtype=torch.float64) @ a + torch.tensor([1.0, -2, 0, 5])
    model = SingleClassGaussian().fit(data.T)  # (n_features, n_samples)
    test = torch.randn(20, 4, generator=g, dtype=torch.float64) * 2
    ours = model.score_samples(test).numpy()
    mean = data.mean(0).numpy()
    cov = np.cov(data.numpy(), rowvar=False)
    expected = -multivariate_normal(mean, cov).logpdf(test.numpy())
    np.testing.assert_allclose(ours, expected, rtol=1e-8, atol=1e-8)


def test_centred_exactly_once() -> None:
    # Data far from the origin: centring twice (the reference's bug) would shift the mean.
    data = torch.randn(3, 200, dtype=torch.float64) + 100.0
    model = SingleClassGaussian().fit(data)
    torch.testing.assert_close(model.mean_, data.mean(dim=1))
    at_mean = model.score_samples(data.mean(dim=1, keepdim=True).T)
    off_mean = model.score_samples((data.mean(dim=1) + 3).unsqueeze(0))
    assert at_mean < off_mean


def test_near_singular_directions_stay_finite() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(100, 2, generator=g)
    # Third feature is an exact copy: covariance is singular.
    data = torch.cat([base, base[:, :1]], dim=1)
    model = SingleClassGaussian().fit(data.T)
    scores = model.score_samples(torch.randn(10, 3, generator=g))
    assert torch.isfinite(scores).all()
    assert (model.sigma_vals_ > 0).all()


def test_fewer_samples_than_features_is_finite() -> None:
    model = SingleClassGaussian().fit(torch.randn(50, 5))
    assert torch.isfinite(model.score_samples(torch.randn(4, 50))).all()


def test_forward_fits_and_state_roundtrip() -> None:
    data = torch.randn(3, 40)
    model = SingleClassGaussian()
    model(data)
    fresh = SingleClassGaussian()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(5, 3)
    assert torch.equal(fresh.score_samples(x), model.score_samples(x))


def test_input_unchanged_and_errors() -> None:
    data = torch.randn(3, 40)
    before = data.clone()
    SingleClassGaussian().fit(data)
    assert torch.equal(data, before)
    with pytest.raises(ValueError, match="at least 2"):
        SingleClassGaussian().fit(torch.randn(3, 1))
    with pytest.raises(RuntimeError, match="not fitted"):
        SingleClassGaussian().score_samples(torch.randn(2, 3))
