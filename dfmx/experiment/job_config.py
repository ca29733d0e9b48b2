"""The job-level options of a config: their schema (types and defaults) and their ranges.

:class:`JobConfig` is the typed schema of the options at the top of the config (the
swappable parts, ``backbone``, ``layer``, ``pooling``, ``scorer``, ``data`` and
``tracking``, are config groups with their own schemas). The command line registers it
as the base of ``conf/config.yaml``, so Hydra and OmegaConf check each value's type, and
these dataclasses hold each job-level option's one default: the model's options take the
model record's (:class:`~dfmx.engine.model_config.ModelConfig`), except ``combine`` and
``reduction``, where the command line's model differs from the Python API's (the
reasons are in ``conf/config.yaml`` and ``docs/accuracy.md``). :func:`job_config_problems` is the
one check of what types cannot say (``image_size >= 1``...): a value of the wrong kind or out
of range gets one line that names the option (:func:`check_job_config` raises them as one
:class:`~dfmx.errors.ConfigError`), says what it takes and shows
what it got, before a job reads any data. The model's options (``pca_level``,
``precision``, ``device``, ``optimize``) are checked by the model record
(:class:`dfmx.engine.model_config.ModelConfig`); the cache checks its own.

This module imports neither torch nor Hydra: the command line reads it for ``--help``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from dfmx.engine.model_config import AUTO_REDUCTION, ModelConfig
from dfmx.errors import ConfigError

__all__ = ["DEFAULT_SELECT_METRIC", "CacheOptions", "JobConfig", "check_job_config",
           "job_config_problems"]

#: The metric a sweep picks its best job by unless ``select_metric`` says otherwise: the
#: label-free one (validation normals against synthetic anomalies on them).
DEFAULT_SELECT_METRIC = "val_synthetic_AUROC"


# The annotations stay evaluable (Optional/Union, no PEP 604) for OmegaConf's schema.
@dataclass
class CacheOptions:
    """The on-disk cache of raw backbone features: jobs differing only in pooling, PCA
    level or scorer extract once. ``dir``: ``None`` = ``$DFMX_CACHE_DIR/features``, else
    ``~/.cache/dfmx/features``. Least recently used entries are evicted beyond
    ``max_gb``."""

    enabled: bool = True
    dir: Optional[str] = None  # noqa: UP045
    max_gb: float = 10.0


@dataclass
class JobConfig:
    """The job-level options of ``python -m dfmx`` and their defaults.

    Attributes:
        pca_level: PCA variance ratio in (0, 1), or an int number of components.
        image_size: images are resized to ``image_size`` x ``image_size`` pixels.
        batch_size: images per backbone call.
        num_workers: threads decoding images; ``None`` = one per CPU.
        precision: ``fp32``, ``bf16`` or ``auto`` (bf16 where the hardware has fast bf16).
        optimize: how the backbone runs: ``auto`` (a frozen TorchScript graph on the CPU,
            eager elsewhere), ``none``, ``freeze``, ``compile``.
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
        seed: seeds torch before the job, the validation split and the synthetic anomalies.
        threshold_fpr: target false-positive rate of the decision threshold, which is set
            on the validation normals' scores (:func:`dfmx.metrics.threshold.fpr_threshold`).
        select_metric: the metric (higher is better) by which a sweep picks its best job
            and whose value the command returns to Hydra's sweepers; the default needs no
            test labels, ``image_AUROC`` suits labelled benchmark studies.
        save_model: write the fitted model to the run folder.
        overlays: overlay pictures of the top-scored images of each class.
        resume: skip jobs whose resolved config already finished in the tracking store.
        debug: show full tracebacks instead of one-line errors.
        cache: :class:`CacheOptions`.
        combine: ``concat`` or ``ensemble`` (one PCA + scorer per layer).
        reduction: the image score from the map: ``sum``, ``max``, ``topk``, or ``auto``
            (``topk`` for scorers with maps, ``sum`` for image-only ones).
        reduction_topk: the share of the map ``topk`` averages, in (0, 1].
    """

    # The swappable parts: filled by the defaults list of conf/config.yaml.
    backbone: Any = None
    layer: Any = None
    pooling: Any = None
    scorer: Any = None
    data: Any = None
    tracking: Any = None

    pca_level: Union[int, float] = ModelConfig.n_comps  # noqa: UP007
    image_size: int = 256
    batch_size: int = 16
    num_workers: Optional[int] = None  # noqa: UP045
    precision: str = ModelConfig.precision
    optimize: str = ModelConfig.optimize
    device: str = ModelConfig.device
    seed: int = 0
    threshold_fpr: float = 0.01
    select_metric: str = DEFAULT_SELECT_METRIC
    save_model: bool = True
    overlays: int = 4
    resume: bool = False
    debug: bool = False
    cache: CacheOptions = field(default_factory=CacheOptions)
    # The command line's model: one PCA + scorer per layer, each scored by its top map
    # cells (the record's defaults, concat and sum, are anomalib's).
    combine: str = "ensemble"
    reduction: str = AUTO_REDUCTION
    reduction_topk: float = ModelConfig.reduction_topk


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
_FLAGS = ("save_model", "resume", "debug")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _fraction_problem(name: str, value: Any, meaning: str, low_open: bool) -> str | None:
    """A problem with a number that must lie in ``(0, 1)`` (``low_open``) or ``[0, 1)``."""
    ok = (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_))
          and (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0))
    if ok:
        return None
    interval = "(0, 1)" if low_open else "[0, 1)"
    return f"{name} must be a number in {interval} ({meaning}); got {value!r}"


def job_config_problems(cfg: Mapping[str, Any]) -> list[str]:
    """One line per bad job-level option of ``cfg`` (empty: all good).

    Options that are absent and not required keep their defaults.
    """
    problems = []
    if "threshold_fpr" in cfg:
        problem = _fraction_problem("threshold_fpr", cfg["threshold_fpr"],
                                    "target false-positive rate on the validation normals",
                                    low_open=True)
        if problem:
            problems.append(problem)
    data = cfg.get("data")
    if isinstance(data, Mapping) and "val_fraction" in data:
        problem = _fraction_problem("data.val_fraction", data["val_fraction"],
                                    "share of the training normals held out for validation",
                                    low_open=False)
        if problem:
            problems.append(problem)
    if "select_metric" in cfg and not (isinstance(cfg["select_metric"], str)
                                       and cfg["select_metric"]):
        problems.append("select_metric must be a metric name such as val_synthetic_AUROC or "
                        f"image_AUROC; got {cfg['select_metric']!r}")
    for name, option in _WHOLE_OPTIONS.items():
        if name not in cfg:
            if option.required:
                problems.append(f"the config has no {name} ({option.meaning})")
            continue
        problem = option.problem(name, cfg[name])
        if problem:
            problems.append(problem)
    for name in _FLAGS:
        if name in cfg and not isinstance(cfg[name], (bool, np.bool_)):
            problems.append(f"{name} must be true or false; got {cfg[name]!r}")
    return problems


def check_job_config(cfg: Mapping[str, Any]) -> None:
    """Raise one :class:`~dfmx.errors.ConfigError` listing every bad job-level option of ``cfg``."""
    problems = job_config_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
