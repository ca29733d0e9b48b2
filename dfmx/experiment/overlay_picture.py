"""One overlay picture, drawn with numpy and Pillow: image | anomaly map | the two blended.

The three panels are ``(H, W)`` pixels each, the image's shape (a picture whose longer side
is under :data:`MIN_PANEL` pixels is enlarged by a whole factor, nearest neighbour, so its
titles fit). The map panel shows the ``(H, W)`` anomaly map in the jet colormap on a
run-wide ``[vmin, vmax]`` scale, with a vertical colorbar and tick labels beside it; the
third panel blends the coloured map over the image (:data:`ALPHA`) and outlines the
ground-truth mask in white. Text, tick values and the PNG writer are
:mod:`dfmx.experiment.drawing`'s; no matplotlib is imported.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
from PIL import Image, ImageDraw

from dfmx.experiment.drawing import fit_text, font, nice_ticks, tick_text
from dfmx.path_text import text_safe

__all__ = ["ALPHA", "MASK_COLOUR", "MIN_PANEL", "jet_lut", "mask_outline", "overlay_picture"]

#: Opacity of the coloured map over the image in the third panel.
ALPHA = 0.45
#: Colour (RGB) of the ground-truth outline.
MASK_COLOUR = (255, 255, 255)
#: Panels whose longer side is shorter than this are enlarged by a whole factor.
MIN_PANEL = 128

_WHITE, _INK, _UNREADABLE = 255, (0, 0, 0), 128  # background, text and lines, grey panel
_TITLE_PX, _PANEL_TITLE_PX, _TICK_PX = 16, 14, 12
_MARGIN, _GAP, _CBAR_PAD, _CBAR_W, _TICK_LEN, _LABEL_PAD = 10, 18, 8, 16, 4, 3
_TITLES = ("image", "image (could not be read)", "anomaly map (run-wide scale)",
           "overlay + ground truth (white contour)", "overlay (no defect in mask)", "overlay")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

def jet_lut(n: int = 256) -> np.ndarray:
    """The jet colormap as an ``(n, 3)`` uint8 table, low values first.

    Jet runs dark blue → blue → cyan → yellow → red → dark red, with its colour stops at
    eighths of the range (0, 1/8, 3/8, 5/8, 7/8, 1); each channel is a clipped "tent":
    red ``1.5 - |4x - 3|``, green ``1.5 - |4x - 2|``, blue ``1.5 - |4x - 1|``.
    """
    x = np.linspace(0.0, 1.0, n)[:, None]
    rgb = np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return np.rint(rgb * 255).astype(np.uint8)


_JET = jet_lut()


def _color_map(amap: np.ndarray, vmin: float, vmax: float) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` map → ``(H, W, 3)`` uint8 jet colours and the ``(H, W)`` finite mask.

    ``[vmin, vmax]`` is split into 256 equal bins (``vmax`` itself in the top one); values
    outside are clipped; non-finite values get colour index 0 and ``False`` in the mask.
    """
    finite = np.isfinite(amap)
    scaled = (np.where(finite, amap, vmin).astype(np.float64) - vmin) * (256.0 / (vmax - vmin))
    index = np.clip(scaled, 0, 255).astype(np.intp)
    return _JET[index], finite


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` dilated by ``steps`` pixels (3x3 square); outside the array counts as its
    nearest edge pixel, so a region touching the border is not outlined along it."""
    for _ in range(steps):
        p = np.pad(mask, 1, mode="edge")
        mask = (p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
                | p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:])
    return mask


def mask_outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """``(H, W)`` bool: the pixels within ``width`` of the mask's boundary, half of them
    inside the mask, half outside (a line ``width`` pixels wide along the edge)."""
    mask = np.asarray(mask, dtype=bool)
    outside = width // 2
    return _grow(mask, outside) & _grow(~mask, width - outside)


def _clean(text: str) -> str:
    """Text Pillow can draw on one line: lone surrogates and control characters as
    ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text_safe(text))


@functools.lru_cache(maxsize=4)
def _min_slot() -> int:
    """Width that every panel title fits in."""
    fnt = font(_PANEL_TITLE_PX)
    return math.ceil(max(fnt.getlength(t) for t in _TITLES)) + 4


def _rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 → ``(H, W, 3)``."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def overlay_picture(
    image: np.ndarray | None,
    amap: np.ndarray,
    mask: np.ndarray | None,
    vmin: float,
    vmax: float,
    title: str,
) -> np.ndarray:
    """The overlay of one image as an RGB picture.

    Args:
        image: ``(H, W, 3)`` uint8 (grey or RGBA also taken), or ``None`` for an image that
            could not be read (a grey panel, titled so).
        amap: ``(H, W)`` float anomaly map; non-finite pixels are left uncoloured.
        mask: ``(H, W)`` bool ground truth, or ``None`` (an unlabelled prediction). It is
            outlined only when it has a defect and is not all defect.
        vmin, vmax: the colour scale, ``vmin < vmax``.
        title: the picture's title line (shortened in the middle when too long).

    Returns:
        The picture, ``(height, width, 3)`` uint8 RGB: three panels of ``(H, W)`` (times a
        whole factor when small) side by side under their titles.
    """
    h, w = amap.shape
    scale = max(1, math.ceil(MIN_PANEL / max(h, w)))
    ph, pw = h * scale, w * scale

    def big(arr: np.ndarray) -> np.ndarray:
        return arr if scale == 1 else np.repeat(np.repeat(arr, scale, 0), scale, 1)

    shown = _rgb(image) if image is not None else np.full((h, w, 3), _UNREADABLE, np.uint8)
    colours, finite = _color_map(np.asarray(amap), vmin, vmax)
    heat = np.where(finite[:, :, None], colours, np.uint8(_WHITE))
    blend = shown.astype(np.float32) * (1 - ALPHA) + colours.astype(np.float32) * ALPHA
    blend = np.where(finite[:, :, None], np.rint(blend).astype(np.uint8), shown)
    shown, heat, blend = big(shown), big(heat), big(blend)
    titles = ["image" if image is not None else "image (could not be read)",
              "anomaly map (run-wide scale)"]
    if mask is not None and mask.any() and not mask.all():
        blend[mask_outline(big(np.asarray(mask, bool)), max(2, round(max(ph, pw) / 192)))] = (
            MASK_COLOUR)
        titles.append("overlay + ground truth (white contour)")
    else:
        titles.append("overlay" + (" (no defect in mask)" if mask is not None else ""))

    canvas, lefts, top = _frame(ph, pw, vmin, vmax, tuple(titles))
    canvas = canvas.copy()
    for left, panel in zip(lefts, (shown, heat, blend), strict=True):
        canvas[top:top + ph, left:left + pw] = panel
    title_font = font(_TITLE_PX)
    strip = Image.new("L", (canvas.shape[1], top - 1), _WHITE)
    ImageDraw.Draw(strip).text(
        (canvas.shape[1] / 2, _MARGIN), fit_text(_clean(title), title_font,
                                                 canvas.shape[1] - 2 * _MARGIN),
        fill=0, font=title_font, anchor="mt")
    canvas[:top - 1] = np.minimum(canvas[:top - 1], np.asarray(strip)[:, :, None])
    return canvas


@functools.lru_cache(maxsize=16)
def _frame(ph: int, pw: int, vmin: float, vmax: float,
           titles: tuple[str, str, str]) -> tuple[np.ndarray, list[int], int]:
    """What the overlays of one run share: the white canvas with the panel titles, the
    panels' outlines and the colorbar with its ticks (drawn once per run and panel
    titles), the panels' left edges and their top row."""
    tick_font, panel_font = font(_TICK_PX), font(_PANEL_TITLE_PX)
    ticks, step = nice_ticks(vmin, vmax)
    labels = [tick_text(t, step) for t in ticks]
    label_w = math.ceil(max((tick_font.getlength(t) for t in labels), default=0))

    slot = max(pw, _min_slot())
    x0 = _MARGIN
    x1 = x0 + slot + _GAP
    cbar_x = x1 + (slot + pw) // 2 + _CBAR_PAD
    label_x = cbar_x + _CBAR_W + _TICK_LEN + _LABEL_PAD
    x2 = max(x1 + slot, label_x + label_w) + _GAP
    width = x2 + slot + _MARGIN
    top = _MARGIN + round(_TITLE_PX * 1.25) + 8 + round(_PANEL_TITLE_PX * 1.25) + 4
    height = top + ph + max(_MARGIN, _TICK_PX)

    canvas = np.full((height, width, 3), _WHITE, np.uint8)
    rows = np.arange(ph - 1, -1, -1) / max(ph - 1, 1)  # top row: vmax's colour
    canvas[top:top + ph, cbar_x:cbar_x + _CBAR_W] = _JET[
        np.clip(rows * 256, 0, 255).astype(np.intp)][:, None]
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    lefts = [x + (slot - pw) // 2 for x in (x0, x1, x2)]
    for left, text in zip(lefts, titles, strict=True):
        draw.rectangle((left - 1, top - 1, left + pw, top + ph), outline=_INK)
        draw.text((left + pw / 2, top - 4), fit_text(text, panel_font, slot), fill=_INK,
                  font=panel_font, anchor="md")
    draw.rectangle((cbar_x - 1, top - 1, cbar_x + _CBAR_W, top + ph), outline=_INK)
    for value, label in zip(ticks, labels, strict=True):
        y = top + round((vmax - value) / (vmax - vmin) * (ph - 1))
        draw.line((cbar_x + _CBAR_W, y, cbar_x + _CBAR_W + _TICK_LEN - 1, y), fill=_INK)
        draw.text((label_x, y), label, fill=_INK, font=tick_font, anchor="lm")
    frame = np.asarray(picture)
    frame.flags.writeable = False
    return frame, lefts, top
