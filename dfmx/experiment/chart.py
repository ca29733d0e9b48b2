"""A chart's frame drawn with Pillow: the axes' data-to-pixel mapping, grid, box, ticks and
their labels, axis labels, title, legend box, dashed lines, and a picture that only says
something (a chart that cannot be drawn).

Pictures are ``(H, W, 3)`` uint8 RGB arrays or the :class:`PIL.Image.Image` drawn on; text
is set with :func:`~dfmx.experiment.drawing.font`. No matplotlib is imported. A
chart is drawn in this order: :func:`draw_grid`, the data, :func:`draw_frame`,
:func:`draw_legend`, :func:`draw_title`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from dfmx.experiment.drawing import fit_text, font, nice_ticks, tick_text

__all__ = ["INK", "Axes", "LegendEntry", "Ticks", "axes_box", "blend", "dashed_line",
           "draw_frame", "draw_grid", "draw_legend", "draw_title", "legend_size",
           "message_picture", "over_white", "ticks"]

#: Colour (RGB) of text, the axes' box and ticks.
INK = (0, 0, 0)
_GRID = (232, 232, 232)  # black at 30 % of a light grey line, on white
_LEGEND_EDGE = (204, 204, 204)
_TITLE_PX, _LABEL_PX, _TICK_PX, _LEGEND_PX, _MESSAGE_PX = 14, 13, 12, 12, 14
_MARGIN, _TICK_LEN, _TICK_PAD, _LABEL_PAD = 8, 4, 3, 6
_LEGEND_PAD, _LEGEND_KEY, _LEGEND_GAP = 6, 26, 6


@dataclass(frozen=True)
class Ticks:
    """Tick positions in data units and their labels."""

    values: list[float]
    labels: list[str]


def ticks(lo: float, hi: float, integer: bool = False, most: int = 6) -> Ticks:
    """Round tick values in ``[lo, hi]`` (:func:`nice_ticks`) and their labels; with
    ``integer``, whole numbers only."""
    values, step = nice_ticks(lo, hi, most)
    if integer and step < 1:
        values, step = [float(v) for v in range(math.ceil(lo), math.floor(hi) + 1)], 1.0
    return Ticks(values, [tick_text(v, step) for v in values])


@dataclass(frozen=True)
class Axes:
    """Where the axes lie in the picture and what they show.

    ``left``/``right`` are the pixel columns and ``top``/``bottom`` the pixel rows of the
    box's lines; data ``x0`` maps to column ``left``, ``x1`` to ``right``, ``y0`` to row
    ``bottom`` and ``y1`` to row ``top``, linearly between.
    """

    left: int
    top: int
    right: int
    bottom: int
    x0: float
    x1: float
    y0: float
    y1: float

    def col(self, x: float | np.ndarray) -> float | np.ndarray:
        """Pixel column (fractional) of data ``x``."""
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def row(self, y: float | np.ndarray) -> float | np.ndarray:
        """Pixel row (fractional) of data ``y``."""
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def points(self, xs: np.ndarray, ys: np.ndarray) -> list[tuple[float, float]]:
        """``(N,)`` data coordinates as ``N`` pixel points for :meth:`ImageDraw.line`."""
        return list(zip(np.asarray(self.col(np.asarray(xs, float))).tolist(),
                        np.asarray(self.row(np.asarray(ys, float))).tolist(), strict=True))


def _line_px(size: int) -> int:
    return round(size * 1.25)


def _width(labels: Sequence[str], size: int) -> int:
    fnt = font(size)
    return math.ceil(max((fnt.getlength(t) for t in labels), default=0))


def axes_box(size: tuple[int, int], title_lines: int, xticks: Ticks,
             yticks: Ticks) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the axes in a ``size`` = ``(W, H)`` picture: room
    above for ``title_lines`` lines of title, left for the y tick labels and the rotated y
    axis label, below for the x tick labels and the x axis label."""
    width, height = size
    left = (_MARGIN + _line_px(_LABEL_PX) + _LABEL_PAD + _width(yticks.labels, _TICK_PX)
            + _TICK_PAD + _TICK_LEN)
    top = _MARGIN + title_lines * _line_px(_TITLE_PX) + _MARGIN
    right = width - 1 - max(_MARGIN + 4, _width(xticks.labels[-1:], _TICK_PX) // 2 + 2)
    bottom = (height - 1 - _MARGIN - _line_px(_LABEL_PX) - _LABEL_PAD - _line_px(_TICK_PX)
              - _TICK_PAD - _TICK_LEN)
    return left, top, right, bottom


def draw_grid(draw: ImageDraw.ImageDraw, ax: Axes, xticks: Ticks | None,
              yticks: Ticks | None) -> None:
    """Light grid lines at the given ticks (``None``: none along that axis)."""
    for value in xticks.values if xticks else []:
        x = round(ax.col(value))
        draw.line((x, ax.top, x, ax.bottom), fill=_GRID)
    for value in yticks.values if yticks else []:
        y = round(ax.row(value))
        draw.line((ax.left, y, ax.right, y), fill=_GRID)


def draw_frame(picture: Image.Image, ax: Axes, xticks: Ticks, yticks: Ticks, xlabel: str,
               ylabel: str) -> None:
    """The axes' box, outward ticks with their labels, and the two axis labels (the y
    label turned a quarter anticlockwise, centred on the axes' height)."""
    draw = ImageDraw.Draw(picture)
    draw.rectangle((ax.left, ax.top, ax.right, ax.bottom), outline=INK)
    tick_font, label_font = font(_TICK_PX), font(_LABEL_PX)
    for value, label in zip(xticks.values, xticks.labels, strict=True):
        x = round(ax.col(value))
        draw.line((x, ax.bottom, x, ax.bottom + _TICK_LEN), fill=INK)
        draw.text((x, ax.bottom + _TICK_LEN + _TICK_PAD), label, fill=INK, font=tick_font,
                  anchor="mt")
    for value, label in zip(yticks.values, yticks.labels, strict=True):
        y = round(ax.row(value))
        draw.line((ax.left - _TICK_LEN, y, ax.left, y), fill=INK)
        draw.text((ax.left - _TICK_LEN - _TICK_PAD, y), label, fill=INK, font=tick_font,
                  anchor="rm")
    x_label_top = ax.bottom + _TICK_LEN + _TICK_PAD + _line_px(_TICK_PX) + _LABEL_PAD
    draw.text(((ax.left + ax.right) / 2, x_label_top),
              fit_text(xlabel, label_font, picture.width - 2 * _MARGIN), fill=INK,
              font=label_font, anchor="mt")
    text = fit_text(ylabel, label_font, picture.height - 2 * _MARGIN)
    strip = Image.new("L", (math.ceil(label_font.getlength(text)) + 2, _line_px(_LABEL_PX)), 0)
    ImageDraw.Draw(strip).text((1, 0), text, fill=255, font=label_font)
    turned = strip.rotate(90, expand=True)
    y = round((ax.top + ax.bottom) / 2 - turned.height / 2)
    picture.paste(INK, (_MARGIN, max(0, y)), turned)


def draw_title(draw: ImageDraw.ImageDraw, text: str, width: int) -> None:
    """The title's lines, centred at the top of a ``width``-pixel picture (each line
    shortened in the middle when too long)."""
    title_font = font(_TITLE_PX)
    for i, line in enumerate(text.split("\n")):
        draw.text((width / 2, _MARGIN + i * _line_px(_TITLE_PX)),
                  fit_text(line, title_font, width - 2 * _MARGIN), fill=INK, font=title_font,
                  anchor="mt")


@dataclass(frozen=True)
class LegendEntry:
    """One legend line: its key (``"line"``, ``"dashed"`` or ``"patch"``: a filled box in
    ``fill`` outlined in ``colour``) and its text."""

    text: str
    colour: tuple[int, int, int]
    style: str = "line"
    fill: tuple[int, int, int] | None = None


def legend_size(entries: Sequence[LegendEntry]) -> tuple[int, int]:
    """``(width, height)`` of the legend box of ``entries``."""
    line = _line_px(_LEGEND_PX)
    return (2 * _LEGEND_PAD + _LEGEND_KEY + _LEGEND_GAP + _width([e.text for e in entries],
                                                                _LEGEND_PX),
            2 * _LEGEND_PAD + line * len(entries))


def draw_legend(draw: ImageDraw.ImageDraw, entries: Sequence[LegendEntry],
                corner: tuple[int, int]) -> tuple[int, int, int, int]:
    """The legend box with its top-left corner at pixel ``corner``; returns the box
    ``(left, top, right, bottom)``."""
    w, h = legend_size(entries)
    left, top = corner
    box = (left, top, left + w - 1, top + h - 1)
    draw.rectangle(box, fill=(255, 255, 255), outline=_LEGEND_EDGE)
    line, legend_font = _line_px(_LEGEND_PX), font(_LEGEND_PX)
    for i, entry in enumerate(entries):
        y = top + _LEGEND_PAD + i * line + line / 2
        x0, x1 = left + _LEGEND_PAD, left + _LEGEND_PAD + _LEGEND_KEY
        if entry.style == "patch":
            draw.rectangle((x0, round(y - line / 3), x1, round(y + line / 3)),
                           fill=entry.fill or entry.colour, outline=entry.colour)
        elif entry.style == "dashed":
            dashed_line(draw, (x0, y), (x1, y), entry.colour, width=2)
        else:
            draw.line((x0, y, x1, y), fill=entry.colour, width=2)
        draw.text((x1 + _LEGEND_GAP, y), entry.text, fill=INK, font=legend_font, anchor="lm")
    return box


def dashed_line(draw: ImageDraw.ImageDraw, start: tuple[float, float],
                end: tuple[float, float], fill: tuple[int, int, int], width: int = 1,
                dash: float = 6.0, gap: float = 4.0) -> None:
    """A straight dashed line from ``start`` to ``end`` (pixels): ``dash`` on, ``gap``
    off, beginning with a dash."""
    (xa, ya), (xb, yb) = start, end
    length = math.hypot(xb - xa, yb - ya)
    if length == 0:
        return
    ux, uy = (xb - xa) / length, (yb - ya) / length
    s = 0.0
    while s < length:
        t = min(s + dash, length)
        draw.line((xa + ux * s, ya + uy * s, xa + ux * t, ya + uy * t), fill=fill, width=width)
        s += dash + gap


def blend(canvas: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int],
          alpha: float) -> None:
    """Paint ``colour`` at opacity ``alpha`` over the ``(H, W, 3)`` uint8 ``canvas`` in the
    pixel box ``(left, top, right, bottom)``, right and bottom excluded (in place)."""
    left, top, right, bottom = box
    region = canvas[top:bottom, left:right]
    over = region * np.float32(1 - alpha) + np.float32(alpha) * np.array(colour, np.float32)
    region[...] = np.rint(over).astype(np.uint8)


def over_white(colour: tuple[int, int, int], alpha: float) -> tuple[int, int, int]:
    """``colour`` at opacity ``alpha`` over white: what :func:`blend` paints on a white
    canvas, as one colour."""
    return tuple(round(255 * (1 - alpha) + c * alpha) for c in colour)  # type: ignore[return-value]


def message_picture(title: str, message: str, size: tuple[int, int] = (550, 500)) -> np.ndarray:
    """A ``size`` = ``(W, H)`` white picture with ``title`` at the top and ``message``
    centred below it (its lines wrapped to the width); ``(H, W, 3)`` uint8."""
    width, height = size
    picture = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    draw_title(draw, title, width)
    fnt = font(_MESSAGE_PX)
    chars = max(10, int((width - 4 * _MARGIN) / (0.55 * _MESSAGE_PX)))
    lines = [wrapped for line in message.split("\n")
             for wrapped in (textwrap.wrap(line, chars) or [""])]
    step = _line_px(_MESSAGE_PX)
    y0 = height / 2 - step * len(lines) / 2
    for i, line in enumerate(lines):
        draw.text((width / 2, y0 + i * step), fit_text(line, fnt, width - 2 * _MARGIN),
                  fill=INK, font=fnt, anchor="mt")
    return np.asarray(picture)
