"""Fixtures for the tracking tests: one demo set per session, small folder data, a real
MLflow server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dfmx_test_cli import base_env, mlflow_server, tiny_folder_data

from dfmx.data.demo import demo_root


@pytest.fixture(scope="session")
def dfmx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$DFMX_CACHE_DIR`` for every CLI job of the session (demo set generated once)."""
    cache = tmp_path_factory.getbasetemp() / "dfmx-cli-cache"
    demo_root(cache)
    return cache


@pytest.fixture(scope="session")
def cli_env(dfmx_cache: Path) -> dict[str, str]:
    """Environment for CLI subprocesses."""
    return base_env(dfmx_cache)


@pytest.fixture(scope="session")
def tiny_data(dfmx_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides selecting a 15-image ``data=folder`` set cut from the demo data."""
    return tiny_folder_data(demo_root(dfmx_cache), tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real ``mlflow server`` (127.0.0.1, SQLite store) for the session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri
