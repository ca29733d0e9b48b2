"""Shared fixtures of the benchmark suites."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
