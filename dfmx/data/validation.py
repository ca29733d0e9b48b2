"""Cheap checks of a sample list before any image is decoded: skip what cannot be read.

Policy (``docs/reliability.md`` has the full table):

* An image file that cannot be read — empty, not an image, corrupt or truncated structure,
  or larger than PIL's decompression-bomb limit (``2 * Image.MAX_IMAGE_PIXELS``, about
  179 M pixels) — is **skipped**; so is an anomalous image whose mask cannot be read (its
  pixel ground truth would be wrong). All skipped files are logged in **one** warning and
  returned, so the run can list them in ``skipped_files.csv``
  (:func:`write_skipped_csv`).
* A mask whose size differs from its image is **kept and resized** (nearest neighbour, as
  every mask is resized to ``image_size``) with a warning: MVTec-style data sets sometimes
  store masks at another scale. A different aspect ratio is warned about as well.
* Anomalous images without a mask are kept; when some anomalous images of the test set
  have masks and others do not, a warning names the defect types without masks; when none
  has one, a warning says pixel metrics are not computed (:func:`missing_masks_note` gives
  the run's summary line, with where the data source looked for masks).
* Training images, test images and masks that are the same file (or have equal contents)
  stop the run (:func:`dfmx.data.overlaps.check_overlaps`, run by :func:`validate_split`
  on the readable files), and so do training files that all have one content.
* Training and test sets that become too small after skipping stop the run
  (:func:`validate_split` raises ``ValueError`` naming the folders and skipped files).

The checks open each file and run PIL's ``verify()`` (header and, for PNG, every chunk's
CRC) without decoding pixels, and their results are kept for later commands
(:mod:`dfmx.data.kept_checks`), which check only the files that changed since. A file whose
structure is intact but whose compressed pixel data is damaged (a truncated JPEG, for
instance) passes here and stops the run later with an ``ImageLoadError`` naming it;
``decode=True`` decodes every image up front to catch those as well, at the cost of a
second decode.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from dfmx.atomic import atomic_open
from dfmx.data import kept_checks
from dfmx.data.overlaps import check_overlaps, file_digest
from dfmx.data.samples import Sample
from dfmx.errors import DataError
from dfmx.path_text import path_text, text_safe

__all__ = [
    "MIN_TRAIN_IMAGES",
    "MISSING_MASKS_METRIC",
    "SKIPPED_CSV",
    "Skipped",
    "check_image",
    "check_training_variation",
    "count_missing_masks",
    "missing_masks_note",
    "validate_samples",
    "validate_split",
    "write_skipped_csv",
]

log = logging.getLogger(__name__)

#: File name of the list of skipped files in a run folder.
SKIPPED_CSV = "skipped_files.csv"
#: DFM fits a PCA: one image has no variance to model.
MIN_TRAIN_IMAGES = 2
#: Metric (and MLflow metric) counting the anomalous test images without a mask.
MISSING_MASKS_METRIC = "n_test_anomalous_without_mask"
#: Skipped files named in the log warning; the CSV holds all of them.
_LOG_LIMIT = 10


class Skipped(NamedTuple):
    """A file left out of a data set, and why (a plain ``(path, reason)`` tuple)."""

    path: Path
    reason: str


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def check_image(path: str | Path, decode: bool = False) -> tuple[int, int] | str:
    """``(width, height)`` of a readable image file, else the reason it cannot be used.

    Opens the file and runs PIL's ``verify()``; with ``decode=True`` the pixels are
    decoded too. Never raises for a bad file (any error of PIL's becomes the reason).
    Remembered until the file's size, times, inode or device change
    (:mod:`dfmx.data.kept_checks`): in this process (the jobs of a sweep check each file
    once), and for later ones once :func:`validate_samples` has written the results.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return _check_image(path, decode)
    # abspath, not resolve(): the inode already identifies the file, and resolving every
    # path component is a system call per component for every file of every job.
    full, ident = os.path.abspath(path), kept_checks.identity(st)
    result = kept_checks.lookup(full, ident, decode)
    if result is None:
        result = _check_image(path, decode)
        kept_checks.remember(full, ident, decode, result)
    return result


def _check_image(path: Path, decode: bool) -> tuple[int, int] | str:
    try:
        if not path.is_file():
            return "file not found" if not path.exists() else "not a regular file"
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                size = img.size
                img.verify()
            if decode:
                with Image.open(path) as img:
                    img.load()
    except Image.DecompressionBombError as err:
        return f"image too large (decompression-bomb limit of PIL): {err}"
    except Image.UnidentifiedImageError:
        return "not an image PIL can read (unknown format, or corrupt header)"
    except Exception as err:  # PIL raises many types for damaged files
        return f"corrupt image: {_first_line(err)}"
    if size[0] < 1 or size[1] < 1:
        return f"image has no pixels ({size[0]}x{size[1]})"
    return size


def count_missing_masks(samples: Iterable[Sample]) -> int:
    """The number of anomalous samples (``label == 1``) without a mask."""
    return sum(1 for s in samples if s.label == 1 and s.mask_path is None)


def missing_masks_note(samples: Sequence[Sample], where: str | None = None) -> str | None:
    """One line saying how many anomalous samples lack a mask, and where masks were looked
    for (``where``, from the data source); ``None`` when every anomalous sample has one."""
    missing = count_missing_masks(samples)
    if not missing:
        return None
    total = sum(1 for s in samples if s.label == 1)
    effect = ("pixel metrics are not computed" if missing == total
              else f"pixel metrics use the other {total - missing}")
    return (f"{missing} of {total} anomalous test image(s) have no mask, so {effect}"
            + (f" (masks looked for: {text_safe(where)})" if where else ""))


def _describe_missing_masks(samples: Sequence[Sample]) -> str | None:
    anomalous = [s for s in samples if s.label == 1]
    if not anomalous:
        return None
    if all(s.mask_path is None for s in anomalous):
        return (f"none of the {len(anomalous)} anomalous test image(s) has a ground-truth "
                "mask, so pixel metrics are not computed")
    missing: dict[str, int] = {}
    total: dict[str, int] = {}
    for s in anomalous:
        total[s.defect_type] = total.get(s.defect_type, 0) + 1
        if s.mask_path is None:
            missing[s.defect_type] = missing.get(s.defect_type, 0) + 1
    if not missing:
        return None
    parts = ", ".join(f"{t} ({missing[t]} of {total[t]})" for t in sorted(missing))
    n_missing = sum(missing.values())
    return (
        f"{n_missing} anomalous test image(s) have no ground-truth mask: {parts}. "
        f"Pixel metrics leave them out (their pixel labels are unknown) and use the other "
        f"{len(anomalous) - n_missing}; add the masks (MVTec layout: "
        "ground_truth/<type>/<stem>_mask.png) for pixel metrics over every image"
    )


def validate_samples(
    samples: Iterable[Sample],
    image_size: int | tuple[int, int] | None = None,
    *,
    decode: bool = False,
) -> tuple[list[Sample], list[Skipped]]:
    """Split ``samples`` into usable ones and skipped files (with reasons).

    Args:
        samples: any sample list (order is kept).
        image_size: the size images are resized to; images smaller than it on both sides
            are reported (info) as upscaled. ``None``: no such report.
        decode: decode every image (and mask) fully instead of only verifying its
            structure.

    Returns:
        ``(good, skipped)``. A sample whose image or mask cannot be read is skipped (one
        :class:`Skipped` row for the file at fault). Mask size mismatches and missing
        masks are logged as warnings, not skipped. Nothing is logged for skipped files
        here; :func:`validate_split` logs them once.
    """
    good: list[Sample] = []
    skipped: list[Skipped] = []
    resized: list[str] = []
    upscaled = 0
    target = None
    if image_size is not None:
        target = (image_size, image_size) if isinstance(image_size, int) else image_size
    for sample in samples:
        checked = check_image(sample.path, decode)
        if isinstance(checked, str):
            skipped.append(Skipped(Path(sample.path), checked))
            continue
        if sample.mask_path is not None:
            mask = check_image(sample.mask_path, decode)
            if isinstance(mask, str):
                skipped.append(Skipped(
                    Path(sample.mask_path), f"unreadable mask of {sample.path}: {mask}"
                ))
                continue
            if mask != checked:
                aspect = abs(mask[0] * checked[1] - mask[1] * checked[0]) > max(checked)
                resized.append(
                    f"{sample.mask_path} ({mask[0]}x{mask[1]}, image {checked[0]}x{checked[1]}"
                    + (", different aspect ratio!" if aspect else "") + ")"
                )
        if target is not None and checked[0] < target[1] and checked[1] < target[0]:
            upscaled += 1
        good.append(sample)
    if resized:
        shown = "; ".join(resized[:_LOG_LIMIT])
        more = f"; and {len(resized) - _LOG_LIMIT} more" if len(resized) > _LOG_LIMIT else ""
        log.warning(
            "%d mask(s) differ in size from their image and are resized (nearest neighbour): "
            "%s%s", len(resized), shown, more,
        )
    if upscaled:
        log.info("%d image(s) are smaller than image_size=%s and are upscaled",
                 upscaled, image_size)
    missing = _describe_missing_masks(good)
    if missing:
        log.warning(missing)
    kept_checks.flush()
    return good, skipped


def check_training_variation(train: Sequence[Sample]) -> None:
    """Refuse a training set whose files all have the same contents (one image repeated):
    a PCA of identical samples has nothing to model. Reads the files only when they all
    have one size; training images that differ as files but not as pixels (blank images of
    several formats) are caught by :meth:`dfmx.engine.pca.PCA.fit` when fitting.

    Raises:
        ValueError: naming the number of files and their folders.
    """
    if len(train) < 2:
        return
    try:
        sizes = {os.stat(s.path).st_size for s in train}
    except OSError:
        return  # unreadable files are reported (and skipped) by validate_samples
    if len(sizes) > 1:
        return
    digests = {file_digest(Path(s.path)) for s in train}
    if len(digests) == 1 and None not in digests:
        raise DataError(
            f"the {len(train)} training images in {_folders(train)} all have the same "
            "contents (one image repeated), so they carry no variation to model; DFM needs "
            "training images that differ"
        )


def _folders(samples: Iterable[Sample]) -> str:
    return ", ".join(sorted({str(Path(s.path).parent) for s in samples})) or "(none)"


def _list(skipped: Sequence[Skipped], limit: int = _LOG_LIMIT) -> str:
    lines = [f"  {s.path}: {s.reason}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)


def validate_split(
    train: Sequence[Sample],
    test: Sequence[Sample],
    image_size: int | tuple[int, int] | None = None,
    *,
    min_train: int = MIN_TRAIN_IMAGES,
    decode: bool = False,
) -> tuple[list[Sample], list[Sample], list[Skipped]]:
    """:func:`validate_samples` on both splits; one warning lists every skipped file.

    Returns:
        ``(train, test, skipped)``.

    Raises:
        ValueError: fewer than ``min_train`` training images or no test image is left; the
            message names the folders and the skipped files.
        DataOverlapError: (a ``ValueError``) a file is both a training and a test image,
            or an image and a mask (:func:`~dfmx.data.overlaps.check_overlaps`, on the
            readable files). A ``ValueError`` too when the training files all have one
            content (:func:`check_training_variation`).
    """
    good_train, skipped_train = validate_samples(train, image_size, decode=decode)
    good_test, skipped_test = validate_samples(test, image_size, decode=decode)
    skipped = skipped_train + skipped_test
    if skipped:
        log.warning(
            "skipped %d unreadable file(s) (%d training, %d test); they are listed in %s:\n%s",
            len(skipped), len(skipped_train), len(skipped_test), SKIPPED_CSV, _list(skipped),
        )
    # On the readable files only: unreadable ones (two empty files, say) are skipped anyway.
    check_overlaps(good_train, good_test)
    check_training_variation(good_train)
    if len(good_train) < min_train:
        raise DataError(
            f"only {len(good_train)} usable training image(s) in {_folders(train)} after "
            f"skipping {len(skipped_train)} unreadable file(s); DFM needs at least {min_train}"
            + (f":\n{_list(skipped_train)}" if skipped_train else "")
        )
    if not good_test:
        raise DataError(
            f"no usable test image in {_folders(test)}: all {len(test)} were skipped:\n"
            f"{_list(skipped_test)}"
        )
    return good_train, good_test, skipped


def write_skipped_csv(path: str | Path, skipped: Sequence[tuple[Path | str, str]]) -> Path | None:
    """Write ``path,reason`` rows (a header first) for the skipped files; returns ``path``.

    File names that are not valid UTF-8 are written with ``\\xNN`` escapes
    (:func:`~dfmx.path_text.path_text`).

    Nothing is written (and ``None`` returned) when nothing was skipped.
    """
    if not skipped:
        return None
    path = Path(path)
    with atomic_open(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        for file, reason in skipped:
            writer.writerow([path_text(file), text_safe(reason)])
    return path
