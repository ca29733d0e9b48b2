"""The sweep table (one row per job: overrides, status, metrics), its picture, the best job."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from dfmx.tracking.sweep_state import JobRecord

#: The metric that picks a sweep's best job (higher is better).
BEST_METRIC = "image_AUROC"


def table_columns(records: Sequence[JobRecord]) -> list[str]:
    """``job, run_id, status``, the override keys, the metric names, ``error``."""
    overrides: list[str] = []
    metrics: list[str] = []
    for record in records:
        overrides += [k for k in record.overrides if k not in overrides]
        metrics += [k for k in record.metrics if k not in metrics]
    return ["job", "run_id", "status", *overrides, *metrics, "error"]


def write_sweep_table(path: str | Path, records: Sequence[JobRecord]) -> Path:
    """Write the sweep table as CSV; returns ``path``."""
    columns = table_columns(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in records:
            row: dict[str, object] = {"job": r.num, "run_id": r.run_id or "", "status": r.status,
                                      "error": (r.error or "").splitlines()[0] if r.error else ""}
            row.update(r.overrides)
            row.update({k: repr(float(v)) if v is not None else "" for k, v in r.metrics.items()})
            writer.writerow(row)
    return path


def job_labels(records: Sequence[JobRecord]) -> list[str]:
    """A label per job: its number and its swept options, those whose values differ between
    jobs (options set alike for every job would crowd them out; with one job, all), cut to
    70 characters."""
    keys = list(dict.fromkeys(k for r in records for k in r.overrides))
    swept = [k for k in keys if len({r.overrides.get(k) for r in records}) > 1] or keys
    labels = []
    for r in records:
        label = " ".join([f"#{r.num}", *(f"{k}={r.overrides[k]}" for k in swept
                                          if k in r.overrides)])
        labels.append(label if len(label) <= 70 else label[:69] + "…")
    return labels


def sweep_plot_inputs(
    records: Sequence[JobRecord],
) -> tuple[list[str], list[dict[str, float]], list[str | None]]:
    """Row labels (:func:`job_labels`), metrics and one-line errors (``None``: finished)
    of a sweep's jobs."""
    errors = [None if r.status == "FINISHED" else (r.error or "unknown error").splitlines()[0]
              for r in records]
    return job_labels(records), [dict(r.metrics) for r in records], errors


def write_sweep_plot(path: str | Path, records: Sequence[JobRecord]) -> Path:
    """The sweep at a glance (:func:`~dfmx.experiment.reports.plot_sweep`) as a PNG."""
    from dfmx.experiment.reports import plot_sweep  # matplotlib: only when a sweep ends

    return plot_sweep(path, *sweep_plot_inputs(records))


def best_record(records: Sequence[JobRecord], metric: str = BEST_METRIC) -> JobRecord | None:
    """The finished job with the highest finite ``metric`` (the first on ties), or ``None``."""
    best: JobRecord | None = None
    for r in records:
        value = r.metrics.get(metric)
        if r.status != "FINISHED" or value is None or not math.isfinite(value):
            continue
        if best is None or value > best.metrics[metric]:
            best = r
    return best


def result_line(records: Sequence[JobRecord], directory: str | Path) -> str:
    """One line for the end of a sweep: how many jobs finished, the best one (by
    :data:`BEST_METRIC`) and where the table and its picture are."""
    finished = sum(r.status == "FINISHED" for r in records)
    count = (f"{len(records)} jobs finished" if finished == len(records)
             else f"{finished} of {len(records)} jobs finished")
    best = best_record(records)
    if best is not None:
        label = job_labels(records)[records.index(best)]
        count += f"; best {label}: {BEST_METRIC} {best.metrics[BEST_METRIC]:.4f}"
    return f"dfmx sweep: {count}; table and picture in {directory}"


def failure_summary(records: Sequence[JobRecord]) -> str | None:
    """One line naming the failed jobs and their errors, or ``None`` when none failed."""
    failed = [r for r in records if r.status != "FINISHED"]
    if not failed:
        return None
    parts = []
    for r in failed:
        label = " ".join(f"{k}={v}" for k, v in r.overrides.items())
        error = (r.error or "unknown error").splitlines()[0][:200]
        parts.append(f"#{r.num} ({label}): {error}")
    return f"dfmx sweep: {len(failed)} of {len(records)} jobs failed: " + "; ".join(parts)
