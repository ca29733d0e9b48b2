"""Image and mask loading: every PIL mode to 8-bit RGB, masks to boolean tensors.

Conversion rules of :func:`load_image` (after the EXIF orientation is applied):

* ``1``, ``L``: grey replicated to three channels.
* ``I;16`` (and ``I;16B``/``I;16L``/``I;16N``): scaled from the file's bit depth to 8 bits,
  ``round(v * 255 / (2**bits - 1))``; ``bits`` is the TIFF ``BitsPerSample`` when the
  file declares fewer than 16, else 16. Never clipped at 255 as ``Image.convert`` does.
* ``I`` (32-bit integer): as above with the declared TIFF depth, 16 bits for PNGs; for
  other sources 16 bits unless a value exceeds 65535, then 32 bits. Negatives become 0.
* ``F`` (float): values in ``[0, 1]`` are scaled by 255; a maximum in ``(1, 255]`` is
  taken as 8-bit range, a larger one as 16-bit range. NaN becomes 0.
* ``P`` (palette): expanded; a palette with transparency becomes ``RGBA`` first.
* ``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``: **alpha is composited onto black**, i.e.
  ``rgb * alpha / 255`` (fully transparent pixels turn black).
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: PIL's own conversion to RGB.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dfmx.errors import ConfigError, UserError

__all__ = [
    "INTERPOLATIONS",
    "ImageLoadError",
    "image_to_tensor",
    "load_image",
    "load_mask",
    "pil_to_rgb",
    "resize_image",
    "to_float",
]

#: Interpolation names accepted by :func:`image_to_tensor`.
INTERPOLATIONS: tuple[str, ...] = (
    "nearest",
    "nearest-exact",
    "bilinear",
    "bicubic",
    "area",
    "box",
    "hamming",
    "lanczos",
)
# Filters only PIL offers; applied to the 8-bit image before conversion to a tensor.
_PIL_FILTERS = {
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
_TIFF_BITS_PER_SAMPLE = 258
#: Images with more pixels than this are first shrunk by an integer factor with PIL's
#: ``reduce`` (a box filter) when they are at least 4x the target size, so that an
#: 8000x8000 photo does not become a 768 MB float tensor. Smaller images are untouched.
LARGE_IMAGE_PIXELS = 4096 * 4096


class ImageLoadError(UserError, ValueError):
    """A file could not be read as an image; the message names the file, :attr:`path`
    holds it (``None`` where unknown)."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _declared_bits(img: Image.Image) -> int | None:
    """Bits per sample the file declares (TIFF tag 258), if any."""
    tags = getattr(img, "tag_v2", None)
    if tags is None or _TIFF_BITS_PER_SAMPLE not in tags:
        return None
    bits = tags[_TIFF_BITS_PER_SAMPLE]
    if isinstance(bits, tuple):
        bits = bits[0]
    return int(bits)


def _scale_to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    scaled = values.astype(np.float64) * (255.0 / float(2**bits - 1))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _integer_to_l(img: Image.Image, source_format: str | None) -> Image.Image:
    values = np.asarray(img).astype(np.int64)
    bits = _declared_bits(img)
    if bits is None or bits > 32:
        if img.mode.startswith("I;16") or source_format == "PNG":
            bits = 16
        else:
            bits = 16 if values.size == 0 or values.max() <= 65535 else 32
    return Image.fromarray(_scale_to_uint8(np.clip(values, 0, None), bits), mode="L")


def _float_to_l(img: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    if peak <= 1.0:
        scaled = values * 255.0
    elif peak <= 255.0:
        scaled = values
    else:
        scaled = values * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _composite_on_black(img: Image.Image) -> Image.Image:
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
    rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def pil_to_rgb(img: Image.Image, source_format: str | None = None) -> Image.Image:
    """Convert a loaded PIL image of any mode to 8-bit ``RGB`` (rules in the module doc).

    Args:
        img: image in any PIL mode.
        source_format: the file format (``img.format`` of the opened file) when ``img`` is
            a derived copy; used to infer the bit depth of mode ``I``.
    """
    mode = img.mode
    source_format = source_format or img.format
    if mode == "RGB":
        return img
    if mode == "P":
        if "transparency" in img.info:
            return _composite_on_black(img.convert("RGBA"))
        return img.convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _composite_on_black(img)
    if mode in ("1", "L"):
        return img.convert("L").convert("RGB")
    if mode == "I" or mode.startswith("I;16"):
        return _integer_to_l(img, source_format).convert("RGB")
    if mode == "F":
        return _float_to_l(img).convert("RGB")
    return img.convert("RGB")


_ORIENTATION_TAG = 0x0112
# EXIF orientation value → the transpositions that bring the image upright.
_ORIENTATION_FIX: dict[int, tuple[Image.Transpose, ...]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _read(path: Path, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Open ``path``, decode fully, ``convert`` it, then apply its EXIF orientation."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                try:
                    orientation = int(img.getexif().get(_ORIENTATION_TAG, 1))
                except (TypeError, ValueError, SyntaxError, OSError):
                    orientation = 1  # unreadable EXIF block: keep the stored orientation
                out = convert(img)
                if out is img:
                    out = img.copy()  # closing the file invalidates ``img``
        for method in _ORIENTATION_FIX.get(orientation, ()):
            out = out.transpose(method)
        return out
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}", path) from err


def load_image(path: str | Path) -> Image.Image:
    """Load any image file as 8-bit ``RGB`` ``(W, H)``, EXIF orientation applied.

    Alpha is composited onto black; 16-bit, 32-bit and float images are scaled to 8 bits
    by their bit depth (see the module docstring for every mode).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageLoadError: the file is empty, corrupt, truncated or not an image.
    """
    return _read(Path(path), pil_to_rgb)


def _mask_to_l(img: Image.Image) -> Image.Image:
    """0/255 ``L`` image: 255 wherever any colour channel is nonzero (alpha ignored)."""
    if img.mode == "P":
        img = img.convert("RGBA")
    values = np.asarray(img)
    if values.ndim == 3:
        channels = values.shape[2]
        if img.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
            channels -= 1
        defect = np.any(np.nan_to_num(values[..., :channels]) != 0, axis=2)
    else:
        defect = np.nan_to_num(values) != 0
    return Image.fromarray(defect.astype(np.uint8) * 255, mode="L")


def load_mask(path: str | Path, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Load a defect mask as a bool tensor ``(1, H, W)``; any nonzero value is a defect.

    Args:
        path: mask file (any mode; for colour masks any nonzero channel counts, alpha is
            ignored).
        size: output ``(height, width)`` or one int for a square; resized with NEAREST so
            the mask stays binary. ``None`` keeps the file's size.

    Raises:
        FileNotFoundError, ImageLoadError: as :func:`load_image`.
    """
    mask_img = _read(Path(path), _mask_to_l)
    if size is not None:
        height, width = _size_hw(size)
        if mask_img.size != (width, height):
            mask_img = mask_img.resize((width, height), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(mask_img) > 0).unsqueeze(0)


def _pil_to_tensor(img: Image.Image, target: tuple[int, int] | None,
                   interpolation: str) -> torch.Tensor:
    """8-bit ``(3, H, W)`` of a PIL image; very large ones reduced, PIL-only filters applied."""
    img = pil_to_rgb(img)
    if target is not None and img.width * img.height > LARGE_IMAGE_PIXELS:
        factor = min(img.width // target[1], img.height // target[0]) // 2
        if factor >= 2:
            img = img.reduce(factor)  # still >= 2x the target: the resize after finishes
    if target is not None and interpolation in _PIL_FILTERS and img.size != target[::-1]:
        img = img.resize(target[::-1], _PIL_FILTERS[interpolation])
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def resize_image(
    img: Image.Image | torch.Tensor,
    size: int | tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Convert an image to an 8-bit tensor ``(3, H, W)``, resized; the decoded form that
    batches are made of and that the image cache stores.

    Resizing stays in 8 bits, separably, as PIL and timm's own evaluation transforms do
    (torch's uint8 kernels): several times faster than a float resize, at most 1/255 from
    the float result for bilinear, a few 1/255
    for bicubic where one pass saturates.

    Args:
        img: PIL image (converted with :func:`pil_to_rgb` if not ``RGB``), or 8-bit RGB
            ``(3, H, W)`` (as :func:`~dfmx.data.png.decode_plain_png` gives).
        size: output ``(height, width)``, one int for a square, or ``None`` to keep size.
        interpolation: one of :data:`INTERPOLATIONS`. ``nearest``, ``nearest-exact``,
            ``bilinear`` and ``bicubic`` resize with torch in uint8; ``area`` in float,
            rounded back; ``box``, ``hamming`` and ``lanczos`` with PIL.
        antialias: low-pass when shrinking with bilinear/bicubic (torch's ``antialias``).
    """
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    target = None if size is None else _size_hw(size)
    if isinstance(img, torch.Tensor):
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"Expected uint8 (3, H, W), got {img.dtype} {tuple(img.shape)}.")
        if target is not None and interpolation in _PIL_FILTERS:  # filters only PIL has
            img = Image.fromarray(img.permute(1, 2, 0).numpy())
    tensor = img if isinstance(img, torch.Tensor) else _pil_to_tensor(img, target, interpolation)
    if target is None or tuple(tensor.shape[1:]) == target:
        return tensor.contiguous()
    batch = tensor.unsqueeze(0)
    if interpolation == "area":  # no uint8 kernel: average in float, round back
        resized = F.interpolate(batch.to(torch.float32), size=target, mode="area")
        return resized[0].round_().clamp_(0, 255).to(torch.uint8).contiguous()
    kwargs = {}
    if interpolation in ("bilinear", "bicubic"):
        kwargs = {"align_corners": False, "antialias": antialias}
    return F.interpolate(batch, size=target, mode=interpolation, **kwargs)[0].contiguous()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """8-bit images (any shape) as float32 in ``[0, 1]``."""
    return images.to(torch.float32).div_(255.0)


def image_to_tensor(
    img: Image.Image,
    size: int | tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """:func:`resize_image` as float32 ``(3, H, W)`` in ``[0, 1]`` (multiples of 1/255)."""
    return to_float(resize_image(img, size, interpolation, antialias))
