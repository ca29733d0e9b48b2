"""The probabilistic-PCA scorer against an explicit Gaussian, its maps, save/load and the
many-components / few-images regime where the span-only likelihood (``nll``) fails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from dfmx.engine.pca import PCA
from dfmx.engine.plugins import build_scorer
from dfmx.metrics import image_auroc
from dfmx.scorers.nll import NLLScorer
from dfmx.scorers.ppca import PPCAScorer


def _data(n: int, c: int = 3, h: int = 2, w: int = 2, seed: int = 0) -> torch.Tensor:
    """``(n, c, h, w)`` float64 features with a decaying spectrum and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    d = c * h * w
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    scales = torch.logspace(0, -2, d, dtype=torch.float64)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ mix + 3.0
    return x.reshape(n, c, h, w)


def _brute_force_nll(train: torch.Tensor, test: torch.Tensor, q: int, s: float) -> np.ndarray:
    """``-log N(x; μ, W Wᵀ + σ² I)`` built from the full covariance, in float64."""
    x = train.reshape(train.shape[0], -1)
    n, d = x.shape
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / (n - 1)
    tau = torch.trace(cov) / d
    cov = (1 - s) * cov + s * tau * torch.eye(d, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[q:].mean()
    u = evecs[:, :q]
    w = u * (evals[:q] - sigma2).sqrt()
    full = w @ w.T + sigma2 * torch.eye(d, dtype=torch.float64)
    dist = MultivariateNormal(mean, covariance_matrix=full)
    return (-dist.log_prob(test.reshape(test.shape[0], -1))).numpy()


@pytest.mark.parametrize("shrinkage", [0.0, 0.3])
@pytest.mark.parametrize("n_train", [60, 8])  # N > D and N < D (D = 12)
def test_matches_explicit_ppca_gaussian(shrinkage: float, n_train: int) -> None:
    train, test = _data(n_train), _data(10, seed=1)
    q = 4
    pca = PCA(n_components=q).fit(train.reshape(n_train, -1))
    scorer = PPCAScorer(shrinkage=shrinkage).fit(train, pca)
    ours = scorer.score(test, pca).scores.numpy()
    np.testing.assert_allclose(ours, _brute_force_nll(train, test, q, shrinkage),
                               rtol=1e-9, atol=1e-8)


def test_noise_variance_is_mean_discarded_eigenvalue() -> None:
    train = _data(40)
    flat = train.reshape(40, -1)
    pca = PCA(n_components=5).fit(flat)
    scorer = PPCAScorer(shrinkage=0.0).fit(train, pca)
    evals = torch.linalg.eigvalsh(torch.cov(flat.T)).flip(0)
    torch.testing.assert_close(scorer.noise_var_, evals[5:].mean())
    torch.testing.assert_close(scorer.span_var_, evals[:5])


def test_maps_sum_to_scores_up_to_a_shared_constant() -> None:
    train, test = _data(30, c=4, h=3, w=5), _data(7, c=4, h=3, w=5, seed=2)
    pca = PCA(n_components=0.9).fit(train.reshape(30, -1))
    scorer = PPCAScorer().fit(train, pca)
    out = scorer.score(test, pca)
    assert out.maps.shape == (7, 1, 3, 5)
    assert (out.maps >= 0).all()
    const = scorer.log_normaliser(4 * 3 * 5)
    torch.testing.assert_close(out.maps.sum(dim=(1, 2, 3)) + const, out.scores)
    # The map is the Mahalanobis term: an image at the mean has a zero map.
    at_mean = pca.mean_.reshape(1, 4, 3, 5)
    assert float(scorer.score(at_mean, pca).maps.abs().max()) < 1e-20


def test_large_residual_raises_the_score_where_it_lies() -> None:
    train = _data(50, c=2, h=4, w=4)
    pca = PCA(n_components=6).fit(train.reshape(50, -1))
    scorer = PPCAScorer().fit(train, pca)
    clean = pca.mean_.reshape(1, 2, 4, 4).clone()
    defect = clean.clone()
    defect[0, :, 2, 1] += 5.0
    out = scorer.score(torch.cat([clean, defect]), pca)
    assert out.scores[1] > out.scores[0]
    assert tuple(int(v) for v in divmod(int(out.maps[1, 0].argmax()), 4)) == (2, 1)


def test_state_dict_round_trip() -> None:
    train, test = _data(20), _data(5, seed=3)
    pca = PCA(n_components=3).fit(train.reshape(20, -1))
    scorer = PPCAScorer(shrinkage=0.2).fit(train, pca)
    fresh = PPCAScorer(shrinkage=0.2)
    fresh.load_state_dict(scorer.state_dict())
    expected, got = scorer.score(test, pca), fresh.score(test, pca)
    torch.testing.assert_close(got.scores, expected.scores)
    torch.testing.assert_close(got.maps, expected.maps)


def test_float32_features_give_float32_finite_scores() -> None:
    train, test = _data(8).float(), _data(4, seed=4).float()
    pca = PCA(n_components=7).fit(train.reshape(8, -1))  # all N - 1 non-zero directions
    out = PPCAScorer(shrinkage=0.0).fit(train, pca).score(test, pca)
    assert out.scores.dtype == torch.float32
    assert torch.isfinite(out.scores).all() and torch.isfinite(out.maps).all()


def test_registered_with_its_parameter() -> None:
    scorer = build_scorer("ppca", {"shrinkage": 0.5})
    assert isinstance(scorer, PPCAScorer)
    assert scorer.hparams() == {"shrinkage": 0.5}


@pytest.mark.parametrize("bad", [-0.1, 1.5, "auto", True])
def test_bad_shrinkage_is_a_clear_error(bad) -> None:
    with pytest.raises(ValueError, match="shrinkage must be a number in"):
        PPCAScorer(shrinkage=bad)


def test_unfitted_score_is_an_error() -> None:
    pca = PCA(n_components=2).fit(_data(10).reshape(10, -1))
    with pytest.raises(RuntimeError, match="not fitted"):
        PPCAScorer().score(_data(2), pca)


def test_holds_up_where_the_span_likelihood_collapses() -> None:
    """Few images, high dimension, the PCA keeping nearly all non-zero directions: normal
    variation lives in a low-dimensional subspace plus noise, anomalies leave the subspace.
    The span-only Gaussian ranks test images by noise in its trailing, badly estimated
    directions; the PPCA likelihood keeps the residual and tames those directions."""
    g = torch.Generator().manual_seed(7)
    d, rank, n_train = 400, 5, 30
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))[0]

    def normals(n: int) -> torch.Tensor:
        z = torch.randn(n, rank, generator=g, dtype=torch.float64) * torch.linspace(3, 1, rank)
        return z @ basis.T + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)

    def anomalies(n: int) -> torch.Tensor:
        x = normals(n)
        direction = torch.randn(n, d, generator=g, dtype=torch.float64)
        direction -= direction @ basis @ basis.T  # off the normal subspace
        # as far off the subspace as the noise reaches in total: 0.3 sqrt(D)
        return x + direction / direction.norm(dim=1, keepdim=True) * 0.3 * math.sqrt(d)

    train = normals(n_train).reshape(n_train, 4, 10, 10)
    test = torch.cat([normals(40), anomalies(40)]).reshape(80, 4, 10, 10)
    labels = np.r_[np.zeros(40), np.ones(40)]
    pca = PCA(n_components=0.97).fit(train.reshape(n_train, -1))
    assert pca.n_components_ >= n_train - 5  # nearly all of the N - 1 directions
    nll = NLLScorer().fit(train, pca).score(test, pca).scores.numpy()
    ppca = PPCAScorer().fit(train, pca).score(test, pca).scores.numpy()
    assert image_auroc(labels, nll) < 0.8
    assert image_auroc(labels, ppca) > 0.95
