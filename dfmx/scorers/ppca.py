"""Probabilistic-PCA likelihood: one Gaussian that scores both the PCA span and its residual.

The model (Tipping & Bishop, 1999) is ``x = μ + W z + ε`` with ``z ~ N(0, I_q)`` and
isotropic noise ``ε ~ N(0, σ² I_D)``, so ``x ~ N(μ, C)`` with ``C = W Wᵀ + σ² I``. Its
maximum-likelihood fit keeps the PCA: with ``U (D, q)`` the kept components and
``λ_1 ≥ … ≥ λ_q`` their variances,

    W = U (Λ - σ² I)^½,     σ² = (Σ_{i>q} λ_i) / (D - q) = (tr S - Σ_{i≤q} λ_i) / (D - q),

so ``C = U Λ Uᵀ + σ² (I - U Uᵀ)``: variance ``λ_i`` along each kept component and ``σ²``
in every other direction. Only the trace of the sample covariance ``S`` is needed, not its
discarded eigenvalues. Writing ``y = Uᵀ (x - μ)`` and ``r = (x - μ) - U y`` (the residual
FRE measures), ``C⁻¹ = U Λ⁻¹ Uᵀ + (I - U Uᵀ) / σ²`` and
``log |C| = Σ log λ_i + (D - q) log σ²``, hence

    -log N(x; μ, C) = ½ [Σ_i y_i² / λ_i + ||r||² / σ² + Σ_i log λ_i + (D - q) log σ²
                         + D log 2π].

The in-span term is what ``nll`` scores; the residual term is FRE divided by ``σ²``.

Shrinkage. With few images and many components the trailing ``λ_i`` come from a handful
of samples: the in-sample variance along those directions is far smaller than a new normal
image's, and ``Σ y_i² / λ_i`` is then dominated by noise (what makes ``nll`` fall to
chance). When the PCA keeps nearly all ``N - 1`` non-zero directions, ``σ²`` is likewise
estimated from almost nothing. The scorer therefore fits the PPCA to the shrunk covariance
``S_s = (1 - s) S + s τ I`` with ``τ = tr S / D`` (the Ledoit-Wolf target: it keeps the
trace). ``S_s`` has the same eigenvectors, so its PPCA fit is the one above with

    λ_i' = (1 - s) λ_i + s τ,      σ'² = (1 - s) σ² + s τ,

and ``λ_i' ≥ σ'²`` as the model requires (``λ_i' = max(λ_i', σ'²)`` guards rounding).
``s = 0`` is the plain maximum-likelihood PPCA; ``s → 1`` tends to the Euclidean distance
to the mean.

Maps. With ``w = C'^{-½} (x - μ) = U (y / √λ') + r / σ'`` (``C'`` the shrunk model's
covariance), ``||w||² = Σ y_i² / λ_i' + ||r||² / σ'²`` exactly, so ``½ w²`` summed over
the channels at each location is a non-negative map of the Mahalanobis term. The image
score is the full negative log-likelihood: the sum of the map plus the constant
``½ [Σ log λ_i' + (D - q) log σ'² + D log 2π]``, the same for every image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dfmx.engine.pca import PCA
from dfmx.engine.scorer import ScoreOutput, Scorer

# Rows of features converted to float64 at a time when summing the total variance.
_BLOCK = 256
# A noise variance below this fraction of the largest kept variance is raised to it, so a
# residual of exactly zero in training (all non-zero directions kept) never gives 1/0.
_REL_FLOOR = 1e-10


@dataclass
class PPCAConfig:
    """Hyperparameters of :class:`PPCAScorer`.

    ``shrinkage``: the weight ``s`` in ``[0, 1]`` of the isotropic target ``τ I`` in the
    shrunk covariance ``(1 - s) S + s τ I`` (``τ = tr S / D``); ``0`` is the plain
    maximum-likelihood PPCA.
    """

    shrinkage: float = 0.1


class PPCAScorer(Scorer):
    """Negative log-likelihood of a feature under the probabilistic PCA of the training
    features (see the module docstring for the derivation).

    Gives maps ``(N, 1, h, w)``: half the squared whitened feature ``C^{-½}(x - μ)``
    summed over channels. The image score ``(N,)`` is the negative log-density
    ``-log N(x; μ, C)``, i.e. the sum of the map plus a constant.

    Fitted buffers: ``span_var_ (q,)`` (``λ_i'``), ``noise_var_ ()`` (``σ'²``, a 0-d
    tensor), ``total_var_ ()`` (``tr S``, the training features' total variance).
    """

    Config = PPCAConfig
    produces_maps = True

    def __init__(self, shrinkage: float = PPCAConfig.shrinkage) -> None:
        super().__init__()
        if (isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float))
                or not 0.0 <= float(shrinkage) <= 1.0):
            raise ValueError(f"ppca shrinkage must be a number in [0, 1]; got {shrinkage!r}")
        self.shrinkage = float(shrinkage)
        self.register_buffer("span_var_", torch.empty(0))
        self.register_buffer("noise_var_", torch.empty(0))
        self.register_buffer("total_var_", torch.empty(0))

    @property
    def is_fitted(self) -> bool:
        return self.span_var_.numel() > 0

    def fit(self, features: Tensor, pca: PCA) -> PPCAScorer:
        """Fit on the training features ``(N, C, h, w)`` given ``pca`` fitted on them."""
        n = features.shape[0]
        flat = features.reshape(n, -1)
        dim = flat.shape[1]
        mean = pca.mean_.double()
        total = torch.zeros((), dtype=torch.float64, device=flat.device)
        for start in range(0, n, _BLOCK):
            total += (flat[start:start + _BLOCK].double() - mean).square().sum()
        total = total / max(n - 1, 1)
        span = pca.explained_variance_.double()
        q = span.numel()
        tau = total / dim
        # With every direction kept there is no residual and σ² never enters the likelihood.
        noise = ((total - span.sum()).clamp_min(0) / (dim - q) if dim > q
                 else span[-1].clone())
        noise = noise.clamp_min(float(span[0]) * _REL_FLOOR)
        s = self.shrinkage
        span = (1 - s) * span + s * tau
        noise = (1 - s) * noise + s * tau
        span = torch.maximum(span, noise)
        out = pca.mean_.dtype
        self.span_var_ = span.to(out)
        self.noise_var_ = noise.to(out)
        self.total_var_ = total.to(out)
        return self

    def log_normaliser(self, dim: int) -> Tensor:
        """``½ [Σ log λ_i' + (D - q) log σ'² + D log 2π]`` for features of ``dim`` values
        (a 0-d float64 tensor): the part of the score every image shares."""
        span = self.span_var_.double()
        noise = self.noise_var_.double()
        q = span.numel()
        return 0.5 * (span.log().sum() + (dim - q) * noise.log() + dim * math.log(2 * math.pi))

    def score(self, features: Tensor, pca: PCA) -> ScoreOutput:
        """Scores ``(N,)`` and maps ``(N, 1, h, w)`` of test features ``(N, C, h, w)``."""
        if not self.is_fitted:
            raise RuntimeError("PPCAScorer is not fitted yet: fit it first")
        n, c, h, w = features.shape
        dtype = pca.mean_.dtype
        centred = features.reshape(n, -1).to(dtype) - pca.mean_
        coords = centred @ pca.components_.T  # (N, q)
        inv_noise_sd = self.noise_var_.rsqrt().to(dtype)
        coef = self.span_var_.rsqrt().to(dtype) - inv_noise_sd
        whitened = (coords * coef) @ pca.components_ + centred * inv_noise_sd
        maps = 0.5 * whitened.square().reshape(n, c, h, w).sum(dim=1, keepdim=True)
        const = self.log_normaliser(c * h * w)
        scores = (maps.double().sum(dim=(1, 2, 3)) + const).to(dtype)
        return ScoreOutput(scores=scores, maps=maps)
