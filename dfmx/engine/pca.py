"""Principal component analysis in pure torch, exact, solved in float64 on the small side.

The fit never builds a float64 copy of the feature matrix: it accumulates either the
``(n, n)`` Gram matrix (``n_samples < n_features``) or the ``(d, d)`` covariance matrix
(otherwise) block by block in float64, and takes its symmetric eigendecomposition.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from dfmx.engine.fitted import FittedModule

# Rows (or columns) converted to float64 at a time while accumulating a Gram/covariance.
_BLOCK = 2048


def _check_n_components(n_components: float | int) -> None:
    if isinstance(n_components, bool) or not isinstance(n_components, (int, float)):
        raise ValueError(
            f"n_components must be an int >= 1 or a float in (0, 1); got {n_components!r}"
        )
    if isinstance(n_components, int):
        if n_components < 1:
            raise ValueError(f"n_components as an int must be >= 1; got {n_components}")
    elif not 0.0 < n_components < 1.0:
        raise ValueError(
            f"n_components as a float is a variance ratio and must lie in (0, 1); "
            f"got {n_components}. Pass an int to keep an exact number of components."
        )


def components_for_ratio(explained_variance_ratio: Tensor, level: float) -> int:
    """The smallest ``k`` whose cumulative explained variance ratio reaches ``level``.

    This is scikit-learn's rule. ``explained_variance_ratio`` is sorted descending.
    """
    cumulative = torch.cumsum(explained_variance_ratio.double(), dim=0)
    # A tiny tolerance keeps a ratio that equals ``level`` up to rounding from spilling
    # over into one more component.
    k = int(torch.searchsorted(cumulative, torch.tensor(level - 1e-12, dtype=torch.float64)))
    return min(k + 1, explained_variance_ratio.numel())


def _fix_signs(components: Tensor) -> Tensor:
    """Make the largest-magnitude entry of every component positive (deterministic sign)."""
    idx = components.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(components.gather(1, idx))
    signs[signs == 0] = 1
    return components * signs


class PCA(FittedModule):
    """Principal component analysis.

    Args:
        n_components: an ``int >= 1`` keeps exactly that many components (capped at
            ``min(n_samples, n_features)``); a ``float`` in ``(0, 1)`` keeps the smallest
            number of components whose cumulative explained variance ratio reaches it.

    Fitted state (buffers, so ``state_dict`` saves them): ``mean_ (n_features,)``,
    ``components_ (k, n_features)``, ``explained_variance_ (k,)``,
    ``explained_variance_ratio_ (k,)``, ``singular_values_ (k,)``.

    Example:
        >>> x = torch.randn(50, 8)
        >>> pca = PCA(n_components=3).fit(x)
        >>> pca.transform(x).shape
        torch.Size([50, 3])
    """

    def __init__(self, n_components: float | int = 0.97) -> None:
        super().__init__()
        _check_n_components(n_components)
        self.n_components = n_components
        for name in (
            "mean_",
            "components_",
            "explained_variance_",
            "explained_variance_ratio_",
            "singular_values_",
        ):
            self.register_buffer(name, torch.empty(0))
        self.n_samples_: int = 0

    # ------------------------------------------------------------------ fitting
    def fit(self, x: Tensor) -> PCA:
        """Fit on ``x`` of shape ``(n_samples, n_features)``; returns ``self``."""
        if x.ndim != 2:
            raise ValueError(f"PCA.fit expects (n_samples, n_features); got shape {tuple(x.shape)}")
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples to fit; got {n}")
        if not torch.isfinite(x).all():
            raise ValueError("PCA.fit: the features contain NaN or inf values")
        mean = x.double().mean(dim=0) if n * d <= _BLOCK * _BLOCK else self._blocked_mean(x)
        if n < d:
            eigvals, components = self._fit_gram(x, mean)
        else:
            cov = self._covariance(x, mean)
            eigvals, components = self._eig_covariance(cov)
        self._set_fitted(mean, eigvals, components, n, x.dtype)
        return self

    def fit_batches(self, batches: Iterable[Tensor]) -> PCA:
        """Fit from an iterable of ``(b, n_features)`` batches in one streaming pass.

        Memory grows with ``n_features²`` (the covariance), not with the number of samples.
        Equivalent to :meth:`fit` on the concatenated batches.
        """
        total = None
        outer = None
        n = 0
        first = None
        dtype = torch.float32
        for batch in batches:
            if batch.ndim != 2:
                raise ValueError(
                    f"fit_batches expects (b, n_features) batches; got {tuple(batch.shape)}"
                )
            if not torch.isfinite(batch).all():
                raise ValueError("PCA.fit_batches: the features contain NaN or inf values")
            dtype = batch.dtype
            b = batch.double()
            if first is None:
                # Shift by the first sample to keep the one-pass covariance well conditioned.
                first = b[0].clone()
                total = torch.zeros_like(first)
                outer = torch.zeros(b.shape[1], b.shape[1], dtype=torch.float64, device=b.device)
            b = b - first
            total += b.sum(dim=0)
            outer += b.T @ b
            n += b.shape[0]
        if n < 2 or first is None:
            raise ValueError(f"PCA needs at least 2 samples to fit; got {n}")
        shifted_mean = total / n
        cov = outer - n * torch.outer(shifted_mean, shifted_mean)
        eigvals, components = self._eig_covariance(cov)
        self._set_fitted(shifted_mean + first, eigvals, components, n, dtype)
        return self

    @staticmethod
    def _blocked_mean(x: Tensor) -> Tensor:
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], _BLOCK):
            total += x[start : start + _BLOCK].double().sum(dim=0)
        return total / x.shape[0]

    @staticmethod
    def _covariance(x: Tensor, mean: Tensor) -> Tensor:
        """Scatter matrix ``Xcᵀ Xc`` (d, d) in float64, accumulated over row blocks."""
        d = x.shape[1]
        cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], _BLOCK):
            block = x[start : start + _BLOCK].double() - mean
            cov += block.T @ block
        return cov

    @staticmethod
    def _eig_covariance(scatter: Tensor) -> tuple[Tensor, Tensor]:
        eigvals, eigvecs = torch.linalg.eigh(scatter)
        eigvals = eigvals.flip(0).clamp_min(0)
        components = eigvecs.flip(1).T.contiguous()  # (d, d), rows are components
        return eigvals, components

    @staticmethod
    def _fit_gram(x: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
        """Eigendecomposition through the (n, n) Gram matrix; components recovered as
        ``V_kᵀ Xc / sqrt(λ_k)`` for the non-null eigenvalues."""
        n, d = x.shape
        gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
        for start in range(0, d, _BLOCK):
            cols = x[:, start : start + _BLOCK].double() - mean[start : start + _BLOCK]
            gram += cols @ cols.T
        eigvals, eigvecs = torch.linalg.eigh(gram)
        eigvals = eigvals.flip(0).clamp_min(0)
        eigvecs = eigvecs.flip(1)
        # Centred data has rank <= n - 1: the last eigenvalue is (numerically) zero.
        tol = eigvals[0] * max(n, d) * torch.finfo(torch.float64).eps
        rank = max(int((eigvals > tol).sum()), 1)
        eigvals, eigvecs = eigvals[:rank], eigvecs[:, :rank]
        scale = eigvecs / eigvals.sqrt()  # (n, rank)
        components = torch.empty(rank, d, dtype=torch.float64, device=x.device)
        for start in range(0, d, _BLOCK):
            cols = x[:, start : start + _BLOCK].double() - mean[start : start + _BLOCK]
            components[:, start : start + _BLOCK] = scale.T @ cols
        return eigvals, components

    def _set_fitted(
        self, mean: Tensor, eigvals: Tensor, components: Tensor, n: int, dtype: torch.dtype
    ) -> None:
        total = eigvals.sum()
        ratio = eigvals / total if total > 0 else torch.zeros_like(eigvals)
        max_k = min(n, components.shape[1], eigvals.numel())
        if isinstance(self.n_components, int):
            k = min(self.n_components, max_k)
        else:
            k = min(components_for_ratio(ratio, float(self.n_components)), max_k)
        components = _fix_signs(components[:k])
        out = dtype if dtype.is_floating_point else torch.float32
        self.mean_ = mean.to(out)
        self.components_ = components.to(out)
        self.explained_variance_ = (eigvals[:k] / (n - 1)).to(out)
        self.explained_variance_ratio_ = ratio[:k].to(out)
        self.singular_values_ = eigvals[:k].sqrt().to(out)
        self.n_samples_ = n

    # ------------------------------------------------------------------ applying
    @property
    def is_fitted(self) -> bool:
        return self.components_.numel() > 0

    @property
    def n_components_(self) -> int:
        """Number of components kept by the fit."""
        return int(self.components_.shape[0])

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("PCA is not fitted yet: call fit() first")

    def transform(self, x: Tensor) -> Tensor:
        """Project ``(n_samples, n_features)`` onto the components → ``(n_samples, k)``.

        The input is never modified.
        """
        self._require_fitted()
        return (x.to(self.mean_.dtype) - self.mean_) @ self.components_.T

    def inverse_transform(self, z: Tensor) -> Tensor:
        """Map ``(n_samples, k)`` coordinates back to ``(n_samples, n_features)``."""
        self._require_fitted()
        return z.to(self.components_.dtype) @ self.components_ + self.mean_

    def fit_transform(self, x: Tensor) -> Tensor:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def reconstruction_error(self, x: Tensor) -> Tensor:
        """Per-feature squared reconstruction error ``(x - x̂)²``, shape of ``x``."""
        self._require_fitted()
        centred = x.to(self.mean_.dtype) - self.mean_
        residual = centred - (centred @ self.components_.T) @ self.components_
        return residual.square()

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(x)

    def extra_repr(self) -> str:
        fitted = f", n_components_={self.n_components_}" if self.is_fitted else ""
        return f"n_components={self.n_components}{fitted}"
