"""The resolved job config of a command line, for use from Python (tests, benchmarks,
notebooks): ``compose_config(["scorer=nll", "pooling.kernel_size=4"])`` is the plain dict
that ``python -m dfmx scorer=nll pooling.kernel_size=4`` hands to ``run_experiment``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dfmx.cli.config_store import register_plugins


def compose_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose dfmx's config tree (installed plugins included) with ``overrides``.

    Returns the resolved config as a plain nested dict, without Hydra's own ``hydra`` node.
    """
    register_plugins()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="dfmx.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    plain.pop("hydra", None)
    return plain
