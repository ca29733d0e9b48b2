"""Fixtures for the tracking tests: a real MLflow server (``cli_env`` and ``tiny_data`` are
in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow_server import mlflow_server


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real ``mlflow server`` (127.0.0.1, SQLite store) for the session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri
