"""The sweep picture: every job of a sweep in one PNG, one row per job, its metrics as dots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dfmx.atomic import atomic_path
from dfmx.experiment.chart import message_picture
from dfmx.experiment.drawing import save_png
from dfmx.tracking.sweep_table import BEST_METRIC, rank_jobs

__all__ = ["SWEEP_METRICS", "SWEEP_ROWS", "plot_sweep", "sweep_rows"]


#: Metrics a sweep picture shows, when the jobs have them: key, legend, colour, marker.
SWEEP_METRICS = (
    ("val_synthetic_AUROC", "label-free val. synthetic AUROC", "tab:purple", "^"),
    ("image_AUROC", "image AUROC", "tab:blue", "o"),
    ("pixel_AUROC", "pixel AUROC", "tab:orange", "s"),
    ("pixel_PRO", "pixel PRO", "tab:green", "D"),
)
#: Rows in a sweep picture; a larger sweep shows its best jobs (and says so).
SWEEP_ROWS = 40


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically, zlib level 1 (several times faster
    than Pillow's default level 6, for slightly larger files); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    return path


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


def plot_sweep(
    path: str | Path,
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, float]],
    errors: Sequence[str | None],
    metric: str = BEST_METRIC,
) -> Path:
    """Write a sweep at a glance as a PNG: one row per job, its metrics as dots.

    Jobs are sorted by ``metric``, best first (its row is shaded); failed jobs come last,
    in red, with their error. Beyond :data:`SWEEP_ROWS` jobs, the best are shown.

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
    shown = [(key, name, colour, marker) for key, name, colour, marker in SWEEP_METRICS
             if any(metrics[j].get(key) is not None for j in order)]
    values = [float(metrics[j][key]) for j in order for key, *_ in shown
              if metrics[j].get(key) is not None and math.isfinite(metrics[j][key])]
    if not values:
        title = (f"Sweep of {len(labels)} jobs: "
                 + (f"all {n_failed} failed" if n_failed == len(labels) else "no metrics to show"))
        return save_png(message_picture("Sweep", title + "\n(sweep_table.csv lists every job)"),
                        path)

    rows = len(order)
    width = 10.0
    fig = Figure(figsize=(width, 1.6 + 0.32 * rows))
    height = fig.get_figheight()
    # Room for the longest row label at 8 pt (bold: ~0.066 in a character), up to half.
    label_in = 0.4 + 0.066 * max(len(labels[j]) for j in order)
    fig.subplots_adjust(left=min(0.5, label_in / width), right=0.91, bottom=0.75 / height,
                        top=1 - 0.85 / height)
    ax = fig.add_subplot()
    y = np.arange(rows)[::-1]  # the first row at the top
    for row, j in zip(y, order, strict=True):
        if j == best:
            ax.axhspan(row - 0.5, row + 0.5, color="gold", alpha=0.25, lw=0)
    for key, name, colour, marker in shown:
        xs = [metrics[j].get(key) for j in order]
        keep = [x is not None and math.isfinite(x) for x in xs]
        ax.scatter([x for x, k in zip(xs, keep, strict=True) if k], y[np.array(keep)],
                   color=colour, marker=marker, s=28, label=name, zorder=3)
    span = max(1.0 - min(values), 0.05)  # metrics lie in [0, 1]; at least 0.05 wide
    ax.set_xlim(max(0.0, 1.0 - 1.08 * span), 1.0 + 0.02 * span)
    ax.ticklabel_format(axis="x", useOffset=False)
    ax.set_ylim(-0.6, rows - 0.4)
    ax.set_yticks(y, [labels[j] for j in order], fontsize=8)
    for tick, j in zip(ax.get_yticklabels(), order, strict=True):
        if errors[j] is not None:
            tick.set_color("tab:red")
        elif j == best:
            tick.set_fontweight("bold")
    # The ranking metric in words right of each row; a failed job's error across its row.
    for row, j in zip(y, order, strict=True):
        if errors[j] is not None:
            ax.text(0.01, row, f"failed: {errors[j]}"[:100], transform=ax.get_yaxis_transform(),
                    va="center", fontsize=8, color="tab:red")
        else:
            value = metrics[j].get(metric)
            ax.text(1.01, row, "n/a" if value is None or not math.isfinite(value)
                    else f"{value:.4f}", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=8, clip_on=False)
    ax.grid(alpha=0.3, axis="x")
    ax.set_xlabel("metric value (higher is better)")
    more = f"; the best {rows} shown" if rows < len(labels) else ""
    failed = f", {n_failed} failed" if n_failed else ""
    fig.text(0.5, 1 - 0.2 / height, f"Sweep of {len(labels)} jobs{failed}, by {metric_name}"
             f"{more}", ha="center", va="top", fontsize=11)
    ax.legend(loc="lower left", fontsize=8, bbox_to_anchor=(0.0, 1.0), ncols=len(shown),
              frameon=False, borderaxespad=0.3)
    return _save(fig, path)

