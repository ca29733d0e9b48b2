"""Fixtures for the serving tests: one fitted model logged to a SQLite store, served by a
real ``mlflow models serve`` process on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import warm_cache
from served_model import LoggedModel, Server, log_small_model, serve

from dfmx.data.demo import demo_root


@pytest.fixture(scope="session")
def logged_model(tmp_path_factory: pytest.TempPathFactory) -> LoggedModel:
    """A small model (offline EfficientNet-Lite0, 128 px, 8 demo images) fitted by
    ``python -m dfmx`` and logged as a pyfunc model."""
    cache = warm_cache(tmp_path_factory.mktemp("serving") / "cache")
    return log_small_model(cache, demo_root(cache), tmp_path_factory.mktemp("serving-job"))


@pytest.fixture(scope="session")
def server(logged_model: LoggedModel, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    """``mlflow models serve -m models:/...`` of :func:`logged_model`, one worker."""
    with serve(logged_model, tmp_path_factory.mktemp("serving-server")) as running:
        yield running


@pytest.fixture(scope="session")
def demo_images(logged_model: LoggedModel) -> list[Path]:
    """Two good and two defective demo test images."""
    test = logged_model.data_root / "demo" / "test"
    return [*sorted((test / "good").glob("*.png"))[:2],
            *sorted((test / "hole").glob("*.png"))[:1],
            *sorted((test / "stain").glob("*.png"))[:1]]
