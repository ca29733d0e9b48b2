"""The warning raised when a metric cannot be computed from the given test set."""

from __future__ import annotations

import warnings


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given data (e.g. only one class) and was set to NaN."""


def warn_undefined(message: str) -> float:
    """Warn with ``message`` (plain words: which metric and why) and return ``float("nan")``."""
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
    return float("nan")
