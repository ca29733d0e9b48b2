"""The sweep table (one row per job: overrides, status, metrics), its picture, the best job."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from dfmx.atomic import atomic_open
from dfmx.experiment.job_config import DEFAULT_SELECT_METRIC
from dfmx.tracking.sweep_state import JobRecord

#: The metric that picks a sweep's best job (higher is better) unless the config's
#: ``select_metric`` names another.
BEST_METRIC = DEFAULT_SELECT_METRIC
#: The metric that breaks a selection metric's ties: an image-level AUROC saturates at 1.0
#: on easy data (every job of a 32-job MVTec bottle sweep scores 1.0 on the synthetic
#: anomalies), while its pixel-level counterpart still tells the jobs apart.
TIE_BREAKERS = {"val_synthetic_AUROC": "val_synthetic_pixel_AUROC",
                "image_AUROC": "pixel_AUROC"}


def best_column(metric: str) -> str:
    """The sweep table's column marking the best job: ``best_by_<metric>``."""
    return f"best_by_{metric}"


def table_columns(records: Sequence[JobRecord], metric: str = BEST_METRIC) -> list[str]:
    """``job, run_id, status, best_by_<metric>``, the override keys, the metric names,
    ``error``."""
    overrides: list[str] = []
    metrics: list[str] = []
    for record in records:
        overrides += [k for k in record.overrides if k not in overrides]
        metrics += [k for k in record.metrics if k not in metrics]
    return ["job", "run_id", "status", best_column(metric), *overrides, *metrics, "error"]


def write_sweep_table(path: str | Path, records: Sequence[JobRecord],
                      metric: str = BEST_METRIC) -> Path:
    """Write the sweep table as CSV; returns ``path``. The ``best_by_<metric>`` column is
    1 for the job ``metric`` picks (:func:`best_record`), else 0."""
    columns = table_columns(records, metric)
    best = best_record(records, metric)
    path = Path(path)
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in records:
            row: dict[str, object] = {"job": r.num, "run_id": r.run_id or "", "status": r.status,
                                      best_column(metric): int(r is best),
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


def write_sweep_plot(path: str | Path, records: Sequence[JobRecord],
                     metric: str = BEST_METRIC) -> Path:
    """The sweep at a glance (:func:`~dfmx.tracking.sweep_plot.plot_sweep`) as a PNG."""
    from dfmx.tracking.sweep_plot import plot_sweep  # matplotlib: only when a sweep ends

    return plot_sweep(path, *sweep_plot_inputs(records), metric=metric)


def _finite(metrics: Mapping[str, float], metric: str) -> float | None:
    value = metrics.get(metric)
    return float(value) if value is not None and math.isfinite(value) else None


def rank_jobs(
    metrics: Sequence[Mapping[str, float]],
    finished: Sequence[bool],
    metric: str = BEST_METRIC,
) -> tuple[list[int], int | None]:
    """The jobs of a sweep best first, and the best one: the sweep's one ranking rule.

    Finished jobs by ``metric``, highest first (ties by its :data:`TIE_BREAKERS` metric,
    then by job index; jobs without a finite value after the rest), then the jobs that did
    not finish, by index. The best job is the first of them when its ``metric`` is finite,
    else ``None``.

    Args:
        metrics: ``J`` mappings of metric name to value, one per job.
        finished: ``J`` flags, true for a job that finished.
        metric: the metric that ranks (higher is better).

    Returns:
        ``(order, best)``: the ``J`` job indices best first, and the best job's index.
    """
    if len(metrics) != len(finished):
        raise ValueError(f"lengths differ: metrics {len(metrics)}, finished {len(finished)}")

    breaker = TIE_BREAKERS.get(metric)

    def key(j: int) -> tuple[float, float, int]:
        values = [_finite(metrics[j], m) if m else None for m in (metric, breaker)]
        return (*(-v if v is not None else math.inf for v in values), j)

    done = sorted((j for j, f in enumerate(finished) if f), key=key)
    failed = [j for j, f in enumerate(finished) if not f]
    best = done[0] if done and _finite(metrics[done[0]], metric) is not None else None
    return done + failed, best


def best_record(records: Sequence[JobRecord], metric: str = BEST_METRIC) -> JobRecord | None:
    """The finished job with the highest finite ``metric`` (ties: :func:`rank_jobs`), or
    ``None``."""
    _, best = rank_jobs([r.metrics for r in records],
                        [r.status == "FINISHED" for r in records], metric)
    return records[best] if best is not None else None


def result_line(records: Sequence[JobRecord], directory: str | Path,
                metric: str = BEST_METRIC) -> str:
    """One line for the end of a sweep: how many jobs finished, the best one (by
    ``metric``) and where the table and its picture are."""
    finished = sum(r.status == "FINISHED" for r in records)
    count = (f"{len(records)} jobs finished" if finished == len(records)
             else f"{finished} of {len(records)} jobs finished")
    best = best_record(records, metric)
    if best is not None:
        label = job_labels(records)[records.index(best)]
        count += f"; best by {metric}: {label} ({metric} {best.metrics[metric]:.4f})"
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
