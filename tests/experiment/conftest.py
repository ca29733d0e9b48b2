"""Shared inputs of the report-file tests: a tiny synthetic run on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

N, SIZE = 6, 32
LABELS = np.array([0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5])
THRESHOLD = 0.5
DEFECTS = ["good", "good", "good", "crack", "hole", "crack"]


@pytest.fixture()
def run(tmp_path: Path) -> dict:
    """A tiny synthetic run: 6 RGB images on disk, random maps, square masks on anomalies."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    paths = []
    for i in range(N):
        arr = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        p = img_dir / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    maps = rng.random((N, SIZE, SIZE)).astype(np.float32)
    masks = np.zeros((N, SIZE, SIZE), bool)
    masks[LABELS == 1, 8:20, 10:22] = True
    return {"paths": paths, "maps": maps, "masks": masks, "out": tmp_path / "out"}


def _check_png(path: Path, min_bytes: int = 2000) -> None:
    assert path.is_file()
    assert path.stat().st_size > min_bytes
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 100 and im.size[1] > 100
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


@pytest.fixture()
def assert_png() -> Callable[..., None]:
    """Checks that a path holds a real PNG (larger than ``min_bytes``, over 100 px a side)
    and that no temporary file was left beside it."""
    return _check_png
