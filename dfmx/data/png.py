"""Fast decoding of plain 8-bit PNGs (most inspection data sets), in threads.

Two decoders, both faster than PIL and both releasing the GIL, so that decoding threads
run in parallel (figures in ``docs/performance.md``):

* imagecodecs' libpng (zlib-ng): the default, on every platform.
* imgread (the Rust ``png`` crate, which unfilters and inflates faster still): used when
  it is installed, with the optional ``fastpng`` extra (``pip install "dfmx[fastpng]"``;
  wheels for Linux x86-64 and macOS arm64). It is a beta by one maintainer, so it is not
  part of the default install.

Both give the same pixels (a PNG is lossless; the tests compare each with PIL);
:func:`decoder` names the one in use, and it is part of the decoded-image cache key.

Only files whose pixels are certain to equal :func:`~dfmx.data.images.load_image`'s take
this path: non-interlaced 8-bit greyscale or RGB, no transparency chunk (libpng would
add an alpha channel that PIL leaves out), no EXIF block (its orientation is applied by
``load_image``), at most :data:`~dfmx.data.images.LARGE_IMAGE_PIXELS` pixels. Anything
else, and any file the decoder rejects, returns ``None``: the caller falls back to PIL,
whose behaviour (including its errors for damaged files) is then unchanged.
"""

from __future__ import annotations

import os
import struct

import imagecodecs
import numpy as np
import torch

try:
    import imgread
except ImportError:  # the optional ``fastpng`` extra is not installed: libpng decodes
    imgread = None

__all__ = ["decode_plain_png", "decoder"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB = 0, 2  # PNG colour types
# Chunks that make PIL's result differ from a plain decode: transparency (libpng expands
# it to an alpha channel that PIL leaves out), EXIF (load_image rotates by its
# orientation; PIL also reads it from a text chunk with this keyword). A false match only
# costs the fast path.
_FALLBACK_CHUNKS = (b"tRNS", b"eXIf")
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_EXIF_TEXT = b"Raw profile type exif"


def _plain_header(head: bytes, max_pixels: int) -> bool:
    """Whether the first 29 bytes of a file are a PNG IHDR this module decodes."""
    if len(head) < 29 or head[:8] != _SIGNATURE or head[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", head[16:24])
    bit_depth, colour, interlace = head[24], head[25], head[28]
    return (bit_depth == 8 and colour in (_GREY, _RGB) and interlace == 0
            and 0 < width * height <= max_pixels)


def _plain_chunks(data: bytes) -> bool:
    """Whether ``data``'s chunks run whole to ``IEND`` with none that PIL reads differently.

    Walks the chunk headers only (a few dozen for a photo) rather than scanning the whole
    file for the markers, which would hold the GIL for every byte.
    """
    pos, end = len(_SIGNATURE), len(data)
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if kind in _FALLBACK_CHUNKS:
            return False
        if kind in _TEXT_CHUNKS and data.find(_EXIF_TEXT, body, body + length) >= 0:
            return False
        if kind == b"IEND":
            return True
        pos = body + length + 4  # and the CRC
    return False  # truncated before IEND: PIL gives the error


def decoder() -> str:
    """The library (and version) that decodes plain PNGs in this process."""
    if imgread is not None:
        return f"imgread {imgread.__version__}"
    return f"imagecodecs {imagecodecs.__version__}"


def decode_plain_png(path: str | os.PathLike[str], max_pixels: int) -> torch.Tensor | None:
    """8-bit RGB ``(3, H, W)`` of a plain 8-bit PNG, or ``None`` where PIL must decode it.

    Greyscale is replicated to three channels, as :func:`~dfmx.data.images.load_image`
    does. ``None`` also for files that cannot be opened or that the decoder rejects.
    """
    try:
        with open(path, "rb") as fh:
            if not _plain_header(fh.read(29), max_pixels):
                return None
            fh.seek(0)
            data = fh.read()
    except OSError:
        return None
    if not _plain_chunks(data):
        return None
    try:
        pixels = (imagecodecs.png_decode(data) if imgread is None
                  else imgread.load_numpy_from_bytes(data))
    except Exception:  # damaged, or beyond imgread's safe limits: PIL decides
        return None
    if pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1)  # a view: pixels stay interleaved
