"""Image and mask loading: every PIL mode to RGB, EXIF orientation, errors, resizing."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from dfmx.data.images import (
    INTERPOLATIONS,
    ImageLoadError,
    image_to_tensor,
    load_image,
    load_mask,
    pil_to_rgb,
    resize_image,
)


def _rgb(path: Path) -> np.ndarray:
    img = load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def _grey_expected(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "a.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "a.png"), pixels)


def test_l_and_1_modes(tmp_path: Path) -> None:
    grey = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "l.png"), _grey_expected(grey))
    bits = grey > 100
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(
        _rgb(tmp_path / "b.png"), _grey_expected(bits.astype(np.uint8) * 255)
    )


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 1000, 32768, 65535, 65535 - 300]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "w.png")
    with Image.open(tmp_path / "w.png") as img:
        assert img.mode in ("I;16", "I")
    expected = np.rint(values / 65535.0 * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(_rgb(tmp_path / "w.png"), _grey_expected(expected))
    assert expected.tolist() == [[0, 1, 4, 128, 255, 254]]


def _tiff_12_bit(values: np.ndarray) -> bytes:
    """A minimal uncompressed greyscale TIFF with 12 bits per sample (MSB-first packing)."""
    height, width = values.shape
    data = bytearray()
    for row in values.tolist():
        for a, b in zip(row[0::2], row[1::2], strict=True):
            data += bytes([a >> 4, ((a & 0xF) << 4) | (b >> 8), b & 0xFF])
    short, long_ = 3, 4
    entries = [
        (256, short, width),  # ImageWidth
        (257, short, height),  # ImageLength
        (258, short, 12),  # BitsPerSample
        (259, short, 1),  # Compression: none
        (262, short, 1),  # PhotometricInterpretation: black is zero
        (273, long_, 8 + 2 + 12 * 9 + 4),  # StripOffsets: right after the IFD
        (277, short, 1),  # SamplesPerPixel
        (278, short, height),  # RowsPerStrip
        (279, long_, len(data)),  # StripByteCounts
    ]
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, value in entries:
        fmt = "<HHIHH" if kind == short else "<HHII"
        out += struct.pack(fmt, tag, kind, 1, value, *((0,) if kind == short else ()))
    return bytes(out + struct.pack("<I", 0) + data)


def test_16_bit_tiff_and_declared_12_bit_depth(tmp_path: Path) -> None:
    values = np.array([[0, 4095, 2048, 100]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "w16.tif")
    expected16 = np.rint(values / 65535.0 * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(_rgb(tmp_path / "w16.tif"), _grey_expected(expected16))
    (tmp_path / "w12.tif").write_bytes(_tiff_12_bit(values))
    with Image.open(tmp_path / "w12.tif") as check:
        assert check.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(check), values)  # raw 12-bit values
    expected12 = np.rint(values / 4095.0 * 255.0).astype(np.uint8)
    assert expected12.tolist() == [[0, 255, 128, 6]]
    np.testing.assert_array_equal(_rgb(tmp_path / "w12.tif"), _grey_expected(expected12))


def test_32_bit_integer_tiff(tmp_path: Path) -> None:
    values = np.array([[0, 2**31 - 1, 2**30, -5]], dtype=np.int32)
    Image.fromarray(values, "I").save(tmp_path / "i.tif")
    expected = np.rint(np.clip(values, 0, None) / (2**32 - 1) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(_rgb(tmp_path / "i.tif"), _grey_expected(expected))


def test_mode_i_in_memory_uses_16_bit_range() -> None:
    img = Image.fromarray(np.array([[0, 65535, 257]], dtype=np.int32), "I")
    out = np.asarray(pil_to_rgb(img))
    assert out[0, :, 0].tolist() == [0, 255, 1]


def test_float_tiff_in_unit_range(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    expected = np.rint(values * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(_rgb(tmp_path / "f.tif"), _grey_expected(expected))


def test_float_in_8_and_16_bit_range() -> None:
    eight = Image.fromarray(np.array([[0.0, 128.0, 255.0]], dtype=np.float32), "F")
    assert np.asarray(pil_to_rgb(eight))[0, :, 1].tolist() == [0, 128, 255]
    sixteen = Image.fromarray(np.array([[0.0, 65535.0, 257.0]], dtype=np.float32), "F")
    assert np.asarray(pil_to_rgb(sixteen))[0, :, 2].tolist() == [0, 255, 1]


def test_rgba_and_la_composited_on_black(tmp_path: Path) -> None:
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    expected = [[[200, 100, 50], [0, 0, 0], [100, 50, 25]]]
    assert _rgb(tmp_path / "rgba.png").tolist() == expected
    la = np.array([[[240, 255], [240, 0], [240, 64]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert _rgb(tmp_path / "la.png")[0, :, 0].tolist() == [240, 0, 60]


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    img = Image.fromarray(np.array([[0, 1, 2, 1]], dtype=np.uint8), "P")
    img.putpalette(palette)
    img.save(tmp_path / "p.png")
    assert _rgb(tmp_path / "p.png").tolist() == [
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 0]]
    ]
    img.save(tmp_path / "pt.png", transparency=1)
    with Image.open(tmp_path / "pt.png") as check:
        assert check.mode == "P" and "transparency" in check.info
    assert _rgb(tmp_path / "pt.png").tolist() == [[[255, 0, 0], [0, 0, 0], [0, 0, 255], [0, 0, 0]]]


def test_cmyk_tiff(tmp_path: Path) -> None:
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 255, 255, 0]]], np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    expected = [[[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]]]
    assert _rgb(tmp_path / "c.tif").tolist() == expected


def test_ycbcr_matches_pil_conversion() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    ycc = Image.fromarray(pixels, "RGB").convert("YCbCr")
    out = pil_to_rgb(ycc)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ycc.convert("RGB")))
    assert np.abs(np.asarray(out).astype(int) - pixels).max() <= 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path: Path, orientation: int) -> None:
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 2
    img = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.png", exif=exif.tobytes())
    with Image.open(tmp_path / "o.png") as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
    out = _rgb(tmp_path / "o.png")
    np.testing.assert_array_equal(out, expected)
    assert out.shape == ((6, 4, 3) if orientation >= 5 else (4, 6, 3))


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an image\n", _png_bytes()[:300], _png_bytes()[:60]],
    ids=["empty", "text", "truncated", "header-only"],
)
@pytest.mark.parametrize("loader", [load_image, lambda p: load_mask(p, 8)], ids=["image", "mask"])
def test_bad_files_raise_image_load_error(tmp_path: Path, content: bytes, loader) -> None:
    path = tmp_path / "broken file.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=r"broken file\.png") as info:
        loader(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_image(tmp_path / "nope.png")


def test_mask_nearest_resize_stays_binary(tmp_path: Path) -> None:
    values = np.zeros((4, 4), dtype=np.uint8)
    values[1, 2] = 255
    values[3, 0] = 1  # any nonzero value is a defect
    Image.fromarray(values, "L").save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png", (8, 12))
    assert mask.dtype == torch.bool and mask.shape == (1, 8, 12)
    expected = np.kron(values > 0, np.ones((2, 3), dtype=bool))
    np.testing.assert_array_equal(mask[0].numpy(), expected)
    small = load_mask(tmp_path / "m.png", 2)
    assert small.shape == (1, 2, 2) and small.dtype == torch.bool
    assert load_mask(tmp_path / "m.png").shape == (1, 4, 4)


def test_mask_modes(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 1, 2] = 9  # blue only
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    assert load_mask(tmp_path / "rgb.png")[0].tolist() == [[False, True, False], [False] * 3]
    wide = np.array([[0, 300, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    assert load_mask(tmp_path / "w.png")[0].tolist() == [[False, True, True]]
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque black: no defect, alpha ignored
    rgba[0, 1, 0] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_mask(tmp_path / "a.png")[0].tolist() == [[False, True]]


def test_image_to_tensor_shapes_and_range() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB")
    same = image_to_tensor(img)
    assert same.dtype == torch.float32 and same.shape == (3, 40, 60)
    torch.testing.assert_close(same, torch.from_numpy(pixels).permute(2, 0, 1) / 255.0)
    for interpolation in INTERPOLATIONS:
        out = image_to_tensor(img, (20, 30), interpolation)
        assert out.shape == (3, 20, 30), interpolation
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert image_to_tensor(img, 32, "bicubic").shape == (3, 32, 32)
    grey = image_to_tensor(Image.fromarray(pixels[..., 0], "L"), (10, 10))
    assert grey.shape == (3, 10, 10)
    with pytest.raises(ValueError, match="interpolation"):
        image_to_tensor(img, 16, "cubic")


def test_image_to_tensor_antialias_switch() -> None:
    noise = np.random.default_rng(4).integers(0, 256, (64, 64), dtype=np.uint8)
    img = Image.fromarray(noise, "L")
    smooth = image_to_tensor(img, 16, "bilinear")
    aliased = image_to_tensor(img, 16, "bilinear", antialias=False)
    assert smooth.std() < 0.5 * aliased.std()
    torch.testing.assert_close(smooth.mean(), aliased.mean(), atol=0.03, rtol=0)


@pytest.mark.parametrize(("interpolation", "pil_filter"),
                         [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_resize_image_stays_8_bit_and_matches_pil(interpolation, pil_filter) -> None:
    """The uint8 resize is PIL's (and timm's evaluation transform's) to within 1/255,
    shrinking and enlarging, even on noise where a saturating pass matters."""
    pixels = np.random.default_rng(5).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB")
    for size in ((32, 40), (120, 150)):
        out = resize_image(img, size, interpolation)
        assert out.dtype == torch.uint8 and out.shape == (3, *size)
        expected = np.asarray(img.resize(size[::-1], pil_filter)).astype(int)
        assert np.abs(out.permute(1, 2, 0).numpy().astype(int) - expected).max() <= 1
    area = resize_image(img, (45, 35), "area")
    assert area.dtype == torch.uint8
    assert torch.equal(area, torch.from_numpy(pixels.reshape(45, 2, 35, 2, 3).mean(axis=(1, 3))
                                              .round().astype(np.uint8)).permute(2, 0, 1))
    torch.testing.assert_close(image_to_tensor(img, (32, 40), interpolation),
                               resize_image(img, (32, 40), interpolation).float() / 255)
