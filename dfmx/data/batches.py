"""Decoded image batches for feature extraction: parallel decoding, 8-bit, chunk by chunk.

Decoding is the other half of a DFM job's time: inflating a large PNG with
:mod:`dfmx.data.png` costs about as much as EfficientNet-Lite0's forward pass on a few
images (figures in ``docs/performance.md``). How it is scheduled matters as much as how
fast it is:

* **CPU.** Decoding and the backbone compete for the same cores. DataLoader workers
  that prefetch while the backbone runs slow both down: oneDNN's parallel regions wait
  for their slowest thread, and a core taken by a decoder stalls them all. So images are
  decoded a chunk at a time by a pool of threads, one per core (libpng, PIL's inflate and
  torch's resize release the GIL, so the threads decode in parallel), then
  the backbone runs on the chunk with every core. No process start-up, no pickling, no
  contention.
* **GPU** (``overlap=True``): the next chunk is decoded while the GPU works on this one.

Images stay 8-bit (:func:`~dfmx.data.images.resize_image`) until the backbone converts
them: a quarter of float32's memory and copies. A chunk holds :data:`CHUNK_IMAGES` images
(rounded to whole batches), so memory is bounded whatever the data set's size.

**Decoded-image cache.** Given a ``store`` (the feature cache, see
:class:`~dfmx.features.cache.FeatureCache`), each chunk's decoded images are kept under
a key of the files' identity, size and filter (:func:`image_key`), so a job with another
backbone, precision or weights on the same images reads 8-bit pixels, far cheaper than
decoding. Jobs with the same backbone skip images altogether: their
features are cached.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import torch

from dfmx.data.images import INTERPOLATIONS, LARGE_IMAGE_PIXELS, load_image, resize_image
from dfmx.data.png import decode_plain_png, decoder
from dfmx.data.samples import Sample
from dfmx.errors import ConfigError

__all__ = [
    "CHUNK_IMAGES",
    "IMAGE_CACHE_FORMAT",
    "available_cpus",
    "decode_image",
    "decode_samples",
    "decoder_versions",
    "files_fingerprint",
    "image_batches",
    "image_key",
]

#: Images decoded at a time (rounded up to whole batches): 256 images of 256x256 are
#: 48 MiB of uint8.
CHUNK_IMAGES = 256
#: Bump when what :func:`decode_samples` returns for the same files changes.
IMAGE_CACHE_FORMAT = 1


class ImageStore(Protocol):
    """Where decoded chunks are kept (the feature cache has this method)."""

    def get_or_compute(
        self, key: Mapping[str, Any], split: str, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], bool]: ...


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def files_fingerprint(paths: Sequence[str | os.PathLike[str]]) -> str:
    """SHA-256 of ``(absolute path, size, mtime_ns)`` of each file, in order.

    Cheap (one ``stat`` per file, no reading); touching or rewriting a file changes it.

    Raises:
        FileNotFoundError: a file does not exist.
    """
    digest = hashlib.sha256()
    for path in paths:
        absolute = os.path.abspath(os.fspath(path))
        st = os.stat(absolute)
        # fsencode: the exact bytes of the name, valid UTF-8 or not.
        digest.update(os.fsencode(absolute) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@functools.cache
def decoder_versions() -> dict[str, str]:
    """Versions of the libraries that turn a file into :func:`decode_samples`'s pixels."""
    import PIL

    return {"torch": torch.__version__, "pillow": PIL.__version__, "png": decoder()}


def image_key(paths: Sequence[str | os.PathLike[str]], image_size: tuple[int, int],
              interpolation: str) -> dict[str, Any]:
    """Everything that determines :func:`decode_samples`'s result for ``paths``."""
    return {
        "kind": "images",
        "format": IMAGE_CACHE_FORMAT,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "interpolation": interpolation,
        "versions": decoder_versions(),
        "n_images": len(paths),
        "data": files_fingerprint(paths),
    }


def decode_image(path: str | os.PathLike[str], image_size: tuple[int, int],
                 interpolation: str) -> torch.Tensor:
    """One image file as uint8 ``(3, H, W)`` at ``image_size``: plain 8-bit PNGs with
    :func:`~dfmx.data.png.decode_plain_png`, everything else with
    :func:`~dfmx.data.images.load_image` (same pixels either way)."""
    pixels = decode_plain_png(path, LARGE_IMAGE_PIXELS)
    return resize_image(load_image(path) if pixels is None else pixels, image_size,
                        interpolation)


def decode_samples(
    samples: Sequence[Sample],
    image_size: tuple[int, int],
    interpolation: str,
    pool: ThreadPoolExecutor | None = None,
) -> torch.Tensor:
    """The images of ``samples`` decoded and resized: uint8 ``(N, 3, H, W)``.

    Decoded by ``pool``'s threads when given, else in this thread. A file that cannot be
    read raises :class:`~dfmx.data.images.ImageLoadError` naming it.
    """
    paths = [s.path for s in samples]
    decode = functools.partial(decode_image, image_size=image_size, interpolation=interpolation)
    images = list(pool.map(decode, paths)) if pool is not None else [decode(p) for p in paths]
    return torch.stack(images)


def image_batches(
    samples: Sequence[Sample],
    image_size: int | tuple[int, int],
    interpolation: str,
    batch_size: int,
    *,
    workers: int | None = None,
    overlap: bool = False,
    store: ImageStore | None = None,
) -> Generator[torch.Tensor, None, None]:
    """uint8 batches ``(B, 3, H, W)`` of ``samples``' images, in order, last one partial;
    closing the generator stops its decoding threads.

    Args:
        samples: the images to decode.
        image_size: ``(height, width)`` or one int for a square.
        interpolation: resize filter (see :data:`~dfmx.data.images.INTERPOLATIONS`).
        batch_size: images per batch.
        workers: decoding threads; ``None`` = one per available CPU; ``0`` or ``1`` =
            decode in the calling thread.
        overlap: decode the next chunk while the caller works on this one (for a GPU
            backbone; on a CPU it only makes decoding and the backbone fight for cores).
        store: keeps decoded chunks for later jobs (the feature cache); ``None``: none.

    Raises:
        ValueError: for a bad ``batch_size`` or ``interpolation``, at the call, not at the
            first batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    size = (int(size[0]), int(size[1]))
    threads = available_cpus() if workers is None else int(workers)
    return _decoded_batches(samples, size, interpolation, batch_size, threads, overlap, store)


def _decoded_batches(
    samples: Sequence[Sample], size: tuple[int, int], interpolation: str, batch_size: int,
    threads: int, overlap: bool, store: ImageStore | None,
) -> Generator[torch.Tensor, None, None]:
    """:func:`image_batches`' generator, its arguments checked."""
    chunk = math.ceil(CHUNK_IMAGES / batch_size) * batch_size
    starts = list(range(0, len(samples), chunk))
    pool = ThreadPoolExecutor(threads, thread_name_prefix="dfmx-decode") if threads > 1 else None
    ahead = ThreadPoolExecutor(1, thread_name_prefix="dfmx-prefetch") if overlap else None

    def load(start: int) -> torch.Tensor:
        part = samples[start:start + chunk]
        if store is None:
            return decode_samples(part, size, interpolation, pool)
        key = image_key([s.path for s in part], size, interpolation)
        tensors, _ = store.get_or_compute(
            key, "images", lambda: {"images": decode_samples(part, size, interpolation, pool)}
        )
        return tensors["images"]

    try:
        pending: Future[torch.Tensor] | None = None
        for i, start in enumerate(starts):
            if ahead is None:
                images = load(start)
            else:
                images = (pending or ahead.submit(load, start)).result()
                pending = ahead.submit(load, starts[i + 1]) if i + 1 < len(starts) else None
            for b in range(0, images.shape[0], batch_size):
                yield images[b:b + batch_size]
    finally:
        if ahead is not None:
            ahead.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
