"""Session fixtures shared by several test folders (keep this file small).

Helpers for tests of the real CLI live beside this file: ``cli_runner`` (running commands
in subprocesses), ``demo_trees`` (small data sets cut from the demo data) and
``mlflow_server`` (a real MLflow server and run queries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import command_env
from demo_trees import tiny_folder_data

from dfmx.data.demo import demo_root

#: Test folders whose files share expensive session fixtures (the CLI runs of
#: ``tests/cli``, the served model of ``tests/serving``): each runs on one xdist worker.
SHARED_FOLDERS = ("cli", "serving")


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``pytest -n`` (pytest-xdist) hands out one test file at a time, or one of
    :data:`SHARED_FOLDERS` whole, so that their session fixtures are made once."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFolderScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            parts = path.split("/")
            if parts[0] == "tests" and len(parts) > 2 and parts[1] in SHARED_FOLDERS:
                return "/".join(parts[:2])
            return path

    return SharedFolderScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def own_default_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test reads or writes the user's dfmx cache: where a test names no cache folder,
    what dfmx keeps by default (prepared backbones, plugin configs, the demo data) goes to
    a folder of the session's."""
    folder = tmp_path_factory.mktemp("default-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFMX_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runs in its own folder: what a library writes relative to the working
    folder (MLflow keeps a new experiment's artifacts in ./mlruns of the process that makes
    it) lands there, not in the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def dfmx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``DFMX_CACHE_DIR`` for the session, holding the generated demo data set.

    Tests that run jobs point ``DFMX_CACHE_DIR`` here, so the demo data is generated once
    (and the feature cache, where there is one, lives here rather than in ``~/.cache``).
    """
    cache = tmp_path_factory.mktemp("dfmx-cache")
    demo_root(cache)
    return cache


@pytest.fixture(scope="session")
def cli_env(dfmx_cache_dir: Path) -> dict[str, str]:
    """The environment of CLI commands that record to MLflow (the tracking and launcher
    tests): the session's cache, synchronous MLflow logging, Hydra's full errors."""
    return command_env(dfmx_cache_dir, MLFLOW_ENABLE_ASYNC_LOGGING="false",
                       HYDRA_FULL_ERROR="1")


@pytest.fixture(scope="session")
def tiny_data(dfmx_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides selecting a 15-image ``data=folder`` set cut from the demo data."""
    return tiny_folder_data(demo_root(dfmx_cache_dir), tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def job_config(dfmx_cache_dir: Path) -> Callable[..., dict[str, Any]]:
    """Builds a resolved job config, as ``python -m dfmx`` hands it to ``run_experiment``.

    ``job_config(backbone="resnet18", pretrained=False, scorer="nll", image_size=64)``:
    ``backbone``/``pretrained``/``layers`` fill the backbone node, ``scorer`` (a name or a
    full node) the scorer node; other keywords replace top-level keys. Defaults: offline
    efficientnet_lite0, FRE, the session's demo data, 128 px, no overlays.
    """
    default_layers = {"efficientnet_lite0": ["blocks.4"]}

    def make(backbone: str = "efficientnet_lite0", pretrained: bool = True,
             layers: list[str] | None = None, scorer: str | dict = "fre",
             **overrides: Any) -> dict[str, Any]:
        cfg = {
            "backbone": {"name": backbone, "arch": backbone, "pretrained": pretrained,
                         "weights": None,
                         "layers": layers or default_layers.get(backbone, ["layer3"])},
            "layer": {"name": "default", "names": []},
            "pooling": {"name": "avg", "kernel_size": 2},
            "scorer": {"name": scorer} if isinstance(scorer, str) else dict(scorer),
            "data": {"name": "demo", "cache_dir": str(dfmx_cache_dir)},
            "pca_level": 0.97, "image_size": 128, "batch_size": 32, "num_workers": 0,
            "precision": "fp32", "device": "cpu", "seed": 0, "save_model": True,
            "overlays": 0, "debug": False,
        }
        cfg.update(overrides)
        return cfg

    return make
