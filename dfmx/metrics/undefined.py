"""The warning raised when a metric cannot be computed from the given test set."""

from __future__ import annotations

import warnings


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given data (e.g. only one class) and was set to NaN."""


def warn_undefined(message: str, stacklevel: int = 3) -> float:
    """Warn with ``message`` (plain words: which metric and why) and return ``float("nan")``.

    The warning names the line ``stacklevel`` frames up (3: the caller of the metric
    function that calls this)."""
    warnings.warn(message, UndefinedMetricWarning, stacklevel=stacklevel)
    return float("nan")
