"""Shared fixtures of the benchmark suites."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Benchmarks run in one process, whatever ``-n`` the test settings add: they time
    against the machine's idle cores, print their figures (``-s``; xdist workers' output is
    not shown) and pytest-benchmark turns itself off under xdist."""
    if getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0
        config.option.dist = "no"


def mvtec_root() -> Path | None:
    """MVTec AD root: $DFMX_MVTEC_ROOT, else ../shared/data/mvtec_ad beside the checkout."""
    candidate = Path(os.environ.get("DFMX_MVTEC_ROOT", REPO.parent / "shared/data/mvtec_ad"))
    return candidate if (candidate / "bottle" / "train" / "good").is_dir() else None


@pytest.fixture(scope="session")
def bottle_root() -> Path:
    root = mvtec_root()
    if root is None:
        pytest.skip("MVTec AD bottle data not found (set DFMX_MVTEC_ROOT or provide ../shared)")
    return root
