"""PCA fits shared between a sweep's jobs by the content of their input
(``dfmx.engine.fit_sharing``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from dfmx.engine import fit_sharing
from dfmx.engine.pca import PCA

FITTED = ("mean_", "components_", "explained_variance_", "explained_variance_ratio_",
          "singular_values_")


@pytest.fixture(autouse=True)
def _sharing_off_after() -> Iterator[None]:
    yield
    fit_sharing.share_fits(0)


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fits actually solved (the wide-features path)."""
    solved: list[int] = []
    solve = PCA._fit_gram

    def counted(x, n_components):
        solved.append(x.shape[1])
        return solve(x, n_components)

    monkeypatch.setattr(PCA, "_fit_gram", staticmethod(counted))
    return solved


def _features(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, 4, generator=g) @ torch.randn(4, 300, generator=g) + 1.0


def _same_fit(a: PCA, b: PCA) -> None:
    for name in FITTED:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    assert a.n_samples_ == b.n_samples_


def test_off_by_default_every_fit_is_solved(fits: list[int]) -> None:
    x = _features()
    PCA(0.9).fit(x)
    PCA(0.9).fit(x)
    assert len(fits) == 2


def test_the_same_features_and_level_are_fitted_once(fits: list[int]) -> None:
    fit_sharing.share_fits(1 << 20)
    x = _features()
    first = PCA(0.9).fit(x)
    again = PCA(0.9).fit(x.clone())
    assert len(fits) == 1
    _same_fit(first, again)
    assert again.components_.data_ptr() != first.components_.data_ptr()

    again.components_.mul_(-1.0)  # a model changing its buffers changes nobody else's
    _same_fit(first, PCA(0.9).fit(x))
    assert len(fits) == 1


def test_other_features_or_another_level_are_fitted_anew(fits: list[int]) -> None:
    fit_sharing.share_fits(1 << 20)
    x = _features()
    PCA(0.9).fit(x)
    changed = x.clone()
    changed[5, 17] += 1e-3
    PCA(0.9).fit(changed)
    PCA(0.95).fit(x)
    PCA(3).fit(x)
    PCA(0.9).fit(x.double())
    assert len(fits) == 5
    unshared = PCA(0.95)
    fit_sharing.share_fits(0)
    _same_fit(PCA(0.95).fit(x), unshared.fit(x))


def test_the_budget_bounds_what_is_kept(fits: list[int]) -> None:
    x, y = _features(0), _features(1)
    size = sum(getattr(PCA(0.9).fit(x), n).nbytes for n in FITTED)
    fits.clear()
    fit_sharing.share_fits(size + size // 2)  # room for one fit
    PCA(0.9).fit(x)
    PCA(0.9).fit(y)  # x's fit is dropped for y's
    PCA(0.9).fit(y)
    PCA(0.9).fit(x)
    assert len(fits) == 3
    fit_sharing.share_fits(size // 2)  # too small for any: nothing kept
    PCA(0.9).fit(x)
    assert len(fits) == 4
