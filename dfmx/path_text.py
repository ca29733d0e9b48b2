"""File paths as text that any UTF-8 writer accepts.

On POSIX a file name is bytes; Python decodes the bytes that are not valid UTF-8 to lone
surrogates (``b"bad\\xff.png"`` becomes ``"bad\\udcff.png"``), which opening the file
accepts but encoding to UTF-8 (a CSV, a log file, JSON, an MLflow param) refuses with a
``UnicodeEncodeError``. Paths keep their exact form for opening files and for cache keys
(:func:`os.fsencode`); :func:`path_text` is the form written for people to read.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["path_text", "text_safe"]


def path_text(path: str | Path) -> str:
    """``path`` with each byte that is not valid UTF-8 written as ``\\xNN``.

    Valid names come back unchanged; ``b"bad\\xff.png"`` gives ``"bad\\\\xff.png"``.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def text_safe(text: str) -> str:
    """``text`` with lone surrogates (undecodable file-name bytes) written as ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no file-name byte decodes to
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return text

