"""What identifies a cache entry: the feature key, weights fingerprints, tensor checksums.

A key holds everything that determines the raw features of a list of images (see
:func:`feature_key`); two jobs with equal keys get bit-identical features, so they share one
entry. Bump :data:`CACHE_FORMAT_VERSION` whenever what is stored, or how images become raw
features (decoding, resizing, normalisation in dfmx code), changes: old entries then simply
stop matching.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dfmx.data.batches import decoder_versions, files_fingerprint
from dfmx.features.prepared import timm_version

__all__ = [
    "CACHE_FORMAT_VERSION",
    "canonical_key",
    "feature_key",
    "tensors_sha256",
    "weights_fingerprint",
]

CACHE_FORMAT_VERSION = 3


def _tensor_bytes(tensor: Tensor) -> memoryview:
    """The raw bytes of ``tensor`` (any dtype, any shape), from a CPU contiguous copy."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``, in name order.

    Fingerprints a backbone's state dict and checksums a cache entry. SHA-256 rather than
    BLAKE2b: CPUs with SHA instructions (x86 since about 2017, ARMv8) hash much faster with
    it.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


_WEIGHTS_MEMO: dict[tuple[Any, ...], str] = {}
_EXTRACTOR_MEMO: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _weights_memo_key(extractor: Any) -> tuple[Any, ...] | None:
    """A per-process identity of the extractor's weights, or ``None`` when there is none.

    Named sources (a weights package, a file, timm's cache) give the same tensors every
    time within a process, so their hash is memoised; files by size, mtime and inode. Random
    weights depend on the seed: they are hashed every time.
    """
    source = str(extractor.weights_source)
    if source == "random":
        return None
    stat: tuple[int, int, int] | None = None
    for prefix in ("file:", "timm:cache:"):
        if source.startswith(prefix):
            try:
                st = os.stat(source[len(prefix):])
            except OSError:
                return None
            stat = (st.st_size, st.st_mtime_ns, st.st_ino)
    return (extractor.timm_name, tuple(extractor.layers), source, stat)


def weights_fingerprint(extractor: Any) -> str:
    """SHA-256 of the backbone's state dict (weights and buffers), memoised per process.

    Memoised per extractor object, and across objects for named weight sources. (An
    extractor is taken not to change its weights after construction: it is frozen.)

    Args:
        extractor: a :class:`~dfmx.features.FeatureExtractor`.
    """
    known = _EXTRACTOR_MEMO.get(extractor)
    if known is not None:
        return known
    memo_key = _weights_memo_key(extractor)
    fingerprint = _WEIGHTS_MEMO.get(memo_key) if memo_key is not None else None
    fingerprint = fingerprint or getattr(extractor, "recorded_fingerprint", None)
    if fingerprint is None:
        fingerprint = tensors_sha256(extractor.net.state_dict())
        if memo_key is not None:
            _WEIGHTS_MEMO[memo_key] = fingerprint
    _EXTRACTOR_MEMO[extractor] = fingerprint
    return fingerprint


def _device_id(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{torch.cuda.get_device_name(index)}"
    return device.type


@functools.cache
def _library_versions() -> dict[str, str]:
    return {**decoder_versions(), "timm": timm_version()}


def feature_key(
    extractor: Any,
    paths: Sequence[str | os.PathLike[str]],
    image_size: int | tuple[int, int],
    batch_size: int,
) -> dict[str, Any]:
    """Everything that determines the raw features of ``paths``, as a JSON-able dict.

    Pooling, fusion, PCA level and scorer are not part of it: they act on raw features.
    ``batch_size`` is, because convolution kernels may round differently for a different
    batch size, and a hit must give exactly the features extraction would give.

    Args:
        extractor: the :class:`~dfmx.features.FeatureExtractor` the features come from.
        paths: the image files, in feature order.
        image_size: ``(height, width)`` or one int for a square, as the images are resized.
        batch_size: images per backbone call.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    return {
        "format": CACHE_FORMAT_VERSION,
        "backbone": extractor.timm_name,
        "weights": weights_fingerprint(extractor),
        "layers": sorted(extractor.layers),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "interpolation": str(extractor.interpolation),
        "mean": [float(v) for v in extractor.mean.flatten().tolist()],
        "std": [float(v) for v in extractor.std.flatten().tolist()],
        "precision": str(extractor.precision),
        "channels_last": bool(extractor.channels_last),
        "optimize": str(extractor.optimize),
        "micro_batch": int(extractor.micro_batch),
        "device": _device_id(extractor.device),
        "batch_size": int(batch_size),
        "versions": _library_versions(),
        "n_images": len(paths),
        "data": files_fingerprint(paths),
    }


def canonical_key(key: Mapping[str, Any]) -> str:
    """``key`` as compact JSON with sorted keys: the text an entry's name is a hash of."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))
