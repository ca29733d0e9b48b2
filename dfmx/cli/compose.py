"""The resolved job config of a command line, for use from Python (tests, benchmarks,
notebooks): ``compose_config(["scorer=nll", "pooling.kernel_size=4"])`` is the plain dict
that ``python -m dfmx scorer=nll pooling.kernel_size=4`` hands to ``run_experiment``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

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
