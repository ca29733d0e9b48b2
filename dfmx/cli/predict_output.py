"""``dfmx-predict``'s output folder: checked before any work, filled all at once.

``dfmx-predict`` owns two entries of its ``--output`` folder, ``predictions.csv`` and
``overlays/``; other files there are left alone. A prediction writes into a hidden staging
folder inside the output folder (``.dfmx-predict.<random>.tmp``, on the same file system)
and moves its results into place only when every image is scored and every file written
(:meth:`PredictionFolder.commit`): a prediction that fails or is interrupted leaves the
earlier results as they were, and a finished one replaces them entirely (no overlay of an
earlier prediction stays beside the new ones), saying how many earlier files it replaced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

from dfmx.errors import ConfigError
from dfmx.system_errors import write_error

#: The results a prediction writes, inside the output folder.
CSV_NAME = "predictions.csv"
OVERLAYS_NAME = "overlays"
WAY_OUT = "name another folder with --output"


class OutputPathError(ConfigError):
    """``--output`` names something that cannot be the output folder."""


def _count_files(path: Path) -> int:
    if path.is_dir():
        return sum(1 for p in path.rglob("*") if not p.is_dir())
    return 1 if path.exists() else 0


class PredictionFolder:
    """The output folder of one prediction.

    Creating it checks ``folder`` (not a file, writable) and makes the staging folder, so
    a bad ``--output`` stops the command before the model is loaded. Write into
    :attr:`staging` (``staging / CSV_NAME``, ``staging / OVERLAYS_NAME``), then call
    :meth:`commit`; :meth:`discard` (also on failure) removes the staging folder.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputPathError(f"--output {self.folder} is a file, not a folder; name a "
                                  "folder (it is created when missing)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.staging = self.folder / f".dfmx-predict.{secrets.token_hex(4)}.tmp"
            self.staging.mkdir()
        except (FileExistsError, NotADirectoryError) as exc:  # a parent is a file
            blocker = next((p for p in self.folder.parents if p.is_file()), exc.filename)
            raise OutputPathError(f"--output {self.folder} cannot be a folder: {blocker} is "
                                  f"a file; {WAY_OUT}") from exc
        except OSError as exc:
            raise write_error(exc, f"the output folder {self.folder}", WAY_OUT) from exc

    def commit(self) -> int:
        """Move the staged results into the folder, replacing the earlier ones; returns how
        many earlier files were replaced (removed)."""
        csv_path, overlays = self.folder / CSV_NAME, self.folder / OVERLAYS_NAME
        replaced = _count_files(csv_path) + _count_files(overlays)
        if overlays.exists():
            os.replace(overlays, self.staging / "earlier-overlays")
        if (self.staging / OVERLAYS_NAME).exists():
            os.replace(self.staging / OVERLAYS_NAME, overlays)
        if (self.staging / CSV_NAME).exists():
            os.replace(self.staging / CSV_NAME, csv_path)
        elif csv_path.exists():
            csv_path.unlink()
        self.discard()
        return replaced

    def discard(self) -> None:
        """Remove the staging folder (what a failed prediction wrote)."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.staging)
