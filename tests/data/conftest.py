"""Fixtures for the data tests: one generated demo set per session, the MVTec AD path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfmx.data.demo import demo_root

# <repo>/tests/data/conftest.py → <repo>/../shared/data/mvtec_ad
MVTEC_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_ad"


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding one complete, generated demo set."""
    cache = tmp_path_factory.mktemp("dfmx-cache")
    demo_root(cache)
    return cache


@pytest.fixture(scope="session")
def demo_dir(demo_cache: Path) -> Path:
    """The demo root (the folder that holds ``demo/``)."""
    return demo_root(demo_cache)


@pytest.fixture
def mvtec_root() -> Path:
    """The shared MVTec AD folder; skips the test when it is absent."""
    if not (MVTEC_ROOT / "bottle").is_dir():
        pytest.skip(f"MVTec AD bottle data not found at {MVTEC_ROOT}")
    return MVTEC_ROOT
