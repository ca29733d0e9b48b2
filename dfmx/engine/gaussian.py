"""A multivariate Gaussian fitted through the SVD, scored as a negative log-likelihood."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dfmx.engine.fitted import FittedModule

# Singular values below this fraction of the largest are floored to it, so near-singular
# directions never produce inf/NaN (and do not dominate the score with 1/0).
_REL_FLOOR = 1e-6


class SingleClassGaussian(FittedModule):
    """Gaussian density of one (normal) class, fitted without inverting a matrix.

    ``fit(dataset)`` takes ``dataset`` of shape ``(n_features, n_samples)`` (as anomalib's
    class does), centres it once, and takes the thin SVD ``Xc / sqrt(n - 1) = U S Vᵀ`` so
    that the covariance is ``U S² Uᵀ``. ``score_samples(features)`` with ``features`` of
    shape ``(n_samples, n_features)`` returns the exact negative log-density
    ``-log N(x; μ, Σ)`` restricted to the span of the training data (a pseudo-density
    when ``n_samples <= n_features``). Higher = more anomalous.

    Fitted buffers: ``mean_ (n_features,)``, ``norm_vec_ (n_features, r)`` (``U``),
    ``sigma_vals_ (r,)`` (``S``, floored).

    Example:
        >>> g = SingleClassGaussian().fit(torch.randn(3, 100))
        >>> g.score_samples(torch.zeros(2, 3)).shape
        torch.Size([2])
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean_", torch.empty(0))
        self.register_buffer("norm_vec_", torch.empty(0))
        self.register_buffer("sigma_vals_", torch.empty(0))

    # anomalib's attribute names, read-only aliases
    @property
    def mean_vec(self) -> Tensor:
        return self.mean_

    @property
    def u(self) -> Tensor:
        return self.norm_vec_

    @property
    def sigma(self) -> Tensor:
        return self.sigma_vals_

    @property
    def is_fitted(self) -> bool:
        return self.sigma_vals_.numel() > 0

    def fit(self, dataset: Tensor) -> SingleClassGaussian:
        """Fit on ``dataset`` of shape ``(n_features, n_samples)``; returns ``self``."""
        if dataset.ndim != 2:
            raise ValueError(
                "SingleClassGaussian.fit expects (n_features, n_samples); "
                f"got {tuple(dataset.shape)}"
            )
        n = dataset.shape[1]
        if n < 2:
            raise ValueError(f"SingleClassGaussian needs at least 2 samples; got {n}")
        if not torch.isfinite(dataset).all():
            raise ValueError("SingleClassGaussian.fit: the data contain NaN or inf values")
        data = dataset.double()
        mean = data.mean(dim=1)
        centred = (data - mean[:, None]) / math.sqrt(n - 1)
        u, s, _ = torch.linalg.svd(centred, full_matrices=False)
        floor = max(float(s.max()) * _REL_FLOOR, torch.finfo(torch.float64).tiny)
        out = dataset.dtype if dataset.dtype.is_floating_point else torch.float32
        self.mean_ = mean.to(out)
        self.norm_vec_ = u.to(out)
        self.sigma_vals_ = s.clamp_min(floor).to(out)
        return self

    def forward(self, dataset: Tensor) -> SingleClassGaussian:
        """Same as :meth:`fit` (anomalib's ``forward`` fits)."""
        return self.fit(dataset)

    def score_samples(self, features: Tensor) -> Tensor:
        """Negative log-likelihood of ``features (n_samples, n_features)`` → ``(n_samples,)``."""
        if not self.is_fitted:
            raise RuntimeError("SingleClassGaussian is not fitted yet: call fit() first")
        x = features.double() - self.mean_.double()
        z = (x @ self.norm_vec_.double()) / self.sigma_vals_.double()
        r = self.sigma_vals_.numel()
        log_det = 2.0 * torch.log(self.sigma_vals_.double()).sum()
        nll = 0.5 * (z.square().sum(dim=1) + log_det + r * math.log(2 * math.pi))
        return nll.to(features.dtype if features.dtype.is_floating_point else torch.float32)
