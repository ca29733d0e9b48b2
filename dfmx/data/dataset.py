"""Torch dataset over a list of :class:`~dfmx.data.samples.Sample` and its loader."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from dfmx.data.batches import available_cpus, decode_image
from dfmx.data.images import INTERPOLATIONS, load_mask, to_float
from dfmx.data.samples import Sample
from dfmx.errors import ConfigError

__all__ = ["ImageDataset", "default_num_workers", "make_loader"]


class ImageDataset(Dataset):
    """Images (and masks) of a sample list, decoded and resized on access.

    Each item is a dict:

    * ``image``: float32 ``(3, H, W)`` in ``[0, 1]``;
    * ``mask``: float32 ``(1, H, W)`` of 0/1 (all zeros when the sample has no mask);
    * ``label``: int, 0 normal, 1 anomalous;
    * ``path``: str, the image file;
    * ``has_mask``: bool, whether ``mask`` came from a file.

    Batched by the default collate: ``image`` ``(B, 3, H, W)``, ``mask`` ``(B, 1, H, W)``,
    ``label`` int64 ``(B,)``, ``has_mask`` bool ``(B,)``, ``path`` a list of ``B`` str.

    Args:
        samples: the samples, in the order items are returned.
        image_size: ``(height, width)``, or one int for a square.
        interpolation: image resize filter (see :data:`~dfmx.data.images.INTERPOLATIONS`);
            masks always use nearest neighbour.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: int | tuple[int, int] = 256,
        interpolation: str = "bilinear",
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        self.samples = list(samples)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size: tuple[int, int] = (int(image_size[0]), int(image_size[1]))
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = to_float(decode_image(sample.path, self.image_size, self.interpolation))
        if sample.mask_path is not None:
            mask = load_mask(sample.mask_path, self.image_size).to(torch.float32)
        else:
            mask = torch.zeros((1, *self.image_size), dtype=torch.float32)
        return {
            "image": image,
            "mask": mask,
            "label": int(sample.label),
            "path": str(sample.path),
            "has_mask": sample.mask_path is not None,
        }

    @property
    def labels(self) -> list[int]:
        """Labels of all samples, in order, without decoding any image."""
        return [s.label for s in self.samples]


#: Sets up to this many items (or one batch) load in the main process: starting worker
#: processes would cost more than it saves.
SMALL_DATASET = 32


def default_num_workers(n_items: int, batch_size: int, max_workers: int = 8) -> int:
    """Worker count for ``n_items``: 0 for a small set, else one per CPU (capped).

    A set of at most one batch or :data:`SMALL_DATASET` items gets 0 workers. Otherwise
    one worker per available CPU, but never more than batches nor ``max_workers``.
    """
    n_batches = math.ceil(n_items / max(batch_size, 1))
    if n_batches <= 1 or n_items <= SMALL_DATASET:
        return 0
    return max(0, min(available_cpus(), max_workers, n_batches))


def _single_thread_worker(worker_id: int) -> None:
    """Keep each loader worker to one torch thread, so workers do not oversubscribe CPUs."""
    torch.set_num_threads(1)


def make_loader(
    dataset: Dataset,
    batch_size: int = 16,
    num_workers: int | None = None,
) -> DataLoader:
    """A deterministic loader: dataset order (no shuffle), last partial batch kept.

    Args:
        dataset: usually an :class:`ImageDataset`.
        batch_size: images per batch.
        num_workers: decoding processes; ``None`` chooses :func:`default_num_workers`.
            Workers are not persistent and run torch single-threaded.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers is None:
        num_workers = default_num_workers(len(dataset), batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        persistent_workers=False,
        worker_init_fn=_single_thread_worker if num_workers > 0 else None,
    )
