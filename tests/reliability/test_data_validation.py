"""Data-layer decisions, in process: which files are skipped, kept, warned about."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from dfmx.data import (
    Sample,
    check_image,
    folder_samples,
    image_to_tensor,
    load_image,
    load_mask,
    mvtec_samples,
    validate_samples,
    validate_split,
    write_skipped_csv,
)
from dfmx.data.sources import FolderData, MVTecData

from . import corpus as c


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "good": c.write_png(tmp_path / "good.png", 1),
        "corrupt": c.write_corrupt_png(tmp_path / "corrupt.png"),
        "truncated": c.write_truncated_png(tmp_path / "truncated.png"),
        "empty": c.write_empty(tmp_path / "empty.png"),
        "text": c.write_text(tmp_path / "text.png"),
        "bomb": c.write_bomb_png(tmp_path / "bomb.png"),
        "cmyk": c.write_mode(tmp_path / "cmyk.jpg", 2, "CMYK"),
        "cmyk_tif": c.write_mode(tmp_path / "cmyk.tif", 3, "CMYK"),
        "palette": c.write_mode(tmp_path / "palette.png", 4, "P"),
    }


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt", "not an image PIL can read"),
        ("truncated", "corrupt image"),
        ("empty", "empty file (0 bytes)"),
        ("text", "not an image PIL can read"),
        ("bomb", "image too large (decompression-bomb limit"),
    ],
)
def test_check_image_gives_reason(files: dict[str, Path], name: str, reason: str) -> None:
    result = check_image(files[name])
    assert isinstance(result, str) and reason in result, result


def test_check_image_missing_file(tmp_path: Path) -> None:
    assert check_image(tmp_path / "nope.png") == "file not found"


@pytest.mark.parametrize("name", ["good", "cmyk", "cmyk_tif", "palette"])
def test_cmyk_and_palette_images_just_work(files: dict[str, Path], name: str) -> None:
    assert check_image(files[name], decode=True) == (c.SIZE, c.SIZE)
    img = load_image(files[name])
    assert img.mode == "RGB" and img.size == (c.SIZE, c.SIZE)
    tensor = image_to_tensor(img, 32)
    assert tensor.shape == (3, 32, 32) and torch.isfinite(tensor).all()


def test_large_image_works_without_a_full_size_tensor(tmp_path: Path) -> None:
    """8000x8000 (64 M pixels, under PIL's bomb limit) loads; it is box-reduced before
    it becomes a float tensor (768 MB otherwise)."""
    path = c.write_large_png(tmp_path / "large.png", side=8000)
    assert check_image(path) == (8000, 8000)
    tensor = image_to_tensor(load_image(path), 64)
    assert tensor.shape == (3, 64, 64)
    assert abs(float(tensor.mean()) - 120 / 255) < 0.02  # the ramp's mean grey


def test_validate_samples_skips_and_keeps_order(files: dict[str, Path]) -> None:
    samples = [Sample(files[n], 0, "good") for n in
               ("good", "corrupt", "cmyk", "empty", "text", "palette", "bomb")]
    good, skipped = validate_samples(samples)
    assert [s.path for s in good] == [files["good"], files["cmyk"], files["palette"]]
    assert [s.path for s in skipped] == [files[n] for n in ("corrupt", "empty", "text", "bomb")]


def test_truncated_png_is_skipped_by_verify(files: dict[str, Path]) -> None:
    good, skipped = validate_samples([Sample(files["truncated"], 0, "good")])
    assert not good and skipped[0].path == files["truncated"]


def test_mask_of_other_size_is_kept_resized_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = c.write_png(tmp_path / "a.png", 1)
    mask = c.write_mask(tmp_path / "a_mask.png", size=2 * c.SIZE)
    with caplog.at_level(logging.WARNING):
        good, skipped = validate_samples([Sample(image, 1, "crack", mask)])
    assert good and not skipped
    assert "differ in size from their image and are resized" in caplog.text
    assert "128x128, image 64x64" in caplog.text
    resized = load_mask(mask, (c.SIZE, c.SIZE))
    assert resized.shape == (1, c.SIZE, c.SIZE) and resized.float().mean() == 0.25


def test_mask_with_other_aspect_ratio_is_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = c.write_png(tmp_path / "a.png", 1)
    mask = tmp_path / "a_mask.png"
    c.texture(0, 32).resize((64, 32)).convert("L").save(mask)
    with caplog.at_level(logging.WARNING):
        validate_samples([Sample(image, 1, "crack", mask)])
    assert "different aspect ratio" in caplog.text


def test_unreadable_mask_skips_its_sample(tmp_path: Path) -> None:
    image = c.write_png(tmp_path / "a.png", 1)
    mask = c.write_empty(tmp_path / "a_mask.png")
    good, skipped = validate_samples([Sample(image, 1, "crack", mask)])
    assert not good
    assert skipped[0].path == mask and "unreadable mask of" in skipped[0].reason


def test_missing_masks_of_one_class_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = c.mvtec_tree(tmp_path, defects={"crack": 2, "scratch": 2})
    for f in (root / "widget" / "ground_truth" / "scratch").iterdir():
        f.unlink()
    test = mvtec_samples(root, "widget", "test")
    with caplog.at_level(logging.WARNING):
        good, _ = validate_samples(test)
    assert len(good) == len(test)
    assert "2 anomalous test image(s) have no ground-truth mask: scratch (2 of 2)" in caplog.text


def test_no_masks_at_all_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without any mask there are no pixel metrics: one warning says so."""
    root = c.mvtec_tree(tmp_path, masks=False)
    with caplog.at_level(logging.WARNING):
        validate_samples(mvtec_samples(root, "widget", "test"))
    assert caplog.text.count("pixel metrics are not computed") == 1, caplog.text


def test_mvtec_orphan_mask_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = c.mvtec_tree(tmp_path)
    c.write_mask(root / "widget" / "ground_truth" / "crack" / "999_mask.png")
    with caplog.at_level(logging.WARNING):
        samples = mvtec_samples(root, "widget", "test")
    assert len(samples) == 6
    assert "1 mask(s) in" in caplog.text and "crack/999_mask.png" in caplog.text


def test_folder_orphan_mask_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    c.folder_tree(tmp_path, n_normal=3, n_abnormal=2)
    c.write_mask(tmp_path / "masks" / "a000_mask.png")
    c.write_mask(tmp_path / "masks" / "zzz_mask.png")
    with caplog.at_level(logging.WARNING):
        samples = folder_samples(None, tmp_path / "abnormal", tmp_path / "masks")
    assert samples[0].mask_path is not None and samples[1].mask_path is None
    assert "1 mask(s) in" in caplog.text and "zzz_mask.png" in caplog.text


def test_validate_split_warns_once_listing_files(
    files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = [Sample(c.write_png(tmp_path / f"t{i}.png", 10 + i), 0, "good") for i in range(3)]
    train += [Sample(files["corrupt"], 0, "good"), Sample(files["empty"], 0, "good")]
    test = [Sample(files["good"], 0, "good"), Sample(files["text"], 1, "crack")]
    with caplog.at_level(logging.WARNING):
        tr, te, skipped = validate_split(train, test)
    assert len(tr) == 3 and len(te) == 1 and len(skipped) == 3
    warnings = [r for r in caplog.records if "unreadable file" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipped 3 unreadable file(s) (2 training, 1 test)" in message
    assert all(str(files[n]) in message for n in ("corrupt", "empty", "text"))


def test_validate_split_stops_when_too_few_remain(files: dict[str, Path]) -> None:
    train = [Sample(files["good"], 0, "good"), Sample(files["corrupt"], 0, "good")]
    with pytest.raises(ValueError, match=r"only 1 usable training image\(s\) in .* after "
                       r"skipping 1 unreadable file\(s\); DFM needs at least 2"):
        validate_split(train, [Sample(files["cmyk"], 0, "good")])


def test_validate_split_stops_when_no_test_image_remains(files: dict[str, Path]) -> None:
    train = [Sample(files["good"], 0, "good"), Sample(files["cmyk"], 0, "good")]
    with pytest.raises(ValueError, match="no usable test image"):
        validate_split(train, [Sample(files["text"], 1, "crack")])


def test_write_skipped_csv(tmp_path: Path) -> None:
    assert write_skipped_csv(tmp_path / "none.csv", []) is None
    assert not (tmp_path / "none.csv").exists()
    path = write_skipped_csv(tmp_path / "s.csv", [(Path("/a/b, c.png"), "empty file")])
    assert path is not None
    with path.open(encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["path", "reason"], ["/a/b, c.png", "empty file"]]


def test_empty_folder_message_names_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "normal"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images in .*normal .*1 other file\(s\): notes.txt"):
        folder_samples(folder)


def test_sources_stop_on_one_training_image(tmp_path: Path) -> None:
    root = c.mvtec_tree(tmp_path / "m", n_train=1)
    with pytest.raises(ValueError, match=r"only 1 training image\(s\) in .*train/good"):
        MVTecData(str(root), "widget").load()
    c.folder_tree(tmp_path / "f", n_normal=2)
    with pytest.raises(ValueError, match=r"after holding out 1 for testing"):
        FolderData(normal_dir=str(tmp_path / "f" / "normal")).load()


def test_check_image_is_remembered_until_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    """A sweep's jobs verify each file once; a rewritten file is verified again."""
    path = tmp_path / "img.png"
    Image.new("RGB", (8, 6)).save(path)
    opened: list[Path] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open",
                        lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    assert check_image(path) == (8, 6) and check_image(path) == (8, 6)
    assert len(opened) == 1
    path.write_bytes(b"not an image at all")
    assert check_image(path).startswith("not an image")
    assert len(opened) == 2
