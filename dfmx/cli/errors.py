"""Which exceptions are the user's to fix (shown as one line), and how to word them."""

from __future__ import annotations

from dfmx.registry import PluginError

# Bad input, bad options, missing files or weights: shown without a traceback unless
# debug=true. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    PluginError,
)

try:  # the feature layer's own error for missing pretrained weights
    from dfmx.features import WeightsUnavailableError

    USER_ERRORS = (*USER_ERRORS, WeightsUnavailableError)
except ImportError:  # pragma: no cover
    pass


def describe(exc: BaseException) -> str:
    """One line (or a short paragraph) saying what is wrong and how to fix it."""
    return f"{type(exc).__name__}: {exc}\n(run with debug=true for the full traceback)"
