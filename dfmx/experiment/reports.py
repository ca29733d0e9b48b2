"""Files a researcher looks at after one run: predictions CSV, metrics JSON, plots, overlays.

Inputs are plain arrays of one test set of ``N`` images:

* ``paths``: ``N`` image file paths; ``defect_types``: ``N`` strings.
* ``labels``: ``(N,)`` int in ``{0, 1}`` (1 = anomalous).
* ``scores``: ``(N,)`` float, higher = more anomalous; the prediction is ``score >= threshold``.
* ``maps``: ``(N, H, W)`` float anomaly maps at image size, or ``None`` (image-only scorer).
* ``masks``: ``(N, H, W)`` bool ground-truth defect masks, or ``None``.

Every file is written atomically (a temporary file in the target folder, then
:func:`os.replace`), so a killed job never leaves a half-written file behind.
Plots use matplotlib's object API (``Figure.savefig`` renders with Agg): no display, no
pyplot state, and the caller's backend is left alone.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from dfmx.data.path_text import path_text
from dfmx.memo import Memo
from dfmx.metrics.ranking import Ranking

__all__ = [
    "plot_roc",
    "plot_score_histogram",
    "plot_sweep",
    "summary_table",
    "write_metrics_json",
    "write_overlays",
    "write_predictions_csv",
]

UNDEFINED = "n/a (undefined)"
HEATMAP_CMAP = "jet"
MASK_COLOUR = "white"
_NORMAL_COLOUR = "tab:blue"
_ANOMALOUS_COLOUR = "tab:red"


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def _atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _atomic_text(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """Open a text file for writing that appears at ``path`` only when complete."""
    with _atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as fh:
        yield fh


def _save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically.

    zlib level 1: an overlay's photo panels took 0.1-0.2 s to compress at Pillow's
    default level 6, as long as drawing the figure; level 1 is 3-5x faster for files
    about a fifth larger.
    """
    path = Path(path)
    with _atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return path


def _title(ax: Any, text: str, **kwargs: Any) -> None:
    """An axes title at its usual place. With ``y`` given, matplotlib skips measuring the
    tick labels to see whether the title must move up (none of these plots has any on
    top): ~45 ms a figure."""
    ax.set_title(text, y=1.0, **kwargs)


# --------------------------------------------------------------------------- validation


def _as_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as int ``(N,)`` and ``scores`` as float64 ``(N,)``; same length checked."""
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    sco = np.asarray(scores, dtype=np.float64).reshape(-1)
    if lab.shape != sco.shape:
        raise ValueError(f"labels {lab.shape} and scores {sco.shape} differ in length")
    bad = ~np.isin(lab, (0, 1))
    if bad.any():
        raise ValueError(f"labels must be 0 or 1, got {np.unique(lab[bad]).tolist()}")
    return lab, sco


# --------------------------------------------------------------------------- CSV / JSON


def write_predictions_csv(
    path: str | Path,
    paths: Sequence[str | Path],
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    defect_types: Sequence[str],
) -> Path:
    """Write one row per test image: ``path,defect_type,label,score,prediction``.

    Args:
        path: output ``.csv`` file.
        paths: ``N`` image paths.
        labels: ``(N,)`` ground truth in ``{0, 1}``.
        scores: ``(N,)`` anomaly scores, written with full (round-trip) precision.
        threshold: ``prediction = int(score >= threshold)`` (a NaN score predicts 0).
        defect_types: ``N`` defect type names (``good`` for normals in MVTec).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    lab, sco = _as_labels_scores(labels, scores)
    if not len(paths) == len(defect_types) == len(lab):
        raise ValueError(
            f"lengths differ: paths {len(paths)}, defect_types {len(defect_types)}, "
            f"labels/scores {len(lab)}"
        )
    thr = float(threshold)
    with _atomic_text(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "defect_type", "label", "score", "prediction"])
        for p, d, y, s in zip(paths, defect_types, lab, sco, strict=True):
            writer.writerow([str(p), str(d), int(y), repr(float(s)), int(bool(s >= thr))])
    return Path(path)


def _jsonable(value: Any) -> Any:
    """``value`` with NaN/inf → ``None``, numpy scalars/arrays → Python, paths → str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors and the like
        return _jsonable(value.item())
    return value


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` as strict JSON: sorted keys, 2-space indent, NaN/±inf as ``null``.

    Nested mappings and lists are allowed; numpy scalars and arrays are converted.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    text = json.dumps(_jsonable(metrics), sort_keys=True, indent=2, allow_nan=False)
    with _atomic_text(path) as fh:
        fh.write(text + "\n")
    return Path(path)


# --------------------------------------------------------------------------- summary table


def _format_value(key: str, value: Any) -> str:
    """One table cell: NaN → ``n/a (undefined)``, ``time_*`` in seconds, floats to 4 dp."""
    if value is None:
        return UNDEFINED
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            return UNDEFINED if math.isnan(f) else str(f)
        if key.startswith("time_") or (key.endswith("_s") and not key.endswith("per_s")):
            return f"{f:.3f} s"
        if key.endswith("per_s"):
            return f"{f:.1f} /s"
        if f.is_integer() and (key.startswith("n_") or key.endswith(("_dim", "_components"))):
            return str(int(f))
        if f != 0.0 and abs(f) < 1e-3:
            return f"{f:.4e}"
        return f"{f:.4f}"
    return str(value)


def summary_table(
    metrics: Mapping[str, float],
    extra: Mapping[str, str | float] | None = None,
    *,
    ascii_only: bool = False,
) -> str:
    """Render an aligned two-column text table: ``extra`` rows first, then ``metrics``.

    NaN shows as ``n/a (undefined)``; floats have 4 decimals; ``time_*`` keys are shown in
    seconds; keys ``n_*``, ``*_dim``, ``*_components`` holding whole numbers as integers.

    Args:
        metrics: metric name → value, shown in the given order.
        extra: run description (backbone, scorer, images/s, …), shown above the metrics.
        ascii_only: use ``+-|`` instead of box-drawing characters.

    Returns:
        The table as one string (no trailing newline).
    """
    sections: list[list[tuple[str, str]]] = []
    if extra:
        sections.append([(str(k), _format_value(str(k), v)) for k, v in extra.items()])
    sections.append([(str(k), _format_value(str(k), v)) for k, v in metrics.items()])
    rows = [r for s in sections for r in s]
    w_key = max([len("metric"), *(len(k) for k, _ in rows)])
    w_val = max([len("value"), *(len(v) for _, v in rows)])
    if ascii_only:
        h, v, top, mid, bot = "-", "|", ("+", "+", "+"), ("+", "+", "+"), ("+", "+", "+")
    else:
        h, v, top, mid, bot = "─", "│", ("┌", "┬", "┐"), ("├", "┼", "┤"), ("└", "┴", "┘")

    def rule(corners: tuple[str, str, str]) -> str:
        return f"{corners[0]}{h * (w_key + 2)}{corners[1]}{h * (w_val + 2)}{corners[2]}"

    def line(key: str, val: str) -> str:
        return f"{v} {key:<{w_key}} {v} {val:>{w_val}} {v}"

    out = [rule(top), line("metric", "value")]
    for section in sections:
        out.append(rule(mid))
        out.extend(line(k, val) for k, val in section)
    out.append(rule(bot))
    return "\n".join(out)


# --------------------------------------------------------------------------- ROC / histogram


def _message_figure(title: str, message: str) -> Figure:
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
    lab, sco = _as_labels_scores(labels, scores)
    finite = np.isfinite(sco)
    dropped = int((~finite).sum())
    lab, sco = lab[finite], sco[finite]
    note = f"\n({dropped} non-finite scores left out)" if dropped else ""
    if len(np.unique(lab)) < 2:
        fig = _message_figure(
            "Image-level ROC",
            f"ROC undefined:\nthe test set needs both normal and anomalous images.\n"
            f"Got {_counts(lab)}.{note}",
        )
        return _save_figure(fig, path)

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
    full draw gives (tested), in a third of the time: drawing the ticks and their labels
    was 44 of ~60 ms, paid by every job of a sweep.

    Args:
        top: the axes' top edge as a fraction of the figure (lower for a two-line title).
    """

    def __init__(self, top: float) -> None:
        # dpi given: the picture must not follow a changed rcParams["figure.dpi"].
        fig = Figure(figsize=(5.5, 5.2), dpi=100)
        # Fixed margins: constrained layout measured every text once more (35% of the time).
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
            _title(ax, title, fontsize=10)
            try:
                for artist in (curve, chance, legend, ax.title):
                    ax.draw_artist(artist)
                rgba = self.canvas.buffer_rgba()
                picture = Image.frombuffer("RGBA", self.canvas.get_width_height(), rgba,
                                           "raw", "RGBA", 0, 1)
                with _atomic_path(path) as tmp:
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
) -> Path:
    """Write overlaid histograms of normal vs anomalous scores (shared bins) as a PNG.

    Args:
        path: output ``.png``.
        labels: ``(N,)`` in ``{0, 1}``.
        scores: ``(N,)``; non-finite scores are left out (and the count noted).
        threshold: drawn as a vertical line (skipped when not finite); the legend gives
            each class's count and how many of it score ``>= threshold``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    lab, sco = _as_labels_scores(labels, scores)
    finite = np.isfinite(sco)
    dropped = int((~finite).sum())
    note = f" ({dropped} non-finite left out)" if dropped else ""
    lab, sco = lab[finite], sco[finite]
    if sco.size == 0:
        fig = _message_figure("Anomaly scores", f"No finite scores to plot.{note}")
        return _save_figure(fig, path)

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
        ax.axvline(thr, color="black", ls="--", lw=1.5, label=f"threshold = {thr:.4g}")
    ax.set_xlabel("Anomaly score (higher = more anomalous)")
    ax.set_ylabel("Number of images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _title(ax, f"Score distribution — {_counts(lab)}{note}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save_figure(fig, path)


# --------------------------------------------------------------------------- sweeps

#: Metrics a sweep picture shows, when the jobs have them: key, legend, colour, marker.
SWEEP_METRICS = (
    ("image_AUROC", "image AUROC", "tab:blue", "o"),
    ("pixel_AUROC", "pixel AUROC", "tab:orange", "s"),
    ("pixel_PRO", "pixel PRO", "tab:green", "D"),
)
#: Rows in a sweep picture; a larger sweep shows its best jobs (and says so).
SWEEP_ROWS = 40


def sweep_rows(
    metrics: Sequence[Mapping[str, float]], errors: Sequence[str | None]
) -> tuple[list[int], int | None]:
    """The jobs :func:`plot_sweep` shows, top to bottom, and the best one.

    Finished jobs by image AUROC, highest first (ties and missing values by job index,
    missing after the rest), then the failed jobs; at most :data:`SWEEP_ROWS`. The best
    is the first finished job with a finite image AUROC, or ``None``.
    """
    def key(j: int) -> tuple[float, int]:
        value = metrics[j].get("image_AUROC")
        finite = value is not None and math.isfinite(value)
        return (-float(value) if finite else math.inf, j)

    finished = sorted((j for j, e in enumerate(errors) if e is None), key=key)
    failed = [j for j, e in enumerate(errors) if e is not None]
    best = finished[0] if finished and key(finished[0])[0] < math.inf else None
    return (finished + failed)[:SWEEP_ROWS], best


def plot_sweep(
    path: str | Path,
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, float]],
    errors: Sequence[str | None],
) -> Path:
    """Write a sweep at a glance as a PNG: one row per job, its metrics as dots.

    Jobs are sorted by image AUROC, best first (its row is shaded); failed jobs come last,
    in red, with their error. Beyond :data:`SWEEP_ROWS` jobs, the best are shown.

    Args:
        path: output ``.png``.
        labels: ``J`` row labels (the job number and its overrides).
        metrics: ``J`` mappings of metric name to value (empty for a failed job); the
            :data:`SWEEP_METRICS` among them are drawn.
        errors: ``J`` one-line errors, ``None`` for a finished job.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not len(labels) == len(metrics) == len(errors):
        raise ValueError(f"lengths differ: labels {len(labels)}, metrics {len(metrics)}, "
                         f"errors {len(errors)}")

    order, best = sweep_rows(metrics, errors)
    n_failed = sum(e is not None for e in errors)
    shown = [(key, name, colour, marker) for key, name, colour, marker in SWEEP_METRICS
             if any(metrics[j].get(key) is not None for j in order)]
    values = [float(metrics[j][key]) for j in order for key, *_ in shown
              if metrics[j].get(key) is not None and math.isfinite(metrics[j][key])]
    if not values:
        title = (f"Sweep of {len(labels)} jobs: "
                 + (f"all {n_failed} failed" if n_failed == len(labels) else "no metrics to show"))
        fig = _message_figure("Sweep", title + "\n(sweep_table.csv lists every job)")
        return _save_figure(fig, path)

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
    # The image AUROC in words right of each row; a failed job's error across its row.
    for row, j in zip(y, order, strict=True):
        if errors[j] is not None:
            ax.text(0.01, row, f"failed: {errors[j]}"[:100], transform=ax.get_yaxis_transform(),
                    va="center", fontsize=8, color="tab:red")
        else:
            value = metrics[j].get("image_AUROC")
            ax.text(1.01, row, "n/a" if value is None or not math.isfinite(value)
                    else f"{value:.4f}", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=8, clip_on=False)
    ax.grid(alpha=0.3, axis="x")
    ax.set_xlabel("metric value (higher is better)")
    more = f"; the best {rows} shown" if rows < len(labels) else ""
    failed = f", {n_failed} failed" if n_failed else ""
    fig.text(0.5, 1 - 0.2 / height, f"Sweep of {len(labels)} jobs{failed}, by image AUROC"
             f"{more}", ha="center", va="top", fontsize=11)
    ax.legend(loc="lower left", fontsize=8, bbox_to_anchor=(0.0, 1.0), ncols=len(shown),
              frameon=False, borderaxespad=0.3)
    return _save_figure(fig, path)


# --------------------------------------------------------------------------- overlays


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def _resize_float(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float ``(h, w)`` array to ``hw``."""
    if arr.shape == hw:
        return arr
    img = Image.fromarray(np.asarray(arr, dtype=np.float32), mode="F")
    return np.asarray(img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR))


def _load_rgb(path: str | Path, hw: tuple[int, int]) -> np.ndarray:
    """Image ``path`` as uint8 ``(H, W, 3)`` resized to ``hw`` (grey if unreadable)."""
    from dfmx.data.images import load_image  # local: keeps this module importable alone

    img = load_image(path)
    if img.size != (hw[1], hw[0]):
        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _safe_stem(path: str | Path, limit: int = 80) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._") or "image"
    return stem[:limit]


def top_indices(labels: np.ndarray, scores: np.ndarray, cls: int, k: int) -> list[int]:
    """Indices of the ``k`` highest-scored images of class ``cls``, highest first.

    Ties keep input order; NaN scores come last.

    Returns:
        Up to ``k`` indices into ``labels``/``scores``.
    """
    lab, sco = _as_labels_scores(labels, scores)
    idx = np.flatnonzero(lab == cls)
    key = np.where(np.isnan(sco[idx]), -np.inf, sco[idx])
    order = np.argsort(-key, kind="stable")
    return [int(i) for i in idx[order][: max(int(k), 0)]]


def _map_range(maps: np.ndarray) -> tuple[float, float]:
    """Finite min/max over all maps (chunked so a large stack is not copied at once)."""
    lo, hi = math.inf, -math.inf
    for chunk in np.array_split(np.arange(len(maps)), max(1, len(maps) // 64)):
        m = np.asarray(maps[chunk], dtype=np.float64)
        m = m[np.isfinite(m)]
        if m.size:
            lo, hi = min(lo, float(m.min())), max(hi, float(m.max()))
    if not math.isfinite(lo):
        return 0.0, 1.0
    if hi <= lo:
        hi = lo + 1e-6 * max(1.0, abs(lo))
    return lo, hi


# Overlay layout in inches: three panels of the image's shape (longer side _PANEL_IN), a
# colorbar right of the map, room for the titles above. Fixed positions: constrained
# layout measured every text of the figure once more and took a quarter of the time of
# drawing it.
_PANEL_IN, _MIN_SLOT_IN, _GAP_IN, _MARGIN_IN, _TOP_IN = 3.9, 2.9, 0.25, 0.1, 0.7
_CBAR_PAD_IN, _CBAR_IN, _CBAR_LABELS_IN = 0.08, 0.15, 0.55


def _overlay_figure(
    image: np.ndarray | None,
    amap: np.ndarray,
    mask: np.ndarray | None,
    vmin: float,
    vmax: float,
    title: str,
) -> Figure:
    """Three panels: image | heatmap + colorbar | blend + mask contour."""
    h, w = amap.shape
    panel_w, panel_h = _PANEL_IN * min(1.0, w / h), _PANEL_IN * min(1.0, h / w)
    slot = max(panel_w, _MIN_SLOT_IN)  # a narrow panel is centred in room for its title
    lefts = [_MARGIN_IN, _MARGIN_IN + slot + _GAP_IN]
    cbar_left = lefts[1] + (slot + panel_w) / 2 + _CBAR_PAD_IN
    lefts.append(cbar_left + _CBAR_IN + _CBAR_LABELS_IN)
    width, height = lefts[2] + slot + _MARGIN_IN, panel_h + _MARGIN_IN + _TOP_IN
    fig = Figure(figsize=(width, height))

    def box(left: float, size: float) -> list[float]:
        return [left / width, _MARGIN_IN / height, size / width, panel_h / height]

    axes = [fig.add_axes(box(left + (slot - panel_w) / 2, panel_w)) for left in lefts]
    shown = image if image is not None else np.full((h, w, 3), 128, np.uint8)
    axes[0].imshow(shown)
    titles = ["image" if image is not None else "image (could not be read)",
              "anomaly map (run-wide scale)"]
    heat = axes[1].imshow(amap, cmap=HEATMAP_CMAP, vmin=vmin, vmax=vmax)
    fig.colorbar(heat, cax=fig.add_axes(box(cbar_left, _CBAR_IN)))
    axes[2].imshow(shown)
    axes[2].imshow(amap, cmap=HEATMAP_CMAP, vmin=vmin, vmax=vmax, alpha=0.45)
    if mask is not None and mask.any() and not mask.all():
        axes[2].contour(mask.astype(np.float32), levels=[0.5], colors=MASK_COLOUR,
                        linewidths=1.8)
        titles.append(f"overlay + ground truth ({MASK_COLOUR} contour)")
    else:
        titles.append("overlay" + (" (no defect in mask)" if mask is not None else ""))
    for ax, text in zip(axes, titles, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        _title(ax, text)
    fig.suptitle(title, fontsize=12, y=1 - 0.12 / height)
    return fig


def write_overlays(
    out_dir: str | Path,
    paths: Sequence[str | Path],
    labels: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray | None,
    masks: np.ndarray | None,
    image_size: int | tuple[int, int] | None = None,
    k: int = 4,
    *,
    load_image_fn: Callable[[int], np.ndarray] | None = None,
) -> list[Path]:
    """Write side-by-side overlays for the riskiest normals and the strongest anomalies.

    Picks the ``k`` highest-scored normals (false-positive candidates) and the ``k``
    highest-scored anomalies. Each PNG has three panels: the image; the anomaly map
    (colour scale shared by all maps of the run, with a colorbar); the image with the
    map blended and the ground-truth mask outlined (contour at 0.5) when it has a defect.
    Files are ``normal_01_<stem>.png`` … and ``anomalous_01_<stem>.png`` … (rank by score).

    Args:
        out_dir: folder for the PNGs (created if needed).
        paths: ``N`` image paths; loaded one at a time with PIL when needed.
        labels: ``(N,)`` in ``{0, 1}``.
        scores: ``(N,)``.
        maps: ``(N, H, W)`` anomaly maps, or ``None`` → nothing is written.
        masks: ``(N, H, W)`` bool ground truth, or ``None``.
        image_size: panel size ``(H, W)`` or one int for a square; ``None`` uses the maps'
            ``(H, W)``. Maps and masks of another size are resized to it.
        k: images per class.
        load_image_fn: optional ``i -> uint8 (h, w, 3)`` loader replacing reading ``paths``.

    Returns:
        The written PNG paths, normals first, each group in rank order.
    """
    if maps is None or k <= 0:
        return []
    lab, sco = _as_labels_scores(labels, scores)
    if len(maps) != len(lab) or len(paths) != len(lab):
        raise ValueError(
            f"lengths differ: paths {len(paths)}, maps {len(maps)}, labels/scores {len(lab)}"
        )
    if masks is not None and len(masks) != len(lab):
        raise ValueError(f"masks has {len(masks)} entries, expected {len(lab)}")
    hw = _size_hw(image_size) if image_size is not None else tuple(np.shape(maps)[1:3])
    vmin, vmax = _map_range(maps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    for cls, kind in ((0, "normal"), (1, "anomalous")):
        for rank, i in enumerate(top_indices(lab, sco, cls, k), start=1):
            amap = _resize_float(np.asarray(maps[i], dtype=np.float32), hw)
            mask = None
            if masks is not None:
                mask = _resize_float(np.asarray(masks[i], dtype=np.float32), hw) >= 0.5
            try:
                if load_image_fn is not None:
                    image = np.asarray(load_image_fn(i), dtype=np.uint8)
                    if image.shape[:2] != hw:
                        image = np.asarray(Image.fromarray(image).convert("RGB").resize(
                            (hw[1], hw[0]), Image.Resampling.BILINEAR))
                else:
                    image = _load_rgb(paths[i], hw)
            except (OSError, ValueError):
                image = None
            p = Path(paths[i])
            name = path_text(f"{p.parent.name}/{p.name}" if p.parent.name else p.name)
            title = f"{name}  —  label: {kind} ({cls})  —  score: {sco[i]:.4g}"
            fig = _overlay_figure(image, amap, mask, vmin, vmax, title)
            target = out_dir / f"{kind}_{rank:02d}_{_safe_stem(p)}.png"
            written.append(_save_figure(fig, target))
    return written


def write_prediction_overlays(
    out_dir: str | Path,
    paths: Sequence[str | Path],
    scores: np.ndarray,
    maps: np.ndarray | None,
    threshold: float,
    image_size: int | tuple[int, int] | None = None,
    k: int = 8,
) -> list[Path]:
    """Overlays of the ``k`` highest-scored images of an unlabelled prediction run.

    Same three panels as :func:`write_overlays` (no ground truth); the title gives the
    score and the prediction (``score >= threshold``). Files: ``top_01_<stem>.png`` …

    Args:
        paths: ``N`` image paths. scores: ``(N,)``. maps: ``(N, H, W)`` or ``None``
            (nothing is written).
    """
    if maps is None or k <= 0:
        return []
    sco = np.asarray(scores, dtype=np.float64)
    hw = _size_hw(image_size) if image_size is not None else tuple(np.shape(maps)[1:3])
    vmin, vmax = _map_range(maps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    order = np.argsort(-np.where(np.isnan(sco), -np.inf, sco), kind="stable")[:k]
    for rank, i in enumerate(order, start=1):
        amap = _resize_float(np.asarray(maps[i], dtype=np.float32), hw)
        try:
            image = _load_rgb(paths[i], hw)
        except (OSError, ValueError):
            image = None
        verdict = "anomalous" if sco[i] >= threshold else "normal"
        title = f"{path_text(Path(paths[i]).name)}  —  predicted {verdict}  —  score: {sco[i]:.4g}"
        fig = _overlay_figure(image, amap, None, vmin, vmax, title)
        written.append(_save_figure(fig, out_dir / f"top_{rank:02d}_{_safe_stem(paths[i])}.png"))
    return written
