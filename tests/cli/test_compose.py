"""Composing configs: each job of a sweep is composed once (``compose_sweep_jobs_once``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.utils import setup_globals
from hydra.plugins.sweeper import Sweeper
from hydra.types import RunMode

from dfmx.cli.compose import compose_checked_job, compose_sweep_jobs_once, share_config_store
from dfmx.cli.config_store import register_plugins, register_resolvers


@pytest.fixture
def loader() -> ConfigLoaderImpl:
    share_config_store()
    register_plugins()
    register_resolvers()
    setup_globals()  # Hydra's ${now:...}, as an app has it
    compose_sweep_jobs_once()
    return ConfigLoaderImpl(config_search_path=create_config_search_path("pkg://dfmx.conf"))


@pytest.fixture
def composed(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The overrides of every composition from here on."""
    calls: list[list[str]] = []
    real = ConfigLoaderImpl.load_configuration

    def counting(self: ConfigLoaderImpl, config_name: str, overrides: list[str],
                 run_mode: RunMode, from_shell: bool = True,
                 validate_sweep_overrides: bool = True) -> object:
        calls.append(list(overrides))
        return real(self, config_name, overrides, run_mode, from_shell,
                    validate_sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting)
    return calls


def test_a_sweep_job_is_composed_once(loader: ConfigLoaderImpl,
                                      composed: list[list[str]]) -> None:
    """dfmx's check composes a job; Hydra's check of the batch passes it and composes
    only the jobs the check did not; the launcher gets each job's config without
    composing, once; a later request composes again. Another sweep's config is its own."""
    master = loader.load_configuration("config", overrides=["image_size=96"],
                                       run_mode=RunMode.MULTIRUN)
    composed.clear()
    checked = compose_checked_job(loader, master, ["scorer=nll"])
    assert len(composed) == 1
    sweeper = SimpleNamespace(hydra_context=SimpleNamespace(config_loader=loader),
                              config=master)
    Sweeper.validate_batch_is_legal(sweeper, [["scorer=nll"], ["scorer=fre"]])
    assert composed[1:] == [["scorer=fre"]]
    assert loader.load_sweep_config(master, ["scorer=nll"]) is checked
    launched = loader.load_sweep_config(master, ["scorer=fre"])
    assert len(composed) == 2 and launched.scorer.name == "fre"
    assert checked.scorer.name == "nll"
    again = loader.load_sweep_config(master, ["scorer=nll"])
    assert len(composed) == 3 and again is not checked and again.scorer == checked.scorer
    loader.load_sweep_config(master.copy(), ["scorer=fre"])  # another sweep: its own
    assert len(composed) == 4


def test_a_checked_job_gets_the_sweep_s_folder(loader: ConfigLoaderImpl) -> None:
    """A job composed by the check, before the sweeper resolves the sweep's folder (its
    time and random suffix), still gets that folder when the launcher asks for it."""
    master = loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
    compose_checked_job(loader, master, ["scorer=nll"])
    folder = master.hydra.sweep.dir  # resolved now, as the basic sweeper does
    assert "${" not in folder and folder.startswith("multirun/")
    launched = loader.load_sweep_config(master, ["scorer=nll"])
    assert launched.hydra.sweep.dir == folder
