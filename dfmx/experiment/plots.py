"""The run's plots: the image-level ROC curve and the score histogram, as PNG files.

Inputs are plain arrays of one test set of ``N`` images: ``labels`` ``(N,)`` in ``{0, 1}``
(1 = anomalous) and ``scores`` ``(N,)``, higher = more anomalous. Plots use matplotlib's
object API (``Figure.savefig`` renders with Agg): no display, no pyplot state, and the
caller's backend is left alone. Every PNG is written atomically (:mod:`dfmx.atomic`).
:func:`save_figure` and :func:`message_figure` serve the sweep picture too; the overlays
are drawn without matplotlib (:mod:`dfmx.experiment.overlay_picture`).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from dfmx.atomic import atomic_path
from dfmx.experiment.labelled_scores import as_labels_scores
from dfmx.memo import Memo
from dfmx.metrics.ranking import Ranking

__all__ = ["message_figure", "plot_roc", "plot_score_histogram", "save_figure", "set_title"]

_NORMAL_COLOUR = "tab:blue"
_ANOMALOUS_COLOUR = "tab:red"


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically; returns ``path`` as a Path.

    zlib level 1: compressing the photo panels of an overlay at Pillow's default level 6
    takes as long as drawing the figure; level 1 is several times faster for slightly
    larger files.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return path


def set_title(ax: Any, text: str, **kwargs: Any) -> None:
    """An axes title at its usual place. With ``y`` given, matplotlib skips measuring the
    tick labels to see whether the title must move up (none of dfmx's plots has any on
    top), a sizeable part of drawing a small figure."""
    ax.set_title(text, y=1.0, **kwargs)


def message_figure(title: str, message: str) -> Figure:
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11,
            transform=ax.transAxes)
    return fig


def _counts(lab: np.ndarray) -> str:
    return f"{int((lab == 0).sum())} normal, {int((lab == 1).sum())} anomalous"


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
        fig = message_figure(
            "Image-level ROC",
            f"ROC undefined:\nthe test set needs both normal and anomalous images.\n"
            f"Got {_counts(lab)}.{note}",
        )
        return save_figure(fig, path)

    ranking = Ranking(lab == 1, sco)
    fpr, tpr = ranking.roc_curve()
    if auroc is None or not math.isfinite(float(auroc)):
        auroc = ranking.auroc()
    top = 0.9 if note else 0.93
    canvas = _ROC_CANVASES.get(top, lambda: _RocCanvas(top))
    return canvas.save(path, fpr, tpr, float(auroc), f"Image-level ROC — {_counts(lab)}{note}")


class _RocCanvas:
    """The ROC figure's unchanging parts (axes, ticks, labels, grid) drawn once per
    process; each plot restores that picture and draws only its curve, the chance line,
    the legend and the title on it (Agg blitting). The PNG is pixel for pixel the one a
    full draw gives (tested), in a fraction of the time: drawing the ticks and their
    labels is most of a full draw, paid by every job of a sweep.

    Args:
        top: the axes' top edge as a fraction of the figure (lower for a two-line title).
    """

    def __init__(self, top: float) -> None:
        # dpi given: the picture must not follow a changed rcParams["figure.dpi"].
        fig = Figure(figsize=(5.5, 5.2), dpi=100)
        # Fixed margins: constrained layout would measure every text once more.
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=top)
        ax = fig.add_subplot()
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (normals flagged)")
        ax.set_ylabel("True positive rate (anomalies found)")
        ax.grid(alpha=0.3)
        self.canvas = FigureCanvasAgg(fig)
        self.canvas.draw()
        self.ax = ax
        self.background = self.canvas.copy_from_bbox(fig.bbox)
        self.lock = threading.Lock()

    def save(self, path: str | Path, fpr: np.ndarray, tpr: np.ndarray, auroc: float,
             title: str) -> Path:
        """Write the ROC curve ``(fpr, tpr)`` as a PNG at ``path`` (atomically)."""
        ax = self.ax
        with self.lock:
            self.canvas.restore_region(self.background)
            curve, = ax.plot(fpr, tpr, color="tab:orange", lw=2,
                             label=f"ROC (AUROC = {auroc:.4f})")
            chance, = ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
            legend = ax.legend(loc="lower right")
            set_title(ax, title, fontsize=10)
            try:
                for artist in (curve, chance, legend, ax.title):
                    ax.draw_artist(artist)
                rgba = self.canvas.buffer_rgba()
                picture = Image.frombuffer("RGBA", self.canvas.get_width_height(), rgba,
                                           "raw", "RGBA", 0, 1)
                with atomic_path(path) as tmp:
                    picture.save(tmp, format="png", compress_level=1)
            finally:
                curve.remove()
                chance.remove()
                legend.remove()
                ax.set_title("")
        return Path(path)


#: One ROC canvas per title height, for the life of the process.
_ROC_CANVASES: Memo[_RocCanvas] = Memo(2)


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
        threshold: drawn as a vertical line (skipped when not finite); the legend gives
            each class's count and how many of it score ``>= threshold``.
        threshold_label: what the line is called in the legend (e.g. where it was set).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    lab, sco = as_labels_scores(labels, scores)
    finite = np.isfinite(sco)
    dropped = int((~finite).sum())
    note = f" ({dropped} non-finite left out)" if dropped else ""
    lab, sco = lab[finite], sco[finite]
    if sco.size == 0:
        fig = message_figure("Anomaly scores", f"No finite scores to plot.{note}")
        return save_figure(fig, path)

    thr = float(threshold)
    edges = np.histogram_bin_edges(sco, bins="auto")
    if len(edges) > 61:  # "auto" can pick thousands of bins for heavy tails
        edges = np.histogram_bin_edges(sco, bins=60)
    fig = Figure(figsize=(7, 4.5))
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.92)  # as in plot_roc
    ax = fig.add_subplot()
    for cls, name, colour in ((0, "normal", _NORMAL_COLOUR), (1, "anomalous", _ANOMALOUS_COLOUR)):
        s = sco[lab == cls]
        if s.size == 0:
            continue
        flagged = int((s >= thr).sum()) if math.isfinite(thr) else 0
        text = f"{name} (n={s.size}" + (f", {flagged} ≥ thr)" if math.isfinite(thr) else ")")
        counts, _ = np.histogram(s, bins=edges)
        # One filled path and one outline per class (ax.hist draws a patch per bar).
        ax.stairs(counts, edges, fill=True, color=colour, alpha=0.45, label=text)
        ax.stairs(counts, edges, color=colour, lw=1.2)
    if math.isfinite(thr):
        ax.axvline(thr, color="black", ls="--", lw=1.5, label=f"{threshold_label} = {thr:.4g}")
    ax.set_xlabel("Anomaly score (higher = more anomalous)")
    ax.set_ylabel("Number of images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    set_title(ax, f"Score distribution — {_counts(lab)}{note}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return save_figure(fig, path)

