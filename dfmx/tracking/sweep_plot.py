"""The sweep picture: every job of a sweep in one PNG, one row per job, its metrics as dots.

Drawn with numpy and Pillow (:mod:`dfmx.experiment.chart`), as a job's plots are: no
matplotlib is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dfmx.experiment.chart import (
    INK,
    Axes,
    Ticks,
    draw_frame,
    draw_grid,
    draw_title,
    message_picture,
    over_white,
    ticks,
)
from dfmx.experiment.drawing import fit_text, font, save_png
from dfmx.tracking.sweep_table import BEST_METRIC, rank_jobs

__all__ = ["SWEEP_METRICS", "SWEEP_ROWS", "plot_sweep", "sweep_rows"]


#: Metrics a sweep picture shows, when the jobs have them: key, legend, colour (RGB:
#: matplotlib's tab:purple, tab:blue, tab:orange, tab:green), marker.
SWEEP_METRICS = (
    ("val_synthetic_AUROC", "label-free val. synthetic AUROC", (148, 103, 189), "triangle"),
    ("image_AUROC", "image AUROC", (31, 119, 180), "circle"),
    ("pixel_AUROC", "pixel AUROC", (255, 127, 14), "square"),
    ("pixel_PRO", "pixel PRO", (44, 160, 44), "diamond"),
)
#: Rows in a sweep picture; a larger sweep shows its best jobs (and says so).
SWEEP_ROWS = 40
#: Picture width and height per row, in pixels.
WIDTH, ROW_PX = 1000, 32
_FAILED = (214, 39, 40)  # tab:red
_BEST_SHADE, _BEST_ALPHA = (255, 215, 0), 0.25  # gold
_TEXT_PX, _MARGIN, _DOT = 12, 8, 5
#: Pixels above the rows (title and legend lines) and below them (x ticks and label).
_ABOVE, _BELOW = 2 * _MARGIN + 2 * round(_TEXT_PX * 1.6), 60


def sweep_rows(
    metrics: Sequence[Mapping[str, float]],
    errors: Sequence[str | None],
    metric: str = BEST_METRIC,
) -> tuple[list[int], int | None]:
    """The jobs :func:`plot_sweep` shows, top to bottom, and the best one.

    The order and the best job of :func:`~dfmx.tracking.sweep_table.rank_jobs` (a job
    with an error has not finished), cut to :data:`SWEEP_ROWS` rows.
    """
    order, best = rank_jobs(metrics, [e is None for e in errors], metric)
    return order[:SWEEP_ROWS], best


def _marker(draw: ImageDraw.ImageDraw, x: float, y: float, shape: str,
            colour: tuple[int, int, int]) -> None:
    r = _DOT
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif shape == "square":
        draw.rectangle((x - r + 1, y - r + 1, x + r - 1, y + r - 1), fill=colour)
    elif shape == "diamond":
        draw.polygon([(x, y - r - 1), (x + r, y), (x, y + r + 1), (x - r, y)], fill=colour)
    else:
        draw.polygon([(x, y - r - 1), (x + r, y + r - 1), (x - r, y + r - 1)], fill=colour)


def plot_sweep(
    path: str | Path,
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, float]],
    errors: Sequence[str | None],
    metric: str = BEST_METRIC,
) -> Path:
    """Write a sweep at a glance as a PNG: one row per job, its metrics as dots.

    Jobs are sorted by ``metric``, best first (its row is shaded and its label drawn
    bold); failed jobs come last, their labels in red, with their error across the row.
    Beyond :data:`SWEEP_ROWS` jobs, the best are shown. :data:`WIDTH` pixels wide,
    :data:`ROW_PX` a row high plus the title, legend and axis.

    Args:
        path: output ``.png``.
        labels: ``J`` row labels (the job number and its overrides).
        metrics: ``J`` mappings of metric name to value (empty for a failed job); the
            :data:`SWEEP_METRICS` among them are drawn.
        errors: ``J`` one-line errors, ``None`` for a finished job.
        metric: the metric that ranks the jobs (higher is better); its value is written
            right of each row.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not len(labels) == len(metrics) == len(errors):
        raise ValueError(f"lengths differ: labels {len(labels)}, metrics {len(metrics)}, "
                         f"errors {len(errors)}")

    order, best = sweep_rows(metrics, errors, metric)
    metric_name = next((name for key, name, *_ in SWEEP_METRICS if key == metric), metric)
    n_failed = sum(e is not None for e in errors)
    shown = [entry for entry in SWEEP_METRICS
             if any(metrics[j].get(entry[0]) is not None for j in order)]
    values = [float(metrics[j][key]) for j in order for key, *_ in shown
              if metrics[j].get(key) is not None and math.isfinite(metrics[j][key])]
    if not values:
        title = (f"Sweep of {len(labels)} jobs: "
                 + (f"all {n_failed} failed" if n_failed == len(labels) else "no metrics to show"))
        return save_png(message_picture("Sweep", title + "\n(sweep_table.csv lists every job)"),
                        path)

    rows, text = len(order), font(_TEXT_PX)
    picture = Image.new("RGB", (WIDTH, _ABOVE + ROW_PX * rows + _BELOW), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    span = max(1.0 - min(values), 0.05)  # metrics lie in [0, 1]; at least 0.05 wide
    lo, hi = max(0.0, 1.0 - 1.08 * span), 1.0 + 0.02 * span
    xticks = ticks(lo, hi)
    label_px = min(WIDTH // 2, math.ceil(max(text.getlength(labels[j]) for j in order)) + 2)
    value_px = math.ceil(text.getlength("0.0000"))
    ax = Axes(2 * _MARGIN + label_px, _ABOVE, WIDTH - 1 - 2 * _MARGIN - value_px,
              _ABOVE + ROW_PX * rows, lo, hi, 0.0, float(rows))
    centre = [ax.top + (i + 0.5) * ROW_PX for i in range(rows)]  # the first row on top
    if best is not None:
        i = order.index(best)
        draw.rectangle((ax.left + 1, round(centre[i] - ROW_PX / 2), ax.right - 1,
                        round(centre[i] + ROW_PX / 2) - 1),
                       fill=over_white(_BEST_SHADE, _BEST_ALPHA))
    draw_grid(draw, ax, xticks, None)
    for key, _, colour, shape in shown:
        for i, j in enumerate(order):
            x = metrics[j].get(key)
            if x is not None and math.isfinite(x):
                _marker(draw, float(ax.col(float(x))), centre[i], shape, colour)
    draw_frame(picture, ax, xticks, Ticks([], []),
               "metric value (higher is better)", "")
    for i, j in enumerate(order):
        label = fit_text(labels[j], text, label_px)
        colour = _FAILED if errors[j] is not None else INK
        for dx in ((0, 1) if j == best else (0,)):  # drawn twice, a pixel apart: bold
            draw.text((ax.left - _MARGIN - dx, centre[i]), label, fill=colour, font=text,
                      anchor="rm")
        if errors[j] is not None:
            draw.text((ax.left + _MARGIN, centre[i]),
                      fit_text(f"failed: {errors[j]}", text, ax.right - ax.left - 2 * _MARGIN),
                      fill=_FAILED, font=text, anchor="lm")
        else:
            value = metrics[j].get(metric)
            draw.text((ax.right + _MARGIN, centre[i]), "n/a" if value is None
                      or not math.isfinite(value) else f"{value:.4f}", fill=INK, font=text,
                      anchor="lm")
    more = f"; the best {rows} shown" if rows < len(labels) else ""
    failed = f", {n_failed} failed" if n_failed else ""
    draw_title(draw, f"Sweep of {len(labels)} jobs{failed}, by {metric_name}{more}", WIDTH)
    x, y = ax.left, _ABOVE - _MARGIN - round(_TEXT_PX * 0.8)  # the legend, in a line
    for _, name, colour, shape in shown:
        _marker(draw, x + _DOT, y, shape, colour)
        draw.text((x + 3 * _DOT, y), name, fill=INK, font=text, anchor="lm")
        x += 3 * _DOT + math.ceil(text.getlength(name)) + 3 * _MARGIN
    return save_png(np.asarray(picture), path)
