"""The model record a job config describes, and the check of a job's options.

:func:`model_config` turns the resolved job config (``backbone.arch``, ``layer.names``,
``pca_level``...) into a :class:`~dfmx.engine.model_config.ModelConfig`, which checks
every model option; :func:`checked_model_config` adds the job-level options
(:func:`~dfmx.experiment.job_config.job_config_problems`). The command line runs the
latter before it creates a run folder, first with ``plugins=False`` (the options' own
values: no plugin loaded, no torch imported, so a bad value costs no import), then in
full; :func:`dfmx.experiment.run.run_experiment` runs it again before it reads any data.
Building the record in full builds the pooling and the scorer (cheap: no backbone, no
data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dfmx import registry
from dfmx.engine.model_config import AUTO_REDUCTION, ModelConfig, ModelConfigError
from dfmx.errors import ConfigError
from dfmx.experiment.job_config import job_config_problems

__all__ = ["checked_model_config", "model_config"]

#: The job config's name of each model option whose name differs in the model record.
_JOB_KEYS = {
    "backbone": "backbone.arch", "layers": "layer.names", "pre_trained": "backbone.pretrained",
    "weights": "backbone.weights", "pooling": "pooling", "pooling_params": "pooling",
    "n_comps": "pca_level", "score_type": "scorer", "scorer_params": "scorer",
}
#: The record's name of each model option at the top of the job config.
_TOP_KEYS = (("n_comps", "pca_level"), ("precision", "precision"), ("device", "device"),
             ("optimize", "optimize"), ("combine", "combine"), ("reduction", "reduction"),
             ("reduction_topk", "reduction_topk"))


def model_config(cfg: Mapping[str, Any], *, plugins: bool = True) -> ModelConfig:
    """The model record a job config describes, checked before any data is read (the
    pooling's and scorer's options by the plugins themselves).

    Job-level keys left out of ``cfg`` take the record's defaults. With ``plugins=False``
    no plugin is loaded or built (nor torch imported): the record's own values are
    checked, a job-level ``reduction=auto`` standing as ``sum``.

    Raises:
        ConfigError: a bad value, in one line naming the job config's key
            (``pca_level``, not the record's ``n_comps``).
    """
    _, backbone = registry.plugin_params(cfg["backbone"])
    pooling_name, pooling_params = registry.plugin_params(cfg["pooling"])
    scorer_name, scorer_params = registry.plugin_params(cfg["scorer"])
    options: dict[str, Any] = {
        "backbone": backbone["arch"],
        "layers": tuple(cfg["layer"].get("names") or backbone["layers"]),
        "pre_trained": backbone["pretrained"],
        "weights": backbone.get("weights"),
        "pooling": pooling_name,
        "pooling_params": pooling_params,
        "score_type": scorer_name,
        "scorer_params": scorer_params,
    }
    for record_name, job_name in _TOP_KEYS:
        if job_name in cfg:
            options[record_name] = cfg[job_name]
    if plugins:
        from dfmx.engine.plugins import check_plugin_options, resolve_reduction

        if "reduction" in options:
            options["reduction"] = resolve_reduction(options["reduction"], scorer_name,
                                                     scorer_params)
    elif options.get("reduction") == AUTO_REDUCTION:
        options["reduction"] = "sum"  # which reduction "auto" is needs the scorer
    try:
        record = ModelConfig(**options)
        if plugins:
            check_plugin_options(record)
        return record
    except ModelConfigError as exc:
        raise ConfigError(exc.message(_JOB_KEYS.get(exc.field, exc.field))) from None


def checked_model_config(cfg: Mapping[str, Any], *, plugins: bool = True) -> ModelConfig:
    """The model record of ``cfg`` (``plugins`` as in :func:`model_config`), after checking
    the job-level options.

    Raises:
        ConfigError: one line listing every problem of both, ``"; "``-separated.
    """
    problems = job_config_problems(cfg)
    try:
        record = model_config(cfg, plugins=plugins)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return record
