"""The resolved job config of a command line, for use from Python (tests, benchmarks,
notebooks): ``compose_config(["scorer=nll", "pooling.kernel_size=4"])`` is the plain dict
that ``python -m dfmx scorer=nll pooling.kernel_size=4`` hands to ``run_experiment``."""

from __future__ import annotations

import copy
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


#: Sweep configs composed by a sweeper's check of its batch, kept for the launcher, by
#: (id of the sweep's config, job overrides); the sweep's config is kept with each (so
#: its id is not reused while the entry lives).
_SWEEP_CONFIGS: OrderedDict[tuple[int, tuple[str, ...]], tuple[DictConfig, DictConfig]] = \
    OrderedDict()
#: Most kept at once (a batch larger than this has its later jobs composed again).
SWEEP_CONFIGS_KEPT = 64


def compose_sweep_jobs_once() -> None:
    """Compose each job of a sweep once, not twice.

    Hydra's basic sweeper composes every job's config to check the batch
    (``Sweeper.validate_batch_is_legal``), drops them, and its launcher composes each
    again to run it (about 0.2 s a job). The first composition of a job's overrides
    against the sweep's config is kept (:data:`SWEEP_CONFIGS_KEPT` at most) and handed
    out, once, to the next request for the same: the launcher's, which sets the job's id
    and number on it.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    if getattr(ConfigLoaderImpl.load_sweep_config, "_dfmx_once", False):
        return
    compose = ConfigLoaderImpl.load_sweep_config

    def load_sweep_config(self: ConfigLoaderImpl, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        kept = _SWEEP_CONFIGS.pop(key, None)
        if kept is not None:
            return kept[1]
        config = compose(self, master_config, sweep_overrides)
        _SWEEP_CONFIGS[key] = (master_config, copy.deepcopy(config))
        while len(_SWEEP_CONFIGS) > SWEEP_CONFIGS_KEPT:
            _SWEEP_CONFIGS.popitem(last=False)
        return config

    load_sweep_config._dfmx_once = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]
