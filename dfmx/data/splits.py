"""The validation split: normal images held out of the training set, never used to fit.

A data source returns ``(train, test)`` or ``(train, val, test)``. When it gives no
validation images, :func:`hold_out_validation` carves them from the training normals:
``round(val_fraction * n)`` images, raised to :data:`MIN_VAL_IMAGES` and lowered so that
:data:`~dfmx.data.validation.MIN_TRAIN_IMAGES` remain for fitting. The choice is a seeded
random draw, so a job is deterministic under its ``seed``; both parts keep the source's
order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dfmx.data.samples import Sample
from dfmx.data.validation import MIN_TRAIN_IMAGES
from dfmx.errors import ConfigError

__all__ = ["DEFAULT_VAL_FRACTION", "MIN_VAL_IMAGES", "hold_out_validation", "validation_count"]

#: Share of the training normals held out for validation by default.
DEFAULT_VAL_FRACTION = 0.2
#: The fewest validation images held out when ``val_fraction > 0`` and the training set
#: allows it (a threshold and an AUROC from fewer images say little).
MIN_VAL_IMAGES = 5


def validation_count(n_train: int, val_fraction: float) -> int:
    """How many of ``n_train`` normals :func:`hold_out_validation` holds out.

    ``0`` when ``val_fraction`` is 0 or when fewer than ``MIN_TRAIN_IMAGES + 1`` images
    exist; else ``round(val_fraction * n_train)`` clipped to
    ``[min(MIN_VAL_IMAGES, n_train - MIN_TRAIN_IMAGES), n_train - MIN_TRAIN_IMAGES]``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1); got {val_fraction!r}")
    spare = n_train - MIN_TRAIN_IMAGES
    if val_fraction == 0 or spare < 1:
        return 0
    wanted = max(round(val_fraction * n_train), MIN_VAL_IMAGES)
    return min(wanted, spare)


def hold_out_validation(
    train: Sequence[Sample], val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """``(train, val)``: :func:`validation_count` images of ``train`` drawn with ``seed``.

    Both lists keep ``train``'s order; the same inputs always give the same split.
    """
    n_val = validation_count(len(train), val_fraction)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A11])
    chosen = set(rng.permutation(len(train))[:n_val].tolist())
    kept = [s for i, s in enumerate(train) if i not in chosen]
    val = [s for i, s in enumerate(train) if i in chosen]
    return kept, val


def source_options(source: type, params: dict) -> dict:
    """``params`` without ``val_fraction`` (dfmx's own option, added to every data
    source's config) unless the source's ``Config`` takes it itself."""
    config = getattr(source, "Config", None)
    if dataclasses.is_dataclass(config) and "val_fraction" in {
            f.name for f in dataclasses.fields(config)}:
        return dict(params)
    return {k: v for k, v in params.items() if k != "val_fraction"}
