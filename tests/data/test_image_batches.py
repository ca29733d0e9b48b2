"""Decoded uint8 batches: order, chunking, threads, GPU-style prefetch and the image cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import dfmx.data.batches as batches_module
from dfmx.data import DEMO_CATEGORY, ImageDataset, ImageLoadError, Sample, mvtec_samples
from dfmx.data.batches import image_batches, image_key
from dfmx.features.cache import FeatureCache


@pytest.fixture
def samples(demo_dir: Path) -> list[Sample]:
    return mvtec_samples(demo_dir, DEMO_CATEGORY, "test")[:11]


def _expected(samples: list[Sample], size: int) -> torch.Tensor:
    """The same images through the torch Dataset API, back in 8 bits."""
    dataset = ImageDataset(samples, image_size=size, interpolation="bicubic")
    return torch.stack([(dataset[i]["image"] * 255).round().to(torch.uint8)
                        for i in range(len(dataset))])


@pytest.mark.parametrize(("workers", "overlap"), [(0, False), (2, False), (2, True)])
def test_batches_in_order_across_chunks(samples, monkeypatch, workers, overlap) -> None:
    monkeypatch.setattr(batches_module, "CHUNK_IMAGES", 5)  # batch 2 -> chunks of 6
    out = list(image_batches(samples, 32, "bicubic", 2, workers=workers, overlap=overlap))
    assert [b.shape[0] for b in out] == [2, 2, 2, 2, 2, 1]
    assert all(b.dtype == torch.uint8 and b.shape[1:] == (3, 32, 32) for b in out)
    assert torch.equal(torch.cat(out), _expected(samples, 32))


def test_unreadable_image_names_the_file(samples, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bad = [*samples[:3], Sample(path=broken, label=0, defect_type="good", mask_path=None)]
    with pytest.raises(ImageLoadError, match=r"broken\.png"):
        list(image_batches(bad, 32, "bilinear", 2, workers=2))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        list(image_batches([], 32, "bilinear", 0))
    with pytest.raises(ValueError, match="interpolation"):
        list(image_batches([], 32, "cubic", 4))


def test_decoded_chunks_are_reused_from_the_store(samples, tmp_path, monkeypatch) -> None:
    """A second pass reads 8-bit pixels from the cache instead of decoding; a rewritten
    file changes the key of its chunk only."""
    monkeypatch.setattr(batches_module, "CHUNK_IMAGES", 4)
    copies = []
    for s in samples:
        dst = tmp_path / "imgs" / s.path.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy2(s.path, dst)
        copies.append(Sample(path=dst, label=s.label, defect_type=s.defect_type,
                             mask_path=None))
    store = FeatureCache(tmp_path / "cache")
    first = torch.cat(list(image_batches(copies, 32, "bicubic", 4, store=store)))
    assert len(store.entries()) == 3  # 11 images in chunks of 4

    decoded: list[Path] = []
    real = batches_module.decode_image

    def counting(path, *args, **kwargs):
        decoded.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(batches_module, "decode_image", counting)
    second = torch.cat(list(image_batches(copies, 32, "bicubic", 4, store=store)))
    assert decoded == [] and torch.equal(first, second)

    st = os.stat(copies[5].path)
    os.utime(copies[5].path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = torch.cat(list(image_batches(copies, 32, "bicubic", 4, store=store)))
    assert decoded == [c.path for c in copies[4:8]]  # only the touched file's chunk
    assert torch.equal(first, third)
    assert image_key([c.path for c in copies[:4]], (32, 32), "bicubic") != image_key(
        [c.path for c in copies[:4]], (32, 32), "bilinear")


def test_bad_arguments_are_refused_at_the_call_not_the_first_batch(samples) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        image_batches(samples, 32, "bilinear", 0)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        image_batches(samples, 32, "sinc", 4)
