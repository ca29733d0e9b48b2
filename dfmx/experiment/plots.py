"""The run's plots: the image-level ROC curve and the score histogram, as PNG files.

Inputs are plain arrays of one test set of ``N`` images: ``labels`` ``(N,)`` in ``{0, 1}``
(1 = anomalous) and ``scores`` ``(N,)``, higher = more anomalous. The plots are drawn with
numpy and Pillow (:mod:`dfmx.experiment.chart`) and written atomically by
:func:`~dfmx.experiment.drawing.save_png`; no matplotlib is imported.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dfmx.experiment.chart import (
    Axes,
    LegendEntry,
    Ticks,
    axes_box,
    blend,
    dashed_line,
    draw_frame,
    draw_grid,
    draw_legend,
    draw_title,
    legend_size,
    message_picture,
    over_white,
    ticks,
)
from dfmx.experiment.drawing import save_png
from dfmx.experiment.labelled_scores import as_labels_scores
from dfmx.metrics.ranking import Ranking

__all__ = ["ANOMALOUS_COLOUR", "CHANCE_COLOUR", "HISTOGRAM_SIZE", "NORMAL_COLOUR",
           "ROC_COLOUR", "ROC_SIZE", "THRESHOLD_COLOUR", "histogram_axes", "plot_roc",
           "plot_score_histogram", "roc_axes"]

#: Colours (RGB): matplotlib's tab:blue, tab:red and tab:orange, grey and black.
NORMAL_COLOUR = (31, 119, 180)
ANOMALOUS_COLOUR = (214, 39, 40)
ROC_COLOUR = (255, 127, 14)
CHANCE_COLOUR = (128, 128, 128)
THRESHOLD_COLOUR = (0, 0, 0)
#: Picture sizes ``(W, H)`` in pixels.
ROC_SIZE = (550, 520)
HISTOGRAM_SIZE = (700, 450)
#: Opacity of a histogram's filled bars (the two classes overlap).
FILL_ALPHA = 0.45

_ROC_TICKS = ticks(0.0, 1.0)
_ROC_LIMITS = (-0.01, 1.01)


def _counts(lab: np.ndarray) -> str:
    return f"{int((lab == 0).sum())} normal, {int((lab == 1).sum())} anomalous"


def _canvas(size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, (255, 255, 255))


def roc_axes(title_lines: int = 1) -> Axes:
    """The ROC plot's axes: ``[-0.01, 1.01]`` on both, square, under ``title_lines`` lines
    of title, centred in the free width."""
    left, top, right, bottom = axes_box(ROC_SIZE, title_lines, _ROC_TICKS, _ROC_TICKS)
    side = min(right - left, bottom - top)
    left += (right - left - side) // 2
    return Axes(left, bottom - side, left + side, bottom, *_ROC_LIMITS, *_ROC_LIMITS)


def plot_roc(
    path: str | Path,
    labels: np.ndarray,
    scores: np.ndarray,
    auroc: float | None = None,
) -> Path:
    """Write the image-level ROC curve as a PNG.

    Args:
        path: output ``.png``.
        labels: ``(N,)`` in ``{0, 1}``.
        scores: ``(N,)``; non-finite scores are left out (and the count noted).
        auroc: value for the legend; computed when ``None`` or NaN.

    A test set with a single class (or no finite scores) gets a PNG saying the ROC is
    undefined instead of an exception.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    lab, sco = as_labels_scores(labels, scores)
    finite = np.isfinite(sco)
    dropped = int((~finite).sum())
    lab, sco = lab[finite], sco[finite]
    note = f"\n({dropped} non-finite scores left out)" if dropped else ""
    if len(np.unique(lab)) < 2:
        return save_png(message_picture(
            "Image-level ROC",
            f"ROC undefined:\nthe test set needs both normal and anomalous images.\n"
            f"Got {_counts(lab)}.{note}", ROC_SIZE), path)

    ranking = Ranking(lab == 1, sco)
    fpr, tpr = ranking.roc_curve()
    if auroc is None or not math.isfinite(float(auroc)):
        auroc = ranking.auroc()
    title = f"Image-level ROC — {_counts(lab)}{note}"
    ax = roc_axes(title.count("\n") + 1)
    picture = _canvas(ROC_SIZE)
    draw = ImageDraw.Draw(picture)
    draw_grid(draw, ax, _ROC_TICKS, _ROC_TICKS)
    dashed_line(draw, (ax.col(0.0), ax.row(0.0)), (ax.col(1.0), ax.row(1.0)), CHANCE_COLOUR)
    draw.line(ax.points(fpr, tpr), fill=ROC_COLOUR, width=2, joint="curve")
    draw_frame(picture, ax, _ROC_TICKS, _ROC_TICKS, "False positive rate (normals flagged)",
               "True positive rate (anomalies found)")
    entries = [LegendEntry(f"ROC (AUROC = {float(auroc):.4f})", ROC_COLOUR),
               LegendEntry("chance", CHANCE_COLOUR, "dashed")]
    w, h = legend_size(entries)
    draw_legend(draw, entries, (ax.right - 8 - w, ax.bottom - 8 - h))  # lower right
    draw_title(draw, title, ROC_SIZE[0])
    return save_png(np.asarray(picture), path)


def _edges(sco: np.ndarray) -> np.ndarray:
    """The histogram's shared bin edges ``(B + 1,)``: numpy's "auto", at most 60 bins."""
    edges = np.histogram_bin_edges(sco, bins="auto")
    if len(edges) > 61:  # "auto" can pick thousands of bins for heavy tails
        edges = np.histogram_bin_edges(sco, bins=60)
    return edges


def histogram_axes(edges: np.ndarray, threshold: float, top_count: int,
                   title_lines: int = 1) -> tuple[Axes, Ticks, Ticks]:
    """The histogram's axes and ticks: x spans the bins (and a finite ``threshold``) with
    5 % to spare each side; y runs from 0 to ``top_count`` and 5 % more."""
    lo, hi = float(edges[0]), float(edges[-1])
    if math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    x0, x1 = lo - pad, hi + pad
    y1 = max(1, top_count) * 1.05
    xticks, yticks = ticks(x0, x1), ticks(0.0, y1, integer=True)
    box = axes_box(HISTOGRAM_SIZE, title_lines, xticks, yticks)
    return Axes(*box, x0, x1, 0.0, y1), xticks, yticks


def plot_score_histogram(
    path: str | Path,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    threshold_label: str = "threshold",
) -> Path:
    """Write overlaid histograms of normal vs anomalous scores (shared bins) as a PNG.

    Args:
        path: output ``.png``.
        labels: ``(N,)`` in ``{0, 1}``.
        scores: ``(N,)``; non-finite scores are left out (and the count noted).
        threshold: drawn as a vertical dashed line (skipped when not finite); the legend
            gives each class's count and how many of it score ``>= threshold``.
        threshold_label: what the line is called in the legend (e.g. where it was set).

    Each class's bars are filled in its colour at :data:`FILL_ALPHA` (normal first, so
    where both classes have images the colours mix) and outlined in it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    lab, sco = as_labels_scores(labels, scores)
    finite = np.isfinite(sco)
    dropped = int((~finite).sum())
    note = f" ({dropped} non-finite left out)" if dropped else ""
    lab, sco = lab[finite], sco[finite]
    if sco.size == 0:
        return save_png(message_picture("Anomaly scores", f"No finite scores to plot.{note}",
                                        HISTOGRAM_SIZE), path)

    thr = float(threshold)
    edges = _edges(sco)
    classes = []
    for cls, name, colour in ((0, "normal", NORMAL_COLOUR), (1, "anomalous", ANOMALOUS_COLOUR)):
        s = sco[lab == cls]
        if s.size:
            counts, _ = np.histogram(s, bins=edges)
            flagged = f", {int((s >= thr).sum())} ≥ thr" if math.isfinite(thr) else ""
            classes.append((counts, f"{name} (n={s.size}{flagged})", colour))
    ax, xticks, yticks = histogram_axes(edges, thr, max(int(c.max()) for c, *_ in classes))

    picture = _canvas(HISTOGRAM_SIZE)
    draw = ImageDraw.Draw(picture)
    draw_grid(draw, ax, None, yticks)
    canvas = np.array(picture)
    bar_cols = np.round(ax.col(edges)).astype(int)
    bars = []
    for counts, _, colour in classes:
        # A bar's box spans its bin's columns, the right edge left to the next bar (but
        # the last), from its count's row down to the axis.
        boxes = [(int(a), round(ax.row(float(count))), int(b) + (i == len(counts) - 1),
                  ax.bottom) for i, (count, a, b) in enumerate(
                      zip(counts, bar_cols[:-1], bar_cols[1:], strict=True)) if count]
        for box in boxes:
            blend(canvas, box, colour, FILL_ALPHA)
        bars += boxes
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for counts, _, colour in classes:
        # The outline: steps along the bars' tops, down to the axis at both ends.
        ys = np.asarray(ax.row(np.r_[0.0, np.repeat(counts, 2).astype(float), 0.0]))
        xs = np.repeat(bar_cols, 2).astype(float)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=1)
    entries = [LegendEntry(text, colour, "patch", over_white(colour, FILL_ALPHA))
               for _, text, colour in classes]
    if math.isfinite(thr):
        x = ax.col(thr)
        dashed_line(draw, (x, ax.top), (x, ax.bottom), THRESHOLD_COLOUR, width=2)
        entries.append(LegendEntry(f"{threshold_label} = {thr:.4g}", THRESHOLD_COLOUR,
                                   "dashed"))
    draw_frame(picture, ax, xticks, yticks, "Anomaly score (higher = more anomalous)",
               "Number of images")
    draw_legend(draw, entries, _legend_corner(ax, legend_size(entries), bars,
                                              ax.col(thr) if math.isfinite(thr) else None))
    draw_title(draw, f"Score distribution — {_counts(lab)}{note}", HISTOGRAM_SIZE[0])
    return save_png(np.asarray(picture), path)


def _legend_corner(ax: Axes, size: tuple[int, int], bars: list[tuple[int, int, int, int]],
                   line_x: float | None) -> tuple[int, int]:
    """Top-left pixel of the legend: the upper corner of the axes (right first) where it
    hides the least bar area and, at a tie, does not cross the threshold line."""
    w, h = size
    best: tuple[tuple[int, bool], tuple[int, int]] | None = None
    for left in (ax.right - 8 - w, ax.left + 8):
        top = ax.top + 8
        hidden = sum(max(0, min(r, left + w) - max(a, left)) * max(0, min(b, top + h) - max(t, top))
                     for a, t, r, b in bars)
        crosses = line_x is not None and left <= line_x <= left + w
        if best is None or (hidden, crosses) < best[0]:
            best = ((hidden, crosses), (left, top))
    assert best is not None
    return best[1]
