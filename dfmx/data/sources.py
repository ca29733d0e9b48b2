"""Built-in data sources, registered as ``dfmx.datasets`` entry points.

A data-source plugin is a class with a ``Config`` dataclass (its options, ``data.<field>``
on the command line) taking those fields as keyword arguments, and a ``load()`` method that
returns ``(train_samples, test_samples)`` or ``(train_samples, val_samples, test_samples)``,
lists of :class:`dfmx.data.Sample` (``val``: normal images never used to fit; when a
source gives none, dfmx holds out ``data.val_fraction`` of ``train``, see
:mod:`dfmx.data.splits`). An optional ``mask_locations()`` method says, for messages,
where the source looks for masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfmx.data.demo import DEMO_CATEGORY, demo_root
from dfmx.data.samples import (
    NORMAL_TYPE,
    Sample,
    check_distinct_folders,
    folder_samples,
    folder_split,
    mvtec_samples,
)
from dfmx.data.validation import MIN_TRAIN_IMAGES
from dfmx.errors import ConfigError, DataError

#: How :func:`mask_locations` describes a source that does not say where its masks are.
_UNKNOWN_MASKS = "wherever the data source looks (it does not say)"


def mask_locations(source: object) -> str:
    """Where a data source looks for masks, for messages: its ``mask_locations()`` (an
    optional method of data-source plugins), else a generic phrase."""
    describe = getattr(source, "mask_locations", None)
    if callable(describe):
        try:
            return str(describe())
        except Exception:  # a plugin's description must not break a run
            return _UNKNOWN_MASKS
    return _UNKNOWN_MASKS


def _required(value: object, option: str, example: str) -> str:
    """``value``, checked when the source is made: the start-up check of the options makes
    it, so a missing option stops the command before any run exists."""
    if not value:
        raise ConfigError(f"{option} is required, e.g. {example}")
    return str(value)


def _check_train(train: list[Sample], where: str, hint: str = "") -> list[Sample]:
    """Stop early, naming the folder, when there are too few training images for a PCA."""
    if len(train) < MIN_TRAIN_IMAGES:
        raise DataError(
            f"only {len(train)} training image(s) in {where}; DFM needs at least "
            f"{MIN_TRAIN_IMAGES} (a PCA of one image is undefined){hint}"
        )
    return train


class DemoData:
    """The embedded synthetic data set (MVTec AD layout), generated on first use."""

    @dataclass
    class Config:
        cache_dir: str | None = None

    def __init__(self, cache_dir: str | None = None) -> None:
        self.cache_dir = cache_dir

    def mask_locations(self) -> str:
        return f"{demo_root(self.cache_dir) / DEMO_CATEGORY}/ground_truth/<type>/<stem>_mask.png"

    def load(self) -> tuple[list[Sample], list[Sample]]:
        root = demo_root(self.cache_dir)
        return mvtec_samples(root, DEMO_CATEGORY, "train"), mvtec_samples(
            root, DEMO_CATEGORY, "test"
        )


class MVTecData:
    """One category of a data set in MVTec AD layout: ``ROOT/CATEGORY/train/good``,
    ``ROOT/CATEGORY/test/<type>``, ``ROOT/CATEGORY/ground_truth/<type>/<stem>_mask.png``."""

    @dataclass
    class Config:
        root: str | None = None
        category: str | None = None

    def __init__(self, root: str | None = None, category: str | None = None) -> None:
        self.root = _required(root, "data.root", "data.root=/data/mvtec_ad")
        self.category = _required(category, "data.category", "data.category=bottle")

    def mask_locations(self) -> str:
        return f"{Path(self.root) / self.category}/ground_truth/<type>/<stem>_mask.png"

    def load(self) -> tuple[list[Sample], list[Sample]]:
        root, category = self.root, self.category
        train = mvtec_samples(root, category, "train")
        _check_train(train, str(Path(root) / category / "train" / NORMAL_TYPE))
        return train, mvtec_samples(root, category, "test")


class FolderData:
    """Plain folders of images.

    Options:
        normal_dir: normal images. Those not held out for testing are the training set.
        abnormal_dir: anomalous images (test set only). Optional.
        mask_dir: masks of the anomalous images, matched by file stem (``<stem>.png`` or
            ``<stem>_mask.png``); nonzero pixels are defects. Optional.
        test_normal_dir: normal test images; when given, no normal image of ``normal_dir``
            is held out.
        normal_test_fraction: share of ``normal_dir`` held out as normal test images
            when ``test_normal_dir`` is not given.
        val_dir: normal validation images (thresholds and the label-free selection
            metric); when given, none of ``normal_dir`` is held out for validation.
        seed: seed of the hold-out split.
    """

    @dataclass
    class Config:
        normal_dir: str | None = None
        abnormal_dir: str | None = None
        mask_dir: str | None = None
        test_normal_dir: str | None = None
        normal_test_fraction: float = 0.2
        val_dir: str | None = None
        seed: int = 0

    def __init__(self, **options: object) -> None:
        _required(options.get("normal_dir"), "data.normal_dir", "data.normal_dir=/data/good")
        self.options = options

    def mask_locations(self) -> str:
        mask_dir = self.options.get("mask_dir")
        if not mask_dir:
            return "nowhere: data.mask_dir is not set"
        return f"{mask_dir}/<stem>.png or <stem>_mask.png"

    def load(self) -> tuple[list[Sample], list[Sample]] | tuple[
            list[Sample], list[Sample], list[Sample]]:
        opts = dict(self.options)
        val_dir = opts.pop("val_dir", None)
        check_distinct_folders({f"data.{k}": (opts if k != "val_dir" else {k: val_dir}).get(k)
                                for k in ("normal_dir", "abnormal_dir", "mask_dir",
                                          "test_normal_dir", "val_dir")})
        train, test = folder_split(**opts)
        hint = "" if opts.get("test_normal_dir") else (
            f" after holding out {len(test) - sum(s.label for s in test)} for testing "
            "(data.normal_test_fraction; or give data.test_normal_dir)"
        )
        train = _check_train(train, f"data.normal_dir={opts['normal_dir']}", hint)
        if not val_dir:
            return train, test
        val = folder_samples(val_dir)
        if not val:
            raise DataError(f"no images in data.val_dir={val_dir}")
        return train, val, test
