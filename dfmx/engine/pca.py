"""Principal component analysis in pure torch, exact, solved in float64 on the small side.

The fit never builds a float64 copy of the feature matrix: it accumulates either the
``(n, n)`` Gram matrix (``n_samples < n_features``) or the ``(d, d)`` covariance matrix
(otherwise) block by block in float64, and takes its symmetric eigendecomposition.

Only the kept components are needed. For matrices of at least :data:`_PARTIAL_MIN` rows
the leading eigenpairs come from block subspace iteration with Rayleigh-Ritz refinement in
float64, stopped when every kept Ritz pair has a residual ``||A v - λ v||`` below
``_RESIDUAL_TOL · λ_max`` (the accuracy of a full ``eigh``). The total variance is the trace.
When the kept components are a large share of the spectrum (or the iteration does not
converge) the full ``torch.linalg.eigh`` is used, as for small matrices. LAPACK calls run
on one thread (see :func:`_lapack_threads`). ``benchmarks/test_pca_fit.py`` compares the
fit with a float64 SVD (figures in ``docs/performance.md``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from dfmx.engine import fit_sharing
from dfmx.engine.fitted import FittedModule
from dfmx.errors import DataError

# Entries converted to float64 at a time (32 MiB) in every pass over the features.
_BLOCK_ENTRIES = 1 << 22
# Symmetric matrices smaller than this always take the full ``eigh`` (it is fast there).
_PARTIAL_MIN = 768
# Stop the subspace iteration when every kept Ritz residual is below this times λ_max.
_RESIDUAL_TOL = 1e-11
# Most subspace iterations per block size before the block grows (or the full eigh runs).
_MAX_ITER = 40

log = logging.getLogger(__name__)

#: Largest spread of the samples around the first one, relative to the largest feature
#: magnitude, that counts as no variation at all (float32 rounding is ~1e-7).
NO_VARIATION_TOL = 1e-5


class NoVariationError(DataError):
    """The samples a model is fitted on are all the same: there is nothing to model."""


def _row_blocks(x: Tensor, start: int = 0) -> Iterator[Tensor]:
    """Consecutive row slices of ``x`` (n, d) from row ``start``, at most
    :data:`_BLOCK_ENTRIES` entries each (at least one row)."""
    rows = max(1, _BLOCK_ENTRIES // max(1, x.shape[1]))
    for i in range(start, x.shape[0], rows):
        yield x[i : i + rows]


def _column_spans(n: int, d: int) -> Iterator[slice]:
    """Column slices of an (n, d) matrix, at most :data:`_BLOCK_ENTRIES` entries each."""
    cols = max(1, _BLOCK_ENTRIES // max(1, n))
    for i in range(0, d, cols):
        yield slice(i, i + cols)


def _no_variation(n: int, what: str) -> NoVariationError:
    return NoVariationError(
        f"{what}: the {n} training samples carry no variation (they are identical up to "
        "rounding), so there is nothing to model; the training images must differ (not "
        "one image repeated, not all blank)"
    )


class _Extremes:
    """Each feature's lowest and highest value, gathered over blocks of samples (row
    blocks or column spans) without a copy of a block: enough for the checks of every fit
    (:meth:`check`)."""

    def __init__(self, d: int, device: torch.device) -> None:
        self.low = torch.full((d,), math.inf, dtype=torch.float64, device=device)
        self.high = torch.full((d,), -math.inf, dtype=torch.float64, device=device)

    def add(self, block: Tensor, cols: slice = slice(None)) -> None:
        """Take in ``block``, the samples' values of the features ``cols``."""
        low, high = torch.aminmax(block, dim=0)  # NaN propagates; exact in any dtype
        self.low[cols] = torch.minimum(self.low[cols], low.double())
        self.high[cols] = torch.maximum(self.high[cols], high.double())

    def check(self, first: Tensor, n: int, what: str) -> None:
        """Refuse NaN or inf values (``ValueError``) and ``n`` samples that all equal
        ``first``, the first of them (:class:`NoVariationError`): no feature of any sample
        differs from it by more than :data:`NO_VARIATION_TOL` times the largest magnitude.
        A feature's largest distance from ``first`` is ``max(high - first, first - low)``.
        """
        if not (bool(torch.isfinite(self.low).all()) and bool(torch.isfinite(self.high).all())):
            raise ValueError(f"{what}: the features contain NaN or inf values")
        if first.numel() == 0:
            raise _no_variation(n, what)
        first = first.double()
        spread = float(torch.maximum(self.high - first, first - self.low).max())
        scale = float(torch.maximum(self.high, -self.low).max())
        if spread <= NO_VARIATION_TOL * scale:
            raise _no_variation(n, what)


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


def _signs(components: Tensor) -> Tensor:
    """``(k, 1)`` factors ±1 that make the largest-magnitude entry of every component
    positive (the first such entry where two have that magnitude; 1 for a zero row).

    Two reductions per row rather than a copy of ``|components|`` (the components of a
    large feature map are hundreds of MB); only rows whose maximum and minimum have the
    same magnitude are looked at entry by entry.
    """
    top, bottom = components.amax(dim=1), components.amin(dim=1)
    signs = torch.where(top >= -bottom, 1.0, -1.0).to(components.dtype)
    ties = top == -bottom
    if bool(ties.any()):
        rows = components[ties]
        first = torch.sign(rows.gather(1, rows.abs().argmax(dim=1, keepdim=True))).squeeze(1)
        signs[ties] = torch.where(first == 0, 1.0, first).to(components.dtype)
    return signs[:, None]


@contextmanager
def _lapack_threads() -> Iterator[None]:
    """Run LAPACK factorizations (``eigh``, ``qr``) on one CPU thread.

    MKL's multi-threaded ``syevd``/``geqrf`` synchronise their threads at every panel, and
    collapse when the cores are shared with other processes (two threads can be a hundred
    times slower than one on a small matrix). The large matrix products around them stay
    multi-threaded.
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _n_keep(ratio: Tensor, n_components: float | int, max_k: int) -> int:
    """How many components ``n_components`` keeps given the descending variance ratios."""
    if isinstance(n_components, int):
        return min(n_components, max_k)
    return min(components_for_ratio(ratio, float(n_components)), max_k)


def _full_eigh(mat: Tensor) -> tuple[Tensor, Tensor]:
    """All eigenpairs of a symmetric matrix, eigenvalues descending (clamped at 0)."""
    with _lapack_threads():
        eigvals, eigvecs = torch.linalg.eigh(mat)
    return eigvals.flip(0).clamp_min(0), eigvecs.flip(1)


def _leading_eigh(
    mat: Tensor, n_components: float | int, max_k: int
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The leading eigenpairs of the symmetric PSD ``mat`` that ``n_components`` keeps.

    Block subspace iteration from a fixed-seed random start, with a Rayleigh-Ritz step
    (a small float64 ``eigh``) every iteration. Returns ``(eigvals, eigvecs, total)``,
    eigenvalues descending, exactly as many pairs as are kept, ``total`` the trace; or
    ``None`` when the full decomposition is the better (or the only safe) route.
    """
    n = mat.shape[0]
    if n < _PARTIAL_MIN or mat.dtype != torch.float64:
        return None
    total = torch.diagonal(mat).sum().clamp_min(0)
    if not total > 0:
        return None
    oversample = 16
    block = min(n_components, max_k) + oversample if isinstance(n_components, int) else 128
    gen = torch.Generator(device=mat.device).manual_seed(0)
    while block <= n // 3:
        with _lapack_threads():
            q, _ = torch.linalg.qr(
                torch.randn(n, block, generator=gen, dtype=mat.dtype, device=mat.device)
            )
        grow = False
        for iteration in range(_MAX_ITER):
            z = mat @ q
            with _lapack_threads():
                ritz, small = torch.linalg.eigh(q.T @ z)
            ritz, small = ritz.flip(0), small.flip(1)
            vecs = q @ small
            k = _n_keep(ritz.clamp_min(0) / total, n_components, max_k)
            if k > block - oversample:
                # The first Ritz values underestimate the spectrum: only a block that still
                # cannot hold the kept components after a few iterations is too small.
                if iteration >= 3:
                    grow = True
                    break
                with _lapack_threads():
                    q, _ = torch.linalg.qr(z @ small)
                continue
            lam_max = float(ritz[0])
            if lam_max <= 0:
                return None
            residual = torch.linalg.vector_norm(z @ small[:, :k] - vecs[:, :k] * ritz[:k], dim=0)
            if float(residual.max()) <= _RESIDUAL_TOL * lam_max:
                rank_tol = lam_max * max(n, max_k) * torch.finfo(torch.float64).eps
                if float(ritz[k - 1]) <= rank_tol:
                    return None  # rank-deficient inside the kept part: let eigh decide
                return ritz[:k], vecs[:, :k], total
            with _lapack_threads():
                q, _ = torch.linalg.qr(z @ small)
        if not grow:
            return None  # no convergence: fall back to the exact full decomposition
        block *= 2
    return None


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

    #: The fitted buffers (with ``n_samples_``, what a fit sets).
    _FITTED = ("mean_", "components_", "explained_variance_", "explained_variance_ratio_",
               "singular_values_")

    def __init__(self, n_components: float | int = 0.97) -> None:
        super().__init__()
        _check_n_components(n_components)
        self.n_components = n_components
        for name in self._FITTED:
            self.register_buffer(name, torch.empty(0))
        self.n_samples_: int = 0

    # ------------------------------------------------------------------ fitting
    def fit(self, x: Tensor) -> PCA:
        """Fit on ``x`` of shape ``(n_samples, n_features)``; returns ``self``.

        Where :func:`~dfmx.engine.fit_sharing.share_fits` is on (the jobs of a sweep), a
        fit of features already fitted with the same ``n_components`` is a copy of that
        fit.
        """
        if x.ndim != 2:
            raise ValueError(f"PCA.fit expects (n_samples, n_features); got shape {tuple(x.shape)}")
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples to fit; got {n}")
        shared = fit_sharing.key(x, self.n_components)
        if shared is not None and (state := fit_sharing.get(shared)) is not None:
            self._restore(state)
            log.info("PCA of %d x %d features at n_components=%s: the earlier fit of the same "
                     "features reused", n, d, self.n_components)
            return self
        if n < d:
            mean, eigvals, components, total = self._fit_gram(x, self.n_components)
        else:
            mean = self._checked_mean(x)
            cov = self._covariance(x, mean)
            eigvals, components, total = self._eig_covariance(cov, self.n_components, n)
        self._set_fitted(mean, eigvals, components, n, x.dtype, total)
        if shared is not None:
            fit_sharing.put(shared, self._state())
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
        extremes = None
        dtype = torch.float32
        for batch in batches:
            if batch.ndim != 2:
                raise ValueError(
                    f"fit_batches expects (b, n_features) batches; got {tuple(batch.shape)}"
                )
            dtype = batch.dtype
            b = batch.double()
            if first is None:
                # Shift by the first sample to keep the one-pass covariance well conditioned.
                first = b[0].clone()
                total = torch.zeros_like(first)
                outer = torch.zeros(b.shape[1], b.shape[1], dtype=torch.float64, device=b.device)
                extremes = _Extremes(b.shape[1], b.device)
            extremes.add(batch)
            b = b - first
            total += b.sum(dim=0)
            outer += b.T @ b
            n += b.shape[0]
        if n < 2 or first is None or extremes is None:
            raise ValueError(f"PCA needs at least 2 samples to fit; got {n}")
        extremes.check(first, n, "PCA.fit_batches")
        shifted_mean = total / n
        cov = outer - n * torch.outer(shifted_mean, shifted_mean)
        eigvals, components, total = self._eig_covariance(cov, self.n_components, n)
        self._set_fitted(shifted_mean + first, eigvals, components, n, dtype, total)
        return self

    @staticmethod
    def _checked_mean(x: Tensor) -> Tensor:
        """The mean ``(d,)`` of ``x (n, d)``, float64, in one pass over row blocks, which
        also refuses NaN or inf values and samples without variation (:class:`_Extremes`:
        what :meth:`_centred_gram` checks on the other path)."""
        n, d = x.shape
        total = torch.zeros(d, dtype=torch.float64, device=x.device)
        extremes = _Extremes(d, x.device)
        for rows in _row_blocks(x):
            extremes.add(rows)
            total += rows.double().sum(dim=0)
        extremes.check(x[0], n, "PCA.fit")
        return total / n

    @staticmethod
    def _covariance(x: Tensor, mean: Tensor) -> Tensor:
        """Scatter matrix ``Xcᵀ Xc`` (d, d) in float64, accumulated over row blocks."""
        d = x.shape[1]
        cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for rows in _row_blocks(x):
            block = rows.double() - mean
            cov += block.T @ block
        return cov

    @staticmethod
    def _eig_covariance(
        scatter: Tensor, n_components: float | int, n: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Kept eigenpairs of the ``(d, d)`` scatter: ``(eigvals, components, total)``."""
        d = scatter.shape[0]
        leading = _leading_eigh(scatter, n_components, min(n, d))
        if leading is not None:
            eigvals, eigvecs, total = leading
            return eigvals, eigvecs.T.contiguous(), total
        eigvals, eigvecs = _full_eigh(scatter)
        total = eigvals.sum()
        ratio = eigvals / total if total > 0 else torch.zeros_like(eigvals)
        k = _n_keep(ratio, n_components, min(n, d, eigvals.numel()))
        return eigvals[:k], eigvecs[:, :k].T.contiguous(), total  # rows are components

    @staticmethod
    def _centred_gram(x: Tensor) -> tuple[Tensor, Tensor]:
        """The mean ``(d,)`` and the centred Gram matrix ``Xc Xcᵀ (n, n)`` of ``x (n, d)``,
        float64, in one pass over column spans, which also refuses NaN or inf values and
        samples without variation (:class:`_Extremes`)."""
        n, d = x.shape
        mean = torch.empty(d, dtype=torch.float64, device=x.device)
        gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
        extremes = _Extremes(d, x.device)
        for span in _column_spans(n, d):
            cols = x[:, span].to(torch.float64, copy=True)  # centred below, in place
            extremes.add(cols, span)
            mean[span] = cols.mean(dim=0)
            cols -= mean[span]
            gram.addmm_(cols, cols.T)
        extremes.check(x[0], n, "PCA.fit")
        return mean, gram

    @staticmethod
    def _fit_gram(
        x: Tensor, n_components: float | int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Eigendecomposition through the ``(n, n)`` centred Gram matrix
        (:meth:`_centred_gram`); components recovered as ``V_kᵀ Xc / sqrt(λ_k)`` for the
        kept non-null eigenvalues.

        Returns ``(mean, eigvals, components, total)``, for the kept components only.
        """
        n, d = x.shape
        mean, gram = PCA._centred_gram(x)
        leading = _leading_eigh(gram, n_components, min(n, d))
        if leading is not None:
            eigvals, eigvecs, total = leading
        else:
            eigvals, eigvecs = _full_eigh(gram)
            # Centred data has rank <= n - 1: the last eigenvalue is (numerically) zero.
            tol = eigvals[0] * max(n, d) * torch.finfo(torch.float64).eps
            rank = max(int((eigvals > tol).sum()), 1)
            eigvals, eigvecs = eigvals[:rank], eigvecs[:, :rank]
            total = eigvals.sum()
            ratio = eigvals / total if total > 0 else torch.zeros_like(eigvals)
            k = _n_keep(ratio, n_components, min(n, d, rank))
            eigvals, eigvecs = eigvals[:k], eigvecs[:, :k]
        del gram
        rank = eigvals.numel()
        scale = eigvecs / eigvals.sqrt()  # (n, rank)
        components = torch.empty(rank, d, dtype=torch.float64, device=x.device)
        for span in _column_spans(n, d):
            cols = x[:, span].double() - mean[span]
            components[:, span] = scale.T @ cols
        return mean, eigvals, components, total

    def _set_fitted(
        self,
        mean: Tensor,
        eigvals: Tensor,
        components: Tensor,
        n: int,
        dtype: torch.dtype,
        total: Tensor | None = None,
    ) -> None:
        """Store the fit; ``total`` is the sum of all eigenvalues (default: of ``eigvals``)."""
        if total is None:
            total = eigvals.sum()
        ratio = eigvals / total if total > 0 else torch.zeros_like(eigvals)
        max_k = min(n, components.shape[1], eigvals.numel())
        k = _n_keep(ratio, self.n_components, max_k)
        components = components[:k]
        signs = _signs(components)
        out = dtype if dtype.is_floating_point else torch.float32
        self.mean_ = mean.to(out)
        self.components_ = components.to(out, copy=True).mul_(signs.to(out))
        self.explained_variance_ = (eigvals[:k] / (n - 1)).to(out)
        self.explained_variance_ratio_ = ratio[:k].to(out)
        self.singular_values_ = eigvals[:k].sqrt().to(out)
        self.n_samples_ = n

    def _state(self) -> fit_sharing.State:
        return {**{name: getattr(self, name) for name in self._FITTED},
                "n_samples_": self.n_samples_}

    def _restore(self, state: fit_sharing.State) -> None:
        for name in self._FITTED:
            setattr(self, name, state[name])
        self.n_samples_ = int(state["n_samples_"])

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
