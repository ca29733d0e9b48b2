"""Checks of a composed job config, run before Hydra creates a run folder or a job starts.

:class:`ConfigCheckCallback` (the first of ``hydra.callbacks`` in ``conf/config.yaml``)
checks the config Hydra composed for a run (``on_run_start``) or every job of a ``-m``
grid sweep (``on_multirun_start``; each job's config is composed once, for this check,
Hydra's check of the batch and the launcher: :func:`~dfmx.cli.compose.compose_checked_job`):
each plugin's options are given to its ``Config`` dataclass and, for plugins that are
classes with a ``Config`` (scorers, poolings, data sources), to the plugin itself, which
is cheap (no data is read, no backbone built); the layer names are checked against the
backbone's feature table (:func:`layer_problem`); the job-level options and the model
record (:class:`~dfmx.engine.model_config.ModelConfig`, which checks ``pca_level``,
``precision``, ``device``, ``optimize``, ``combine``, ``reduction``...) go to
:func:`~dfmx.experiment.job_model.checked_model_config`. A bad value (``scorer=knn
scorer.n_neighbors=0``) ends the command with one ``dfmx: error:`` line and exit status 2,
before any run folder, MLflow run or sweep job exists. A sweep's jobs are checked as a
single run is, the options' own values of every job before any job's plugins (which
import torch); the line names the job refused and the options that differ between jobs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dfmx import registry, startup_gc
from dfmx.cli.config_store import config_class
from dfmx.cli.timings import job_timer

#: Exit status of a command refused for its options (as argparse's usage errors).
USAGE_ERROR = 2


def plugin_problem(kind: str, node: Mapping[str, Any]) -> str | None:
    """Why the resolved plugin node ``{"name": ..., **options}`` of ``kind`` cannot be
    built (its ``Config`` or its constructor refuses the options), else ``None``."""
    from dfmx.data.splits import source_options
    from dfmx.errors import USER_ERRORS, ConfigError

    name, params = registry.plugin_params(node)
    try:
        plugin = registry.load(kind, name)
        cls = config_class(kind, name, plugin)
        own = source_options(plugin, params) if kind == "data" else params
        cls(**own)
        if plugin is not cls and isinstance(plugin, type):
            plugin(**own)
    except (TypeError, ValueError, *USER_ERRORS) as exc:  # a plugin refuses with ValueError
        message = str(exc).splitlines()[0] if str(exc) else ""
        if isinstance(exc, ConfigError):  # dfmx's own messages name the option
            return f"{kind}={name}: {message}"
        options = " ".join(f"{kind}.{k}={v!r}" for k, v in params.items())
        return f"{kind}={name} ({options or 'no options'}): {type(exc).__name__}: {message}"
    return None


def layer_problem(cfg: Mapping[str, Any]) -> str | None:
    """Why the job's layers (``layer.names``, else the backbone's default layers) are not
    layers of its backbone, else ``None``. Cheap: the backbone is built on the meta device,
    and the job reuses the layer table in process."""
    from dfmx.errors import USER_ERRORS
    from dfmx.features.backbones import layer_infos

    backbone, layer = cfg.get("backbone"), cfg.get("layer")
    if not isinstance(backbone, Mapping) or "arch" not in backbone:
        return None
    names = (layer.get("names") if isinstance(layer, Mapping) else None) or backbone.get(
        "layers") or []
    try:
        layer_infos(str(backbone["arch"]), [str(n) for n in names])
    except USER_ERRORS as exc:
        return f"layer.names={list(names)}: {str(exc).splitlines()[0]}"
    return None


def option_problem(cfg: Mapping[str, Any]) -> str | None:
    """The first problem of the job-level options' own values (``pca_level``,
    ``precision``...), in one line, else ``None``. Imports no plugin and no torch."""
    from dfmx.errors import USER_ERRORS
    from dfmx.experiment.job_model import checked_model_config

    try:
        checked_model_config(cfg, plugins=False)
    except USER_ERRORS as exc:
        return str(exc)
    return None


def plugins_problem(cfg: Mapping[str, Any]) -> str | None:
    """The first problem of a resolved job config whose options' own values passed
    :func:`option_problem`: its plugins, its layers, then the model record with the
    plugins' values. Loads the plugins (and so imports torch)."""
    from dfmx.errors import USER_ERRORS
    from dfmx.experiment.job_model import model_config

    for kind in registry.GROUPS:
        node = cfg.get(kind)
        if isinstance(node, Mapping) and "name" in node:
            problem = plugin_problem(kind, node)
            if problem:
                return problem
    problem = layer_problem(cfg)
    if problem:
        return problem
    try:
        model_config(cfg)
    except USER_ERRORS as exc:
        return str(exc)
    return None


def job_problem(cfg: Mapping[str, Any]) -> str | None:
    """The first problem of a resolved job config (options' own values, plugins, layers,
    model record), in one line; ``None`` when the job may start. The options' own values
    come first: their check imports no plugin and no torch."""
    return option_problem(cfg) or plugins_problem(cfg)


def _plain(cfg: DictConfig) -> dict[str, Any] | None:
    """The job's part of ``cfg``, resolved; ``None`` when it cannot be resolved yet (an
    interpolation of Hydra's job-time values): the job then checks itself."""
    try:
        node = OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    except Exception:
        return None
    assert isinstance(node, dict)
    return node


def _refuse(problem: str) -> None:
    print(f"dfmx: error: {problem}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR)


class ConfigCheckCallback(Callback):
    """Refuse a run or sweep whose options a plugin or the job would refuse later."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with job_timer("check"):
            plain = _plain(config)
            problem = job_problem(plain) if plain is not None else None
        if problem:
            _refuse(problem)
        startup_gc.resume()  # the imports are done

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check every job of a basic (grid) sweep; other sweepers' jobs are checked by
        the job itself."""
        self._check_sweep(config)
        startup_gc.resume()  # the imports are done

    def _check_sweep(self, config: DictConfig) -> None:
        from hydra.core.global_hydra import GlobalHydra

        from dfmx.cli.compose import basic_sweep_jobs, compose_checked_job

        sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default="")
        if not str(sweeper).endswith("BasicSweeper"):
            return
        loader = GlobalHydra.instance().config_loader()
        try:
            jobs = basic_sweep_jobs(config, loader)
        except Exception:  # a sweep the basic sweeper refuses: it says why
            return
        common = set(jobs[0]).intersection(*jobs[1:]) if jobs else set()
        checked: list[tuple[str, dict[str, Any] | None]] = []
        # Every job's options' own values first, as a single run's: a bad swept value is
        # refused before any plugin (and torch) is loaded for the jobs before it.
        for number, overrides in enumerate(jobs):
            differing = " ".join(o for o in overrides if o not in common)
            where = f" (sweep job #{number}{': ' if differing else ''}{differing})"
            try:
                job = compose_checked_job(loader, config, overrides)
            except Exception as exc:  # e.g. a swept value of the wrong type
                cause = exc.__cause__
                detail = f": {str(cause).splitlines()[0]}" if cause is not None else ""
                _refuse(f"{str(exc).splitlines()[0]}{detail}{where}")
            plain = _plain(job)
            problem = option_problem(plain) if plain is not None else None
            if problem:
                _refuse(f"{problem}{where}")
            checked.append((where, plain))
        for where, plain in checked:
            problem = plugins_problem(plain) if plain is not None else None
            if problem:
                _refuse(f"{problem}{where}")
