"""Sample lists: MVTec AD layout, plain folders, the train/test split and error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfmx.data import DEMO_CATEGORY, Sample, folder_samples, folder_split, mvtec_samples


def _write_png(path: Path, value: int = 128, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8), "RGB").save(path)
    return path


def _write_mask(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.zeros((size, size), dtype=np.uint8)
    values[2:4, 2:5] = 255
    Image.fromarray(values, "L").save(path)
    return path


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Path:
    """<root>/widget with 3 train images, 2 good + 2 crack + 1 dent test images."""
    category = tmp_path / "mvtec" / "widget"
    for name in ("002.png", "000.png", "001.png"):
        _write_png(category / "train" / "good" / name)
    (category / "train" / "good" / "notes.txt").write_text("not an image")
    (category / "train" / "good" / ".hidden.png").write_bytes(b"")
    for name in ("000.png", "001.png"):
        _write_png(category / "test" / "good" / name)
        _write_png(category / "test" / "crack" / name, 30)
        _write_mask(category / "ground_truth" / "crack" / name.replace(".png", "_mask.png"))
    _write_png(category / "test" / "dent" / "000.png", 60)  # mask missing on purpose
    (category / "ground_truth" / "dent").mkdir(parents=True)
    return tmp_path / "mvtec"


def test_mvtec_train(tiny_mvtec: Path) -> None:
    train = mvtec_samples(tiny_mvtec, "widget", "train")
    good = tiny_mvtec / "widget" / "train" / "good"
    assert train == [Sample(good / f"00{i}.png", 0, "good", None) for i in range(3)]


def test_mvtec_test(tiny_mvtec: Path) -> None:
    test = mvtec_samples(str(tiny_mvtec), "widget", "test")
    category = tiny_mvtec / "widget"
    assert [(s.path.relative_to(category).as_posix(), s.label, s.defect_type) for s in test] == [
        ("test/crack/000.png", 1, "crack"),
        ("test/crack/001.png", 1, "crack"),
        ("test/dent/000.png", 1, "dent"),
        ("test/good/000.png", 0, "good"),
        ("test/good/001.png", 0, "good"),
    ]
    assert test[0].mask_path == category / "ground_truth" / "crack" / "000_mask.png"
    assert test[1].mask_path == category / "ground_truth" / "crack" / "001_mask.png"
    assert test[2].mask_path is None
    assert all(s.mask_path is None for s in test if s.label == 0)
    assert mvtec_samples(tiny_mvtec, "widget", "test") == test  # deterministic


def test_mvtec_errors(tiny_mvtec: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="root folder not found") as info:
        mvtec_samples(tmp_path / "missing", "widget", "train")
    assert str(tmp_path / "missing") in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"category 'gizmo'.*\['widget'\]"):
        mvtec_samples(tiny_mvtec, "gizmo", "train")
    with pytest.raises(ValueError, match="split must be"):
        mvtec_samples(tiny_mvtec, "widget", "validation")
    for path in (tiny_mvtec / "widget" / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"no training images in .*good"):
        mvtec_samples(tiny_mvtec, "widget", "train")
    (tiny_mvtec / "widget" / "train" / "good").rmdir()
    with pytest.raises(FileNotFoundError, match=r"expected train/good"):
        mvtec_samples(tiny_mvtec, "widget", "train")
    _write_png(tiny_mvtec / "other" / "train" / "good" / "000.png")
    with pytest.raises(FileNotFoundError, match=r"'test' folder .*not found.*other"):
        mvtec_samples(tiny_mvtec, "other", "test")


def test_mvtec_layout_of_demo(demo_dir: Path) -> None:
    train = mvtec_samples(demo_dir, DEMO_CATEGORY, "train")
    test = mvtec_samples(demo_dir, DEMO_CATEGORY, "test")
    assert len(train) == 60 and all(s.label == 0 for s in train)
    counts = {t: sum(s.defect_type == t for s in test) for t in {s.defect_type for s in test}}
    assert counts == {"good": 20, "hole": 10, "scratch": 10, "stain": 10}
    assert all((s.mask_path is not None) == (s.label == 1) for s in test)
    assert all(s.mask_path.is_file() for s in test if s.mask_path is not None)


@pytest.mark.mvtec
def test_mvtec_bottle_counts(mvtec_root: Path) -> None:
    train = mvtec_samples(mvtec_root, "bottle", "train")
    test = mvtec_samples(mvtec_root, "bottle", "test")
    assert len(train) == 209
    assert sum(s.label == 0 for s in test) == 20
    defective = [s for s in test if s.label == 1]
    assert len(defective) == 63
    assert {s.defect_type for s in defective} == {"broken_large", "broken_small", "contamination"}
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in defective)


@pytest.fixture
def plain_folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    normal, abnormal, masks = tmp_path / "ok", tmp_path / "scratched", tmp_path / "masks"
    for i in range(10):
        _write_png(normal / f"n{i:02d}.png")
    _write_png(normal / "upper.JPG")
    (normal / "readme.md").write_text("skip me")
    for name in ("a", "b", "c"):
        _write_png(abnormal / f"{name}.png", 20)
    _write_mask(masks / "a_mask.png")
    _write_mask(masks / "b.png")
    return normal, abnormal, masks


def test_folder_samples_without_masks(plain_folders: tuple[Path, Path, Path]) -> None:
    normal, abnormal, _ = plain_folders
    samples = folder_samples(normal, abnormal)
    names = [s.path.name for s in samples]
    assert names == [*(f"n{i:02d}.png" for i in range(10)), "upper.JPG", "a.png", "b.png", "c.png"]
    assert [s.label for s in samples] == [0] * 11 + [1] * 3
    assert {s.defect_type for s in samples[11:]} == {"scratched"}
    assert all(s.mask_path is None for s in samples)
    assert len(folder_samples(normal)) == 11
    assert len(folder_samples(normal, extensions=("png",))) == 10


def test_folder_samples_with_masks(plain_folders: tuple[Path, Path, Path]) -> None:
    normal, abnormal, masks = plain_folders
    by_name = {s.path.name: s for s in folder_samples(normal, abnormal, masks)}
    assert by_name["a.png"].mask_path == masks / "a_mask.png"
    assert by_name["b.png"].mask_path == masks / "b.png"
    assert by_name["c.png"].mask_path is None
    assert by_name["n00.png"].mask_path is None


def test_folder_errors(plain_folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    normal, abnormal, _ = plain_folders
    with pytest.raises(FileNotFoundError, match=r"normal image folder not found.*nowhere"):
        folder_samples(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="abnormal image folder not found"):
        folder_samples(normal, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="mask folder not found"):
        folder_samples(normal, abnormal, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no images .*empty"):
        folder_samples(empty)
    with pytest.raises(ValueError, match="normal_dir or abnormal_dir"):
        folder_samples(None)


def test_folder_split_holds_out_normals(plain_folders: tuple[Path, Path, Path]) -> None:
    normal, abnormal, masks = plain_folders
    train, test = folder_split(normal, abnormal, masks, normal_test_fraction=0.3, seed=1)
    assert len(train) == 8 and len(test) == 3 + 3
    assert all(s.label == 0 for s in train)
    assert [s.label for s in test] == [0, 0, 0, 1, 1, 1]
    assert not {s.path for s in train} & {s.path for s in test}
    assert train == [s for s in folder_samples(normal) if s in train]  # original order
    again = folder_split(normal, abnormal, masks, normal_test_fraction=0.3, seed=1)
    assert again == (train, test)
    held = {s.path for s in test if s.label == 0}
    other_seeds = [
        {s.path for s in folder_split(normal, normal_test_fraction=0.3, seed=k)[1]}
        for k in range(2, 8)
    ]
    assert any(h != held for h in other_seeds)


def test_folder_split_options(plain_folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    normal, abnormal, _ = plain_folders
    train, test = folder_split(normal, normal_test_fraction=0.0)
    assert len(train) == 11 and test == []
    train, test = folder_split(normal, normal_test_fraction=0.01)
    assert len(train) == 10 and len(test) == 1  # a positive fraction holds out at least one
    extra = tmp_path / "extra_ok"
    _write_png(extra / "t0.png")
    train, test = folder_split(normal, abnormal, test_normal_dir=extra)
    assert len(train) == 11
    assert [(s.path.name, s.label) for s in test] == [
        ("t0.png", 0),
        ("a.png", 1),
        ("b.png", 1),
        ("c.png", 1),
    ]
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="normal_test_fraction"):
            folder_split(normal, normal_test_fraction=bad)
    single = tmp_path / "single"
    _write_png(single / "only.png")
    with pytest.raises(ValueError, match="leaves none for training"):
        folder_split(single, normal_test_fraction=0.5)
