"""ImageDataset items and the deterministic loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfmx.data import (
    DEMO_CATEGORY,
    ImageDataset,
    default_num_workers,
    make_loader,
    mvtec_samples,
)


@pytest.fixture(scope="module")
def demo_test_samples(demo_dir: Path):
    return mvtec_samples(demo_dir, DEMO_CATEGORY, "test")


def test_item_fields(demo_test_samples) -> None:
    dataset = ImageDataset(demo_test_samples, image_size=(128, 96))
    assert len(dataset) == 50
    good = dataset[0] if demo_test_samples[0].label == 0 else dataset[-1]
    assert good["image"].shape == (3, 128, 96) and good["image"].dtype == torch.float32
    assert good["image"].min() >= 0.0 and good["image"].max() <= 1.0
    assert good["mask"].shape == (1, 128, 96) and good["mask"].dtype == torch.float32
    assert good["mask"].sum() == 0 and good["has_mask"] is False and good["label"] == 0
    index = next(i for i, s in enumerate(demo_test_samples) if s.defect_type == "hole")
    bad = dataset[index]
    assert bad["label"] == 1 and bad["has_mask"] is True
    assert bad["path"] == str(demo_test_samples[index].path)
    assert set(bad["mask"].unique().tolist()) == {0.0, 1.0}
    # The hole is dark: inside the mask the image is much darker than outside.
    inside = bad["image"].mean(0)[bad["mask"][0] > 0]
    outside = bad["image"].mean(0)[bad["mask"][0] == 0]
    assert inside.mean() < outside.mean() - 0.1
    assert dataset.labels == [s.label for s in demo_test_samples]


def test_full_size_matches_file(demo_test_samples) -> None:
    dataset = ImageDataset(demo_test_samples, image_size=256)
    item = dataset[len(dataset) - 1]
    sample = demo_test_samples[-1]
    with Image.open(sample.path) as img:
        pixels = np.array(img.convert("RGB"))
    torch.testing.assert_close(item["image"], torch.from_numpy(pixels).permute(2, 0, 1) / 255.0)
    with Image.open(sample.mask_path) as mask:
        torch.testing.assert_close(item["mask"][0], torch.from_numpy(np.asarray(mask) > 0).float())


def test_bad_interpolation() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        ImageDataset([], interpolation="fancy")


def test_default_num_workers() -> None:
    assert default_num_workers(10, 16) == 0
    assert default_num_workers(16, 16) == 0
    assert default_num_workers(20, 4) == 0  # small set: workers cost more than they save
    assert 1 <= default_num_workers(40, 16) <= 3
    assert 1 <= default_num_workers(10_000, 16) <= 8


def test_loader_order_and_batches(demo_test_samples) -> None:
    dataset = ImageDataset(demo_test_samples[:6], image_size=32)
    loader = make_loader(dataset, batch_size=4)
    assert loader.num_workers == 0
    batches = list(loader)
    assert [len(b["path"]) for b in batches] == [4, 2]
    assert batches[0]["image"].shape == (4, 3, 32, 32)
    assert batches[0]["mask"].shape == (4, 1, 32, 32)
    assert batches[0]["label"].dtype == torch.int64
    assert batches[0]["has_mask"].dtype == torch.bool
    paths = [p for b in batches for p in b["path"]]
    assert paths == [str(s.path) for s in demo_test_samples[:6]]


def test_loader_workers_give_same_batches(demo_test_samples) -> None:
    dataset = ImageDataset(demo_test_samples[:12], image_size=32)
    serial = list(make_loader(dataset, batch_size=4, num_workers=0))
    parallel_loader = make_loader(dataset, batch_size=4, num_workers=2)
    assert parallel_loader.persistent_workers is False
    parallel = list(parallel_loader)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a["path"] == b["path"]
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["mask"], b["mask"])
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(dataset, batch_size=0)
