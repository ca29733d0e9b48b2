"""Generators of bad (and awkward) input files for the reliability tests.

Everything is written into a folder the caller gives (a pytest ``tmp_path``); nothing is
committed. Images are tiny random textures made with PIL, so each tree takes milliseconds.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64


def texture(seed: int, size: int = SIZE, mode: str = "RGB") -> Image.Image:
    """A random smooth-ish texture (noise on a gradient), any PIL mode."""
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 200, size, dtype=np.float64)[None, :, None]
    noise = rng.normal(0, 25, size=(size, size, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, mode="RGB")
    if mode == "P":
        return img.quantize(colors=32)
    return img if mode == "RGB" else img.convert(mode)


def write_png(path: Path, seed: int, size: int = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    texture(seed, size).save(path)
    return path


def write_mask(path: Path, size: int = SIZE, box: tuple[int, int, int, int] | None = None) -> Path:
    """A binary mask, 255 inside ``box`` (default: the centre quarter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size), dtype=np.uint8)
    x0, y0, x1, y1 = box or (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr, mode="L").save(path)
    return path


def write_corrupt_png(path: Path, seed: int = 0) -> Path:
    """A PNG whose signature and IHDR are valid, followed by garbage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    good = path.with_suffix(".tmp.png")
    texture(seed).save(good)
    data = good.read_bytes()
    good.unlink()
    rng = np.random.default_rng(seed)
    head = data[:33]  # 8-byte signature + the 25-byte IHDR chunk
    path.write_bytes(head + rng.integers(0, 256, size=2000, dtype=np.uint8).tobytes())
    return path


def write_truncated_png(path: Path, seed: int = 0) -> Path:
    """A valid PNG cut in the middle of its image data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    texture(seed).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text(path: Path, text: str = "this is not an image\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_mode(path: Path, seed: int, mode: str, fmt: str | None = None) -> Path:
    """An image saved in PIL ``mode`` (``CMYK`` as JPEG or TIFF, ``P`` as PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    texture(seed, mode=mode).save(path, format=fmt)
    return path


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def write_bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG that *declares* ``width`` x ``height`` pixels (a decompression bomb) but is a
    few hundred bytes: one IDAT chunk holding a few compressed rows. Never decoded in full,
    so no memory is allocated for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows)
    path.write_bytes(data + _chunk(b"IEND", b""))
    return path


def write_large_png(path: Path, side: int = 8000) -> Path:
    """A real ``side`` x ``side`` greyscale PNG (a flat ramp compresses to ~100 KB).

    Writing it holds one ``side²``-byte array (64 MB at 8000).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    row = np.linspace(60, 180, side).astype(np.uint8)
    arr = np.broadcast_to(row, (side, side))
    Image.fromarray(np.ascontiguousarray(arr), mode="L").save(path, compress_level=1)
    return path


def mvtec_tree(
    root: Path,
    category: str = "widget",
    n_train: int = 8,
    n_test_good: int = 3,
    defects: dict[str, int] | None = None,
    masks: bool = True,
    size: int = SIZE,
) -> Path:
    """A tiny data set in MVTec AD layout under ``root/category``; returns ``root``."""
    cat = root / category
    for i in range(n_train):
        write_png(cat / "train" / "good" / f"{i:03d}.png", seed=i, size=size)
    for i in range(n_test_good):
        write_png(cat / "test" / "good" / f"{i:03d}.png", seed=100 + i, size=size)
    for d, (defect, count) in enumerate((defects or {"crack": 3}).items()):
        for i in range(count):
            write_png(cat / "test" / defect / f"{i:03d}.png", seed=1000 * (d + 1) + i, size=size)
            if masks:
                write_mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png", size=size)
    return root


def folder_tree(root: Path, n_normal: int = 10, n_abnormal: int = 0, size: int = SIZE) -> Path:
    """``root/normal`` (and ``root/abnormal`` when ``n_abnormal``) of random textures."""
    for i in range(n_normal):
        write_png(root / "normal" / f"n{i:03d}.png", seed=i, size=size)
    for i in range(n_abnormal):
        write_png(root / "abnormal" / f"a{i:03d}.png", seed=500 + i, size=size)
    return root
