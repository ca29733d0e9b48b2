"""Which errors are the user's to fix, and how to word them in one line.

A user error is bad input, a bad option, a missing file or a missing weights file: the
command line shows it as one line (the traceback only with ``debug=true``). Anything else
is a bug in dfmx or a plugin and keeps its traceback. dfmx raises its user errors as
subclasses of :class:`UserError`; a mistaken value is a :class:`ConfigError`, which is also
a ``ValueError`` so that ``except ValueError`` keeps catching it. A plain ``ValueError`` is
*not* the user's: it may come from a bug deep in a library, and its traceback is needed.
"""

from __future__ import annotations

__all__ = ["USER_ERRORS", "ConfigError", "DataError", "UserError", "describe", "is_user_error",
           "traceback_text"]


class UserError(Exception):
    """Base class of errors the user can fix (input, options, files); shown as one line."""


class ConfigError(UserError, ValueError):
    """An option or input value that dfmx cannot use (a ``ValueError`` too)."""


class DataError(UserError, ValueError):
    """Input data dfmx cannot use: missing or empty image folders, too few usable images
    (a ``ValueError`` too)."""


#: The exception types shown as one line: dfmx's user errors, and the operating system's
#: errors about paths the user named.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)

# torch's DataLoader re-raises an error of a worker process with the worker's formatted
# traceback inside the message; the user needs only its last line.
_TRACEBACK_MARK = "Traceback (most recent call last)"


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix (see :data:`USER_ERRORS`)."""
    return isinstance(exc, USER_ERRORS)


def _message(exc: BaseException) -> str:
    text = str(exc)
    if _TRACEBACK_MARK in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else text
        name = f"{type(exc).__name__}: "
        return last[len(name):] if last.startswith(name) else last
    return text


def traceback_text(exc: BaseException) -> str:
    """The whole traceback of ``exc`` (its causes too), as Python prints it."""
    import traceback

    return "".join(traceback.format_exception(exc))


def describe(exc: BaseException, debug_flag: str = "debug=true") -> str:
    """One line (or a short paragraph) saying what is wrong and how to fix it."""
    return f"{type(exc).__name__}: {_message(exc)}\n(run with {debug_flag} for the full traceback)"
