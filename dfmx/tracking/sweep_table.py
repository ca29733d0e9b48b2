"""The sweep table (one row per job: overrides, status, metrics) and the best job."""

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
