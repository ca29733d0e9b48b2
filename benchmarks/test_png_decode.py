"""PNG decoding per 900x900 MVTec bottle image: PIL against the fast decoders.

    pytest benchmarks/test_png_decode.py --benchmark-enable -s

The first 40 ``train/good`` images, read into memory once, decoded by PIL, by
imagecodecs' libpng (dfmx's default) and by imgread (the optional ``fastpng`` extra, when
installed), on one thread and on two; alternating rounds, the median round per way is
printed as milliseconds per image. Asserts that libpng on two threads beats PIL on one
(the reason ``dfmx.data.png`` exists).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from benchmarks.test_cli import machine

try:
    import imgread
except ImportError:
    imgread = None

ROUNDS = 5
IMAGES = 40


def _pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    ways = {"PIL": _pil, f"imagecodecs {imagecodecs.__version__} (libpng)":
            imagecodecs.png_decode}
    if imgread is not None:
        ways[f"imgread {imgread.__version__}"] = imgread.load_numpy_from_bytes
    return ways


def _ms_per_image(decode: Callable[[bytes], np.ndarray], files: list[bytes],
                  threads: int) -> float:
    start = time.perf_counter()
    if threads == 1:
        for data in files:
            decode(data)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(decode, files))
    return (time.perf_counter() - start) / len(files) * 1000


def test_png_decoders(benchmark, bottle_root: Path) -> None:
    paths = sorted((bottle_root / "bottle" / "train" / "good").glob("*.png"))[:IMAGES]
    if not paths:
        pytest.skip("no bottle training images")
    files = [p.read_bytes() for p in paths]
    ways = _decoders()
    for decode in ways.values():  # identical pixels, and every library loaded
        assert np.array_equal(decode(files[0]), _pil(files[0]))
    times: dict[tuple[str, int], list[float]] = {}

    def one_round() -> None:
        for name, decode in ways.items():
            for threads in (1, 2):
                times.setdefault((name, threads), []).append(
                    _ms_per_image(decode, files, threads))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    medians = {key: statistics.median(v) for key, v in times.items()}
    print(f"\nPNG decoding, {len(files)} bottle images of 900x900, {machine()}; "
          f"median of {ROUNDS} rounds, ms per image")
    for name in ways:
        print(f"  {name:<32} 1 thread {medians[(name, 1)]:6.1f}   "
              f"2 threads {medians[(name, 2)]:6.1f}")
    benchmark.extra_info.update({f"{n} {t}": m for (n, t), m in medians.items()})
    libpng = next(n for n in ways if "libpng" in n)
    assert medians[(libpng, 2)] < medians[("PIL", 1)]
