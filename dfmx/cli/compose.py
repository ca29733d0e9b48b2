"""The resolved job config of a command line, for use from Python (tests, benchmarks,
notebooks): ``compose_config(["scorer=nll", "pooling.kernel_size=4"])`` is the plain dict
that ``python -m dfmx scorer=nll pooling.kernel_size=4`` hands to ``run_experiment``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from dfmx.cli.config_store import register_plugins


def compose_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose dfmx's config tree (installed plugins included) with ``overrides``.

    Returns the resolved config as a plain nested dict, without Hydra's own ``hydra`` node.
    """
    share_config_store()
    register_plugins()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="dfmx.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    plain.pop("hydra", None)
    return plain


def share_config_store() -> None:
    """Let copies of Hydra's config repository share the one ConfigStore.

    Hydra deep-copies its config repository each time it composes or lists a group's
    options, and the repository's structured-config source holds the ConfigStore
    singleton, so every plugin node and Hydra's own launcher configs are copied each
    time (about 80 copies for ``--help``). The copies are never written: the store hands
    out a fresh deep copy of a node on every load. Deep-copying the singleton gives the
    singleton itself.
    """
    ConfigStore.__deepcopy__ = _same_store  # type: ignore[attr-defined]


def _same_store(self: ConfigStore, memo: dict[int, Any]) -> ConfigStore:
    return self


#: Configs of sweep jobs composed before the launcher asks for them (by dfmx's check of
#: the sweep, or by Hydra's check of the batch), by (id of the sweep's config, job
#: overrides); the sweep's config is kept with each (so its id is not reused while the
#: entry lives).
_SWEEP_CONFIGS: OrderedDict[tuple[int, tuple[str, ...]], tuple[DictConfig, DictConfig]] = \
    OrderedDict()
#: Most kept at once (the launcher composes a job whose config was dropped again).
SWEEP_CONFIGS_KEPT = 64
#: Jobs that dfmx's check of the sweep composed, by the same keys, with the sweep's
#: config: Hydra's check of the batch passes them without composing them again.
_CHECKED_JOBS: dict[tuple[int, tuple[str, ...]], DictConfig] = {}


def _key(master_config: DictConfig, overrides: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    return id(master_config), tuple(overrides)


def _keep(master_config: DictConfig, overrides: Sequence[str], config: DictConfig) -> None:
    _SWEEP_CONFIGS[_key(master_config, overrides)] = (master_config, config)
    while len(_SWEEP_CONFIGS) > SWEEP_CONFIGS_KEPT:
        _SWEEP_CONFIGS.popitem(last=False)


def basic_sweep_jobs(master_config: DictConfig, loader: Any) -> list[list[str]]:
    """The override lines of every job of a basic (grid) sweep, as Hydra's basic sweeper
    makes them (``hydra.sweeper.params`` first, then the command line's; every batch).

    Raises what the sweeper would: an unparsable line, a sweep it does not support."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(master_config, "hydra.sweeper.params", default=None) or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    lines += OmegaConf.to_container(master_config.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(lines)
    batch_size = OmegaConf.select(master_config, "hydra.sweeper.max_batch_size", default=None)
    return [job for batch in BasicSweeper.split_arguments(parsed, batch_size) for job in batch]


def compose_checked_job(loader: Any, master_config: DictConfig,
                        overrides: Sequence[str]) -> DictConfig:
    """One job's config of a basic sweep, composed for dfmx's check of the sweep and kept:
    Hydra's check of the batch passes the job, and its launcher gets this config
    (:func:`compose_sweep_jobs_once`). Read it only: the launcher sets the job's id on it."""
    config = loader.load_sweep_config(master_config, list(overrides))
    _keep(master_config, overrides, config)
    _CHECKED_JOBS[_key(master_config, overrides)] = master_config
    return config


def compose_sweep_jobs_once() -> None:
    """Compose each job of a sweep once.

    Hydra's basic sweeper composes every job's config to check the batch
    (``Sweeper.validate_batch_is_legal``), drops them, and its launcher composes each
    again to run it (about 0.1 s a job); dfmx's check of a sweep composes every job
    before either (:func:`compose_checked_job`). Patched here: the check of the batch
    passes a job that dfmx's check composed, and composes and keeps the others; the
    launcher's request for a kept job gets that config (:data:`SWEEP_CONFIGS_KEPT` at
    most are kept), once, with the sweep's resolver values copied in as a composition
    would have them then, and sets the job's id and number on it; any other request
    composes.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.plugins.sweeper import Sweeper

    if getattr(ConfigLoaderImpl.load_sweep_config, "_dfmx_once", False):
        return
    compose = ConfigLoaderImpl.load_sweep_config

    def load_sweep_config(self: ConfigLoaderImpl, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        kept = _SWEEP_CONFIGS.pop(_key(master_config, sweep_overrides), None)
        if kept is None:
            return compose(self, master_config, sweep_overrides)
        # As composed now: the resolver values the sweep has so far (its folder's time
        # and suffix, resolved after dfmx's check), as Hydra copies them into a job.
        OmegaConf.copy_cache(from_config=master_config, to_config=kept[1])
        return kept[1]

    def validate_batch_is_legal(self: Sweeper, batch: Sequence[Sequence[str]]) -> None:
        context = getattr(self, "hydra_context", None)
        loader = context.config_loader if context is not None else self.config_loader
        master = self.config  # type: ignore[attr-defined]
        for overrides in batch:
            if _CHECKED_JOBS.pop(_key(master, overrides), None) is None:
                _keep(master, overrides, loader.load_sweep_config(master, list(overrides)))

    load_sweep_config._dfmx_once = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]
    Sweeper.validate_batch_is_legal = validate_batch_is_legal  # type: ignore[method-assign]
