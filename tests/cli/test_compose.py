"""Composing configs: a sweep's jobs are composed once (``compose_sweep_jobs_once``)."""

from __future__ import annotations

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode

from dfmx.cli.compose import compose_sweep_jobs_once, share_config_store
from dfmx.cli.config_store import register_plugins


def test_a_sweep_job_is_composed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweeper's check of the batch composes a job; the launcher's request for the
    same job gets that config (a copy, composed once), and a later request composes
    again. Other overrides, or another sweep config, are composed on their own."""
    share_config_store()
    register_plugins()
    compose_sweep_jobs_once()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path("pkg://dfmx.conf"))
    master = loader.load_configuration("config", overrides=["image_size=96"],
                                       run_mode=RunMode.MULTIRUN)
    composed: list[list[str]] = []
    real = ConfigLoaderImpl.load_configuration

    def counting(self: ConfigLoaderImpl, config_name: str, overrides: list[str],
                 run_mode: RunMode, from_shell: bool = True,
                 validate_sweep_overrides: bool = True) -> object:
        composed.append(list(overrides))
        return real(self, config_name, overrides, run_mode, from_shell,
                    validate_sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting)
    checked = loader.load_sweep_config(master, ["scorer=nll"])
    launched = loader.load_sweep_config(master, ["scorer=nll"])
    assert len(composed) == 1
    assert launched is not checked and launched == checked
    assert launched.scorer.name == "nll"
    other = loader.load_sweep_config(master, ["scorer=fre"])
    assert len(composed) == 2 and other.scorer.name == "fre"
    again = loader.load_sweep_config(master, ["scorer=nll"])
    assert len(composed) == 3 and again == checked
    loader.load_sweep_config(master.copy(), ["scorer=fre"])  # another sweep: its own
    assert len(composed) == 4
