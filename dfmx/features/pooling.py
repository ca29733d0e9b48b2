"""Spatial pooling of feature maps before they are flattened and fitted with PCA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dfmx.errors import ConfigError

POOLING_METHODS: tuple[str, ...] = ("avg", "max", "none")


def check_kernel_size(kernel_size: object) -> None:
    """Raise :class:`~dfmx.errors.ConfigError` unless ``kernel_size`` is an int >= 1."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ConfigError(f"pooling kernel_size must be a whole number >= 1; got {kernel_size!r}")


#: The pooling kernel (and stride) unless one is given: anomalib's.
DEFAULT_KERNEL_SIZE = 4


def pool_features(x: torch.Tensor, method: str = "avg",
                  kernel_size: int = DEFAULT_KERNEL_SIZE) -> torch.Tensor:
    """Pool a batch of feature maps with a square window whose stride equals its size.

    This is what anomalib's DFM does (``F.avg_pool2d(features, kernel_size)``): windows do
    not overlap and there is no padding. When ``h`` (or ``w``) is not divisible by
    ``kernel_size``, the last ``h % kernel_size`` rows (columns) are dropped (floor mode),
    so the output is ``(N, C, h // k, w // k)``.

    Args:
        x: feature maps, shape ``(N, C, h, w)``.
        method: ``"avg"``, ``"max"`` or ``"none"``.
        kernel_size: window size ``k`` (>= 1). ``1`` or ``method="none"`` returns ``x``
            unchanged (the same tensor object).

    Returns:
        Pooled maps, shape ``(N, C, h // k, w // k)``.

    Raises:
        ValueError: unknown method (the message lists the choices), ``kernel_size < 1``, a
            tensor that is not 4-D, or a map smaller than the window.
    """
    if method not in POOLING_METHODS:
        raise ConfigError(
            f"Unknown pooling method {method!r}; choose one of {', '.join(POOLING_METHODS)}."
        )
    check_kernel_size(kernel_size)
    if x.ndim != 4:
        raise ValueError(f"Expected feature maps of shape (N, C, h, w), got {tuple(x.shape)}.")
    if method == "none" or kernel_size == 1:
        return x
    h, w = x.shape[-2:]
    if h < kernel_size or w < kernel_size:
        raise ConfigError(
            f"Feature map {h}x{w} is smaller than the pooling window {kernel_size}; "
            "use a smaller kernel_size or larger images."
        )
    if method == "avg":
        return F.avg_pool2d(x, kernel_size)
    return F.max_pool2d(x, kernel_size)


class Pooling:
    """A pooling plugin (entry-point group ``dfmx.poolings``): ``Config`` holds its options;
    calling it maps feature maps ``(N, C, h, w)`` to pooled maps ``(N, C, h', w')``.

    dfmx constructs a pooling with every field of its ``Config`` as a keyword argument
    (``cls(**fields)``), so a plugin with more options subclasses ``Config`` and takes
    them in ``__init__``. ``kernel_size`` is the window that the size check of
    :class:`~dfmx.engine.torch_model.DFMModel` reports.
    """

    method: str = "avg"

    @dataclass
    class Config:
        kernel_size: int = DEFAULT_KERNEL_SIZE

    def __init__(self, kernel_size: int = Config.kernel_size) -> None:
        check_kernel_size(kernel_size)
        self.kernel_size = kernel_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(x, self.method, self.kernel_size)


class AvgPooling(Pooling):
    """Mean over non-overlapping ``kernel_size`` windows (DFM's default)."""

    method = "avg"


class MaxPooling(Pooling):
    """Maximum over non-overlapping ``kernel_size`` windows."""

    method = "max"


class NoPooling(Pooling):
    """Keep the feature maps as they are (``kernel_size`` is ignored)."""

    method = "none"
