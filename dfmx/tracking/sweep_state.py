"""Files in the sweep folder that tie a sweep's jobs to its callback.

Jobs may run in other processes or on other machines (joblib, Ray, SLURM), so the sweep
folder (``hydra.sweep.dir``), which every job knows, carries the state:

* ``.dfmx/parent.json`` — written once by the callback before any job starts: the tracking
  URI (made absolute), experiment id and parent run id;
* ``.dfmx/jobs/<num>.json`` — one :class:`JobRecord` per finished or failed job.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dfmx.atomic import atomic_open

STATE_DIR = ".dfmx"
PARENT_FILE = "parent.json"
JOBS_DIR = "jobs"


@dataclass(frozen=True)
class ParentInfo:
    """Where a sweep's child runs go. ``run_id`` is ``None`` when tracking is off."""

    run_id: str | None
    tracking_uri: str | None
    experiment_id: str | None


@dataclass
class JobRecord:
    """How one job of a sweep ended.

    Attributes:
        num: the job number.
        overrides: the job's overrides, ``{key: value}``.
        status: ``"FINISHED"`` or ``"FAILED"``.
        run_id: its MLflow run (``None`` when tracking is off).
        metrics: its metrics (empty when it failed).
        error: a one-line error (failed jobs).
        output_dir: the job's folder.
    """

    num: int
    overrides: dict[str, str]
    status: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    output_dir: str | None = None


def _write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=2, sort_keys=True, allow_nan=True)


def state_dir(sweep_dir: str | Path) -> Path:
    """The ``.dfmx`` folder of a sweep."""
    return Path(sweep_dir) / STATE_DIR


def reset(sweep_dir: str | Path) -> None:
    """Remove the state of an earlier sweep into the same folder."""
    shutil.rmtree(state_dir(sweep_dir), ignore_errors=True)


def write_parent(sweep_dir: str | Path, info: ParentInfo) -> Path:
    """Record the parent run for the sweep's jobs."""
    path = state_dir(sweep_dir) / PARENT_FILE
    _write_json(path, asdict(info))
    return path


def read_parent(sweep_dir: str | Path) -> ParentInfo | None:
    """The parent run recorded by the callback, or ``None`` (no callback ran)."""
    path = state_dir(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    return ParentInfo(**json.loads(path.read_text()))


def write_job_record(sweep_dir: str | Path, record: JobRecord) -> Path:
    """Record how a job ended (secrets in its error line hidden: the sweep's summary line
    and table repeat it)."""
    from dfmx.path_text import text_safe
    from dfmx.tracking.redact import redact_text

    if record.error is not None:
        record = replace(record, error=text_safe(redact_text(record.error)))
    path = state_dir(sweep_dir) / JOBS_DIR / f"{record.num}.json"
    _write_json(path, asdict(record))
    return path


def read_job_records(sweep_dir: str | Path) -> list[JobRecord]:
    """All job records of a sweep, by job number."""
    folder = state_dir(sweep_dir) / JOBS_DIR
    if not folder.is_dir():
        return []
    records = [JobRecord(**json.loads(p.read_text())) for p in folder.glob("*.json")]
    return sorted(records, key=lambda r: r.num)
