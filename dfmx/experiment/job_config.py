"""The job-level options of a config, checked before a job reads any data.

:func:`~dfmx.experiment.run.run_experiment` reads ``image_size``, ``batch_size``,
``pca_level``, ``num_workers``, ``seed``, ``overlays`` and ``save_model`` from the top of
the config. A value of the wrong kind or out of range gets one :class:`ValueError` that
names the option, says what it takes and shows what it got, instead of an error from deep
inside torch (``image_size=0`` used to fail in the resize, ``batch_size=0`` with a
division by zero). The parts check their own options: backbone, layer, pooling, scorer,
data, cache, precision, device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dfmx.errors import ConfigError

__all__ = ["check_job_config"]


@dataclass(frozen=True)
class _Whole:
    """An option that takes a whole number."""

    minimum: int | None
    meaning: str
    required: bool = False
    nullable: bool = False

    def problem(self, name: str, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        if _is_int(value) and (self.minimum is None or value >= self.minimum):
            return None
        wanted = "a whole number" if self.minimum is None else f"a whole number >= {self.minimum}"
        if self.nullable:
            wanted += " or null"
        return f"{name} must be {wanted} ({self.meaning}); got {value!r}"


_WHOLE_OPTIONS = {
    "image_size": _Whole(1, "images are resized to image_size x image_size pixels",
                         required=True),
    "batch_size": _Whole(1, "images per backbone call", required=True),
    "num_workers": _Whole(0, "threads decoding images; null = one per CPU", nullable=True),
    "seed": _Whole(None, "seeds torch before the job"),
    "overlays": _Whole(0, "overlay pictures of the top-scored images of each class"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _pca_level_problem(value: Any) -> str | None:
    if _is_int(value) and value >= 1:
        return None
    if isinstance(value, (float, np.floating)) and 0.0 < value < 1.0:
        return None
    return ("pca_level must be a variance ratio in (0, 1), e.g. 0.97, or a whole number "
            f"of components >= 1; got {value!r}")


def check_job_config(cfg: Mapping[str, Any]) -> None:
    """Raise one :class:`ValueError` listing every bad job-level option of ``cfg``.

    Options that are absent and not required keep their defaults.
    """
    problems = []
    for name, option in _WHOLE_OPTIONS.items():
        if name not in cfg:
            if option.required:
                problems.append(f"the config has no {name} ({option.meaning})")
            continue
        problem = option.problem(name, cfg[name])
        if problem:
            problems.append(problem)
    if "pca_level" not in cfg:
        problems.append("the config has no pca_level (the PCA's variance ratio or size)")
    else:
        problem = _pca_level_problem(cfg["pca_level"])
        if problem:
            problems.append(problem)
    if "save_model" in cfg and not isinstance(cfg["save_model"], (bool, np.bool_)):
        problems.append(f"save_model must be true or false; got {cfg['save_model']!r}")
    if problems:
        raise ConfigError("; ".join(problems))
