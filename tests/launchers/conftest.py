"""Fixtures for the launcher tests (helpers shared with ``tests/tracking``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))

from dfmx_test_cli import base_env, tiny_folder_data

from dfmx.data.demo import demo_root


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for CLI subprocesses (demo set generated once per session)."""
    cache = tmp_path_factory.getbasetemp() / "dfmx-cli-cache"
    demo_root(cache)
    return base_env(cache)


@pytest.fixture(scope="session")
def tiny_data(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides selecting a 15-image ``data=folder`` set cut from the demo data."""
    return tiny_folder_data(demo_root(cli_env["DFMX_CACHE_DIR"]),
                            tmp_path_factory.mktemp("tiny-data"))
