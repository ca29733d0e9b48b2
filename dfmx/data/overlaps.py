"""Refuse data sets whose training images, test images and masks are not kept apart.

A test image that is also a training image, or a mask that is also an image, makes the
metrics meaningless without any error: a test set drawn from the training folder scores
AUROC 1.0, a training set holding the anomalous images scores them as normal, masks kept
beside the anomalous images are scored as images (each its own mask). The checks here run
on the sample lists every data source returns (:func:`check_overlaps`), so a third-party
source is held to them too.

Files are the same when they are one file on disk (same device and inode: a second path,
a symlink or a hard link to it) or when their contents are equal. Contents are compared
only between files of equal size in different sets (size from ``stat``, then a SHA-256 of
those few files), so a data set of distinct images costs one ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from dfmx.data.samples import Sample
from dfmx.errors import DataError

__all__ = ["DataOverlapError", "check_overlaps"]

#: Example files named in the message.
_SHOWN = 3
_ROLES = ("training image", "test image", "mask")


class DataOverlapError(DataError):
    """Training images, test images and masks are not distinct files."""


def _identity(path: Path) -> tuple[tuple[int, int] | str, int | None]:
    """``((device, inode) or the real path, size or None)`` of a file."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path), None
    return (st.st_dev, st.st_ino), st.st_size


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file's contents (hex), or ``None`` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _roles(train: Iterable[Sample], test: Iterable[Sample]) -> list[tuple[int, Path]]:
    """``(role index, path)`` of every file: training images, test images, masks."""
    files = [(0, Path(s.path)) for s in train]
    for s in test:
        files.append((1, Path(s.path)))
        if s.mask_path is not None:
            files.append((2, Path(s.mask_path)))
    return files


def _show(pairs: Sequence[tuple[Path, Path]]) -> str:
    shown = [str(a) if a == b else f"{a} = {b}" for a, b in pairs[:_SHOWN]]
    more = f", ... ({len(pairs)} in all)" if len(pairs) > _SHOWN else ""
    return ", ".join(shown) + more


def _message(roles: tuple[int, int], pairs: Sequence[tuple[Path, Path]], how: str) -> str:
    a, b = roles
    if a == b:
        return (f"{len(pairs)} {_ROLES[a]}(s) are listed twice ({how}): {_show(pairs)}; "
                "the data source must give each file once")
    if roles == (1, 2):
        advice = ("masks must be kept apart from the test images (with data=folder, "
                  "data.mask_dir must not be data.abnormal_dir)")
    elif roles == (0, 2):
        advice = "masks must be kept apart from the training images"
    else:
        advice = ("a test image seen in training makes every metric meaningless; keep "
                  "training and test images in separate folders")
    return (f"{len(pairs)} file(s) are both a {_ROLES[a]} and a {_ROLES[b]} ({how}): "
            f"{_show(pairs)}; {advice}")


def _masks_beside_images(samples: Iterable[Sample]) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs of images ``<stem>_mask.<ext>`` lying beside ``<stem>.<ext>``
    in one folder: MVTec-style masks kept with the images, and so read as images."""
    paths = [Path(s.path) for s in samples]
    stems = {(p.parent, p.stem) for p in paths}
    return [(p.with_name(p.stem[:-len("_mask")] + p.suffix), p) for p in paths
            if p.stem.endswith("_mask") and (p.parent, p.stem[:-len("_mask")]) in stems]


def check_overlaps(train: Sequence[Sample], test: Sequence[Sample]) -> None:
    """Refuse training images, test images and masks that are the same file.

    Checks, in order: a file listed twice in one set; a file in two sets (same path, a
    link to it, or equal contents); images named ``<stem>_mask`` beside an image
    ``<stem>`` (masks read as images). Masks may repeat (two images can share one mask).

    Raises:
        DataOverlapError: (a :class:`~dfmx.errors.DataError`) naming the first kind of
            overlap found and up to three of its files.
    """
    files = _roles(train, test)
    by_id: dict[tuple[int, int] | str, tuple[int, Path]] = {}
    by_size: dict[int, list[tuple[int, Path]]] = {}
    found: dict[tuple[int, int], list[tuple[Path, Path]]] = {}
    for role, path in files:
        ident, size = _identity(path)
        first = by_id.get(ident)
        if first is None:
            by_id[ident] = (role, path)
            if size is not None:
                by_size.setdefault(size, []).append((role, path))
            continue
        if first[0] == role == 2:
            continue  # one mask shared by several images
        found.setdefault((min(first[0], role), max(first[0], role)), []).append(
            (first[1], path))
    for roles in sorted(found):
        raise DataOverlapError(_message(roles, found[roles], "same file"))

    same: dict[tuple[int, int], list[tuple[Path, Path]]] = {}
    for group in by_size.values():
        if len({role for role, _ in group}) < 2:
            continue  # equal contents within one set are not an overlap
        by_digest: dict[str, tuple[int, Path]] = {}
        for role, path in group:
            digest = file_digest(path)
            if digest is None:
                continue
            first = by_digest.setdefault(digest, (role, path))
            if first[0] != role:
                same.setdefault((min(first[0], role), max(first[0], role)), []).append(
                    (first[1], path))
    for roles in sorted(same):
        raise DataOverlapError(_message(roles, same[roles], "identical contents"))

    beside = _masks_beside_images([*train, *test])
    if beside:
        shown = ", ".join(str(m) for _, m in beside[:_SHOWN])
        more = f", ... ({len(beside)} in all)" if len(beside) > _SHOWN else ""
        raise DataOverlapError(
            f"{len(beside)} image(s) look like masks kept beside their images ({shown}{more}, "
            f"beside {beside[0][0].name}); they would be scored as images. Move the masks to "
            "their own folder (data=folder: data.mask_dir; MVTec layout: "
            "<category>/ground_truth/<type>/<stem>_mask.png)"
        )
