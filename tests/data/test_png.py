"""The fast PNG path: same pixels as PIL where it applies, PIL everywhere else.

Every test runs with each decoder: imgread (the ``fastpng`` extra, which the ``test`` extra
installs where imgread has wheels) and libpng, forced by hiding imgread even where it is
installed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfmx.data import png
from dfmx.data.batches import decode_image
from dfmx.data.images import LARGE_IMAGE_PIXELS, ImageLoadError, load_image, resize_image
from dfmx.data.png import decode_plain_png

RNG = np.random.default_rng(7)
# Smooth content, so that PNG's adaptive filters (Sub, Up, Average, Paeth) all occur.
_RAMP = np.add.outer(np.arange(61), 2 * np.arange(83)).astype(np.uint8)
RGB = np.stack([_RAMP, _RAMP[::-1], 255 - _RAMP], axis=2) + RNG.integers(0, 4, (61, 83, 3),
                                                                           dtype=np.uint8)
GREY = RGB[..., 1].copy()


@pytest.fixture(autouse=True, params=["imgread", "libpng"])
def png_decoder(request, monkeypatch) -> str:
    if request.param == "libpng":
        monkeypatch.setattr(png, "imgread", None)
    elif png.imgread is None:
        pytest.skip("imgread is not installed (the fastpng extra: pip install 'dfmx[fastpng]'; "
                    "wheels for Linux x86-64 and macOS arm64 only)")
    assert png.decoder().startswith("imgread" if request.param == "imgread" else "imagecodecs")
    return request.param


def _save(path: Path, array: np.ndarray, **options: object) -> Path:
    Image.fromarray(array).save(path, format="PNG", **options)
    return path


def _pil_pixels(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_rgb_and_grey_equal_pil(tmp_path, level) -> None:
    for name, array in (("rgb", RGB), ("grey", GREY)):
        path = _save(tmp_path / f"{name}.png", array, compress_level=level)
        pixels = decode_plain_png(path, LARGE_IMAGE_PIXELS)
        assert pixels is not None, name
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 61, 83)
        assert torch.equal(pixels, _pil_pixels(path)), name


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "area", "lanczos"])
def test_decode_image_equals_the_pil_path(tmp_path, interpolation) -> None:
    path = _save(tmp_path / "rgb.png", RGB)
    fast = decode_image(path, (32, 40), interpolation)
    assert torch.equal(fast, resize_image(load_image(path), (32, 40), interpolation))


def _with_ihdr_byte(png: bytes, offset: int, value: int) -> bytes:
    """``png`` with one IHDR byte changed and the chunk's CRC fixed."""
    data = bytearray(png)
    data[16 + offset] = value
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _with_chunk(png: bytes, kind: bytes, body: bytes, before: bytes) -> bytes:
    """``png`` with a chunk inserted before the first chunk of type ``before``."""
    at = png.index(before) - 4  # the length field of that chunk
    crc = struct.pack(">I", zlib.crc32(kind + body))
    return png[:at] + struct.pack(">I", len(body)) + kind + body + crc + png[at:]


def test_chunks_decide_the_path_wherever_they_are(tmp_path) -> None:
    """Text, private and colour chunks keep the fast path; EXIF as a text chunk, or an
    eXIf or tRNS chunk after the pixels, send the file to PIL."""
    plain = _save(tmp_path / "plain.png", RGB).read_bytes()
    cases = {
        "comment": (b"tEXt", b"Comment\x00inspected on line 3", b"IDAT", True),
        "private": (b"prVt", b"Raw profile type exif", b"IDAT", True),
        # Colour chunks that PIL ignores: no decoder may apply them either.
        "gamma": (b"gAMA", struct.pack(">I", 100000), b"IDAT", True),
        "sRGB": (b"sRGB", b"\x00", b"IDAT", True),
        "significant bits": (b"sBIT", b"\x05\x05\x05", b"IDAT", True),
        "exif text": (b"tEXt", b"Raw profile type exif\x00\nexif\n4\n00000000", b"IEND", False),
        "exif compressed text": (b"zTXt", b"Raw profile type exif\x00\x00" + zlib.compress(b"x"),
                                 b"IDAT", False),
        "exif after the pixels": (b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00", b"IEND", False),
        "transparency after the pixels": (b"tRNS", b"\x00\x01\x00\x02\x00\x03", b"IEND", False),
    }
    for name, (kind, body, before, fast) in cases.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(_with_chunk(plain, kind, body, before))
        pixels = decode_plain_png(path, LARGE_IMAGE_PIXELS)
        assert (pixels is not None) == fast, name
        if fast:
            assert torch.equal(pixels, _pil_pixels(path)), name


def test_files_pil_must_decode_are_left_to_it(tmp_path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: load_image turns it upright
    interlaced = tmp_path / "interlaced.png"
    interlaced.write_bytes(_with_ihdr_byte(_save(tmp_path / "i.png", RGB).read_bytes(), 12, 1))
    others = {
        "rgb_transparency": _save(tmp_path / "t.png", RGB, transparency=(1, 2, 3)),
        "grey_transparency": _save(tmp_path / "gt.png", GREY, transparency=5),
        "rgba": _save(tmp_path / "a.png", np.dstack([RGB, GREY])),
        "palette": tmp_path / "p.png",
        "16 bit": tmp_path / "16.png",
        "exif": _save(tmp_path / "e.png", RGB, exif=exif),
        "interlaced": interlaced,
        "jpeg": tmp_path / "j.jpg",
    }
    Image.fromarray(RGB).convert("P").save(others["palette"])
    Image.fromarray(GREY.astype(np.uint16) * 257).save(others["16 bit"])
    Image.fromarray(RGB).save(others["jpeg"])
    for name, path in others.items():
        assert decode_plain_png(path, LARGE_IMAGE_PIXELS) is None, name
    assert decode_plain_png(_save(tmp_path / "big.png", RGB), 61 * 83 - 1) is None
    # ... and decode_image still gives load_image's pixels, EXIF rotation included.
    rotated = decode_image(others["exif"], (83, 61), "nearest")
    assert torch.equal(rotated, _pil_pixels(others["exif"]))
    assert torch.equal(rotated, torch.from_numpy(RGB).permute(2, 0, 1).rot90(-1, (1, 2)))


def test_damaged_png_raises_pil_error_naming_the_file(tmp_path) -> None:
    whole = _save(tmp_path / "whole.png", RGB).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    assert decode_plain_png(truncated, LARGE_IMAGE_PIXELS) is None
    with pytest.raises(ImageLoadError, match=r"truncated\.png"):
        decode_image(truncated, (32, 32), "bilinear")
    assert decode_plain_png(tmp_path / "missing.png", LARGE_IMAGE_PIXELS) is None
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        decode_image(tmp_path / "missing.png", (32, 32), "bilinear")


def test_resize_image_checks_tensor_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        resize_image(torch.zeros(3, 8, 8), 4)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        resize_image(torch.zeros(8, 8, 3, dtype=torch.uint8), 4)


def test_imgread_is_an_optional_extra_that_the_test_extra_installs() -> None:
    """A default install holds imagecodecs only; ``dfmx[fastpng]`` adds imgread, and the
    ``test`` extra pulls that in so that CI exercises both decoders."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("imgread") for dep in project["dependencies"])
    assert any(dep.startswith("imagecodecs") for dep in project["dependencies"])
    extras = project["optional-dependencies"]
    assert [dep.split(";")[0] for dep in extras["fastpng"]] == ["imgread>=0.3,<0.4"]
    assert any(dep.startswith("dfmx[") and "fastpng" in dep for dep in extras["test"])
