"""Sample lists: which image files make up a data set, their labels and masks.

Two layouts are read:

* **MVTec AD** (:func:`mvtec_samples`)::

      <root>/<category>/train/good/*.png
      <root>/<category>/test/good/*.png
      <root>/<category>/test/<defect_type>/*.png
      <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png

* **plain folders** (:func:`folder_samples`, :func:`folder_split`): one folder of normal
  images, optionally one of anomalous images and one of masks.

All lists are sorted by folder then file name, so they are the same on every run. Hidden
files (names starting with ``.``) are skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfmx.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "NORMAL_TYPE",
    "Sample",
    "check_distinct_folders",
    "folder_samples",
    "folder_split",
    "list_images",
    "mvtec_samples",
]

log = logging.getLogger(__name__)

#: File suffixes (lower case) taken for images; matching ignores case.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
)
#: ``defect_type`` of normal samples (MVTec AD's folder name).
NORMAL_TYPE = "good"
_SPLITS = ("train", "test")
_GROUND_TRUTH = "ground_truth"


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    Attributes:
        path: the image file.
        label: 0 normal, 1 anomalous.
        defect_type: ``"good"`` for normal images, else the defect's name.
        mask_path: the ground-truth mask (nonzero = defect), or ``None`` when there is none.
    """

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None = None


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def list_images(folder: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is a file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"expected a folder of images, got a file: {folder}")
    suffixes = _normalise_extensions(extensions)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


def _no_images(folder: Path, what: str, suffixes: tuple[str, ...] = IMAGE_EXTENSIONS) -> str:
    """Message for a folder without images; names what it holds instead, if anything."""
    others = sorted(p.name for p in folder.iterdir() if p.is_file())
    held = (f"; it holds {len(others)} other file(s): {', '.join(others[:5])}"
            + (", ..." if len(others) > 5 else "")) if others else "; it is empty"
    return f"no {what} in {folder} (image suffixes: {' '.join(suffixes)}){held}"


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        kind = "is not a folder" if path.exists() else "not found"
        raise FileNotFoundError(f"{what} {kind}: {path}")


def mvtec_samples(root: str | Path, category: str, split: str) -> list[Sample]:
    """Samples of one MVTec AD category and split.

    Args:
        root: folder holding the category folders (e.g. ``.../mvtec_ad``).
        category: category folder name (e.g. ``"bottle"``).
        split: ``"train"`` (only ``train/good``) or ``"test"`` (every ``test/<type>``).

    Returns:
        Sorted by defect type then file name. Test images of a defect type get the mask
        ``ground_truth/<type>/<stem>_mask.png`` when that file exists, else ``None``.

    Raises:
        ValueError: ``split`` is not ``"train"``/``"test"``; a split holds no images.
        FileNotFoundError: the root, category, split or ``train/good`` folder is missing.
    """
    if split not in _SPLITS:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    _require_dir(root, "MVTec AD root folder")
    category_dir = root / category
    if not category_dir.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"MVTec AD category {category!r} not found: {category_dir} "
            f"(folders in {root}: {available})"
        )
    split_dir = category_dir / split
    _require_dir(split_dir, f"MVTec AD {split!r} folder (expected <root>/<category>/{split})")

    if split == "train":
        good_dir = split_dir / NORMAL_TYPE
        _require_dir(good_dir, "MVTec AD training folder (expected train/good)")
        images = list_images(good_dir)
        if not images:
            raise DataError(_no_images(good_dir, "training images"))
        return [Sample(p, 0, NORMAL_TYPE, None) for p in images]

    samples: list[Sample] = []
    type_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for type_dir in type_dirs:
        defect_type = type_dir.name
        if defect_type == _GROUND_TRUTH and list_images(type_dir):
            raise DataError(
                f"{type_dir} holds images, which would be scored as a defect type "
                f"{_GROUND_TRUTH!r}: masks belong in {category_dir / _GROUND_TRUTH}/<type>/"
                "<stem>_mask.png, beside test/, not in it"
            )
        for path in list_images(type_dir):
            if defect_type == NORMAL_TYPE:
                samples.append(Sample(path, 0, NORMAL_TYPE, None))
                continue
            mask = category_dir / _GROUND_TRUTH / defect_type / f"{path.stem}_mask.png"
            samples.append(Sample(path, 1, defect_type, mask if mask.is_file() else None))
    if not samples:
        raise DataError(f"no test images in {split_dir} (expected test/<type>/*.png)")
    _warn_orphan_masks(category_dir / _GROUND_TRUTH, samples)
    return samples


def _warn_orphan_masks(gt_dir: Path, samples: list[Sample]) -> None:
    """Warn about MVTec masks ``ground_truth/<type>/<stem>_mask.png`` that match no image."""
    if not gt_dir.is_dir():
        return
    used = {s.mask_path for s in samples if s.mask_path is not None}
    orphans = [
        m for type_dir in sorted(gt_dir.iterdir()) if type_dir.is_dir()
        for m in list_images(type_dir) if m not in used
    ]
    if orphans:
        names = ", ".join(str(m.relative_to(gt_dir)) for m in orphans[:10])
        more = f", ... ({len(orphans)} in all)" if len(orphans) > 10 else ""
        log.warning(
            "%d mask(s) in %s match no test image (expected test/<type>/<stem>.png for "
            "ground_truth/<type>/<stem>_mask.png), ignored: %s%s",
            len(orphans), gt_dir, names, more,
        )


def _find_mask(mask_dir: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    """``<stem>_mask<ext>`` or ``<stem><ext>`` in ``mask_dir``, ``.png`` first."""
    ordered = (".png", *(s for s in suffixes if s != ".png"))
    for name in (f"{stem}_mask", stem):
        for suffix in ordered:
            for candidate in (mask_dir / f"{name}{suffix}", mask_dir / f"{name}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def _images_of(folder: Path, what: str, suffixes: tuple[str, ...]) -> list[Path]:
    """The images directly in ``folder``; clear errors for a missing or imageless folder."""
    _require_dir(folder, what)
    images = list_images(folder, suffixes)
    if not images:
        raise DataError(_no_images(folder, "images", suffixes))
    return images


def folder_samples(
    normal_dir: str | Path | None,
    abnormal_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[Sample]:
    """Samples from plain folders of images (files directly inside; not recursive).

    Args:
        normal_dir: folder of normal images (label 0, ``defect_type="good"``); ``None``
            to read anomalous images only.
        abnormal_dir: folder of anomalous images (label 1, ``defect_type`` = the folder's
            name), or ``None``.
        mask_dir: folder of masks for the anomalous images, matched by file stem:
            ``<stem>_mask.png`` or ``<stem>.png`` (other ``extensions`` too). An anomalous
            image without a mask gets ``mask_path=None``. Normal images never get masks.
        extensions: image file suffixes to take, case-insensitive.

    Returns:
        Normal samples sorted by name, then anomalous samples sorted by name.

    Raises:
        FileNotFoundError: a given folder does not exist.
        ValueError: ``normal_dir`` (or ``abnormal_dir``) holds no image, or both are ``None``.
    """
    if normal_dir is None and abnormal_dir is None:
        raise ConfigError("folder_samples needs normal_dir or abnormal_dir")
    suffixes = _normalise_extensions(extensions)
    samples: list[Sample] = []
    if normal_dir is not None:
        normals = _images_of(Path(normal_dir), "normal image folder", suffixes)
        samples += [Sample(p, 0, NORMAL_TYPE, None) for p in normals]
    if mask_dir is not None:
        mask_dir = Path(mask_dir)
        _require_dir(mask_dir, "mask folder")
    if abnormal_dir is not None:
        abnormal_dir = Path(abnormal_dir)
        abnormals = _images_of(abnormal_dir, "abnormal image folder", suffixes)
        defect_type = abnormal_dir.resolve().name
        for path in abnormals:
            mask = None if mask_dir is None else _find_mask(mask_dir, path.stem, suffixes)
            samples.append(Sample(path, 1, defect_type, mask))
        if mask_dir is not None:
            used = {s.mask_path for s in samples}
            orphans = [m for m in list_images(mask_dir, suffixes) if m not in used]
            if orphans:
                log.warning(
                    "%d mask(s) in %s match no image of %s (masks are matched by stem: "
                    "<stem>.png or <stem>_mask.png), ignored: %s",
                    len(orphans), mask_dir, abnormal_dir,
                    ", ".join(m.name for m in orphans[:10]) + (", ..." if len(orphans) > 10
                                                               else ""),
                )
    return samples


def check_distinct_folders(folders: dict[str, str | Path | None]) -> None:
    """Refuse two options naming one folder (same real path, symlinks resolved).

    ``folders`` maps option names (as the user knows them, e.g. ``"data.mask_dir"``) to
    folders; ``None`` values are left out. Training, test and mask images taken from one
    folder overlap, which makes every metric meaningless.

    Raises:
        ValueError: naming both options and the folder.
    """
    seen: dict[str, str] = {}
    for option, folder in folders.items():
        if folder is None:
            continue
        real = os.path.realpath(folder)
        if real in seen:
            raise DataError(
                f"{seen[real]} and {option} are the same folder ({real}): training images, "
                "test images and masks must each come from their own folder"
            )
        seen[real] = option


def folder_split(
    normal_dir: str | Path,
    abnormal_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
    test_normal_dir: str | Path | None = None,
    normal_test_fraction: float = 0.2,
    seed: int = 0,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> tuple[list[Sample], list[Sample]]:
    """Train and test samples from plain folders.

    Fields (the CLI's ``data=folder`` exposes the same names):

    * ``normal_dir``: folder of normal images; the training set is drawn from it.
    * ``abnormal_dir``: folder of anomalous images, all of them go to the test set.
    * ``mask_dir``: masks of the anomalous images, ``<stem>_mask.png`` or ``<stem>.png``.
    * ``test_normal_dir``: folder of normal test images. When given, every image of
      ``normal_dir`` is used for training and ``normal_test_fraction`` is ignored.
    * ``normal_test_fraction``: otherwise, this fraction of ``normal_dir`` (rounded, at
      least one image when the fraction is > 0) is held out for testing; in ``[0, 1)``.
    * ``seed``: seed of the random choice of held-out normals (deterministic).

    Returns:
        ``(train, test)``: ``train`` holds normal images only; ``test`` holds the held-out
        (or ``test_normal_dir``) normals, sorted, then the anomalous images, sorted.

    Raises:
        ValueError: bad fraction, nothing left for training, or two of the folders are
            one (:func:`check_distinct_folders`).
        FileNotFoundError: a given folder does not exist.
    """
    check_distinct_folders({"normal_dir": normal_dir, "abnormal_dir": abnormal_dir,
                            "mask_dir": mask_dir, "test_normal_dir": test_normal_dir})
    normals = folder_samples(normal_dir, extensions=extensions)
    anomalies = (
        folder_samples(None, abnormal_dir, mask_dir, extensions=extensions)
        if abnormal_dir is not None
        else []
    )
    if test_normal_dir is not None:
        test_normals = folder_samples(test_normal_dir, extensions=extensions)
        return normals, test_normals + anomalies

    if not 0.0 <= normal_test_fraction < 1.0:
        raise ConfigError(f"normal_test_fraction must be in [0, 1), got {normal_test_fraction}")
    n_test = round(normal_test_fraction * len(normals))
    if normal_test_fraction > 0.0:
        n_test = max(n_test, 1)
    if n_test >= len(normals):
        raise DataError(
            f"holding out {n_test} of {len(normals)} normal images in {normal_dir} "
            "leaves none for training"
        )
    held_out = set(np.random.default_rng(seed).permutation(len(normals))[:n_test].tolist())
    train = [s for i, s in enumerate(normals) if i not in held_out]
    test = [s for i, s in enumerate(normals) if i in held_out]
    return train, test + anomalies
