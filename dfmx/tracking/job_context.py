"""What a job knows of Hydra: run mode, sweep folder, job number, overrides, choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dfmx.tracking.redact import redact_override


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["scorer=fre", "+a.b=1"]`` → ``{"scorer": "fre", "a.b": "1"}`` (``~`` deletions kept
    as keys with an empty value)."""
    parsed: dict[str, str] = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def absolute_dir(path: str | Path, cwd: str | Path | None) -> Path:
    """``path``, made absolute against ``cwd`` (Hydra's original working directory)."""
    p = Path(path)
    if p.is_absolute():
        return p
    return (Path(cwd) if cwd else Path.cwd()).resolve() / p


@dataclass(frozen=True)
class JobContext:
    """One job's place in a run or sweep.

    Attributes:
        multirun: the job is part of a ``-m`` sweep.
        output_dir: the job's own folder.
        sweep_dir: the sweep's folder (``None`` for a single run).
        job_num: the job's number in the sweep (``None`` for a single run).
        overrides: the job's command-line overrides, ``{key: value}``.
        choices: Hydra's chosen config group options, ``{group: option}``.
        run_name: a readable name for the MLflow run.
        cwd: the directory the app was started in.
    """

    multirun: bool
    output_dir: Path
    sweep_dir: Path | None = None
    job_num: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    run_name: str = "dfmx"
    cwd: Path | None = None

    @classmethod
    def from_hydra(cls, hydra_cfg: Any) -> JobContext:
        """Build from ``HydraConfig.get()`` inside a job."""
        from hydra.types import RunMode

        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        cwd = Path(hydra_cfg.runtime.cwd)
        # Secrets hidden: the overrides name the MLflow run and fill the sweep table. As
        # typed: an interpolation in one (pca_level='${x}') is the job's to resolve.
        task = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False) or []
        overrides = parse_overrides([redact_override(str(o)) for o in task])
        choices = OmegaConf.to_container(hydra_cfg.runtime.choices, resolve=True) or {}
        job_num = OmegaConf.select(hydra_cfg, "job.num", default=None) if multirun else None
        sweep_dir = absolute_dir(hydra_cfg.sweep.dir, cwd) if multirun else None
        label = ",".join(redact_override(f"{k}={v}") for k, v in overrides.items())
        prefix = f"job{job_num} " if multirun else ""
        run_name = (prefix + label).strip() or "dfmx"
        return cls(
            multirun=multirun,
            output_dir=absolute_dir(hydra_cfg.runtime.output_dir, cwd),
            sweep_dir=sweep_dir,
            job_num=int(job_num) if job_num is not None else None,
            overrides=overrides,
            choices={str(k): str(v) for k, v in choices.items() if v is not None},
            run_name=run_name[:250],
            cwd=cwd,
        )
