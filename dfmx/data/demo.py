"""Embedded demo data set: a procedurally generated woven fabric with defects.

The generator writes a small anomaly-detection data set in MVTec AD layout::

    <root>/demo/train/good/000.png ... 059.png
    <root>/demo/test/good/000.png ... 019.png
    <root>/demo/test/{scratch,hole,stain}/000.png ... 009.png
    <root>/demo/ground_truth/{scratch,hole,stain}/000_mask.png ...

Images are 256×256 RGB PNGs of a plain-weave fabric; every image has its own thread
period, small rotation, phase shift, thread-to-thread brightness, fibre noise, lighting
gradient, colour cast and sensor noise. Defects are thin scratches (polylines, lighter or
darker than the cloth), holes (dark irregular regions with a frayed bright rim) and stains
(soft coloured blobs). Masks are 0/255 ``L``-mode PNGs of the same size.

Determinism: every image is drawn from its own ``numpy`` PCG64 stream seeded from a fixed
tuple, using only ``Generator.random`` (uniform doubles) and IEEE-exact elementwise
arithmetic (``+ - * /``, ``sqrt``, ``floor``; no ``sin``/``exp``, whose last bit can differ
between CPUs and libm builds). The decoded pixels are therefore identical on every
machine; the PNG bytes are identical for a given zlib build (compression is fixed at
level 1 for speed, no metadata is written).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from dfmx.cache_dir import default_cache_dir

__all__ = [
    "DEMO_CATEGORY",
    "DEMO_COUNTS",
    "DEMO_DEFECTS",
    "DEMO_IMAGE_SIZE",
    "DEMO_VERSION",
    "demo_root",
    "generate_demo",
    "render_demo_image",
]

DEMO_CATEGORY = "demo"
DEMO_DEFECTS: tuple[str, ...] = ("scratch", "hole", "stain")
#: Bump whenever the generator's output changes; it names the cache folder.
DEMO_VERSION = 1
DEMO_IMAGE_SIZE = 256
#: Number of images per ``(split, type)`` folder.
DEMO_COUNTS: dict[tuple[str, str], int] = {
    ("train", "good"): 60,
    ("test", "good"): 20,
    ("test", "scratch"): 10,
    ("test", "hole"): 10,
    ("test", "stain"): 10,
}
MARKER_NAME = ".complete"

_SEED = 20240917
_SPLIT_CODES = {"train": 0, "test": 1}
_TYPE_CODES = {"good": 0, "scratch": 1, "hole": 2, "stain": 3}

FloatArray = np.ndarray


# --------------------------------------------------------------------------- primitives


def _uniform(rng: np.random.Generator, low: float, high: float, size=None):
    """Uniform draw in ``[low, high)`` built on ``Generator.random`` only."""
    return low + (high - low) * rng.random(size)


def _smoothstep(edge0: float, edge1: float, x: FloatArray) -> FloatArray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _value_noise(table: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """Smoothly interpolated lattice noise; ``table`` (n, m) wraps around, output in [0, 1).

    ``n`` and ``m`` must be powers of two (the wrap-around is a bit mask).
    """
    n, m = table.shape
    flat = table.ravel()
    fa0 = np.floor(a)
    fb0 = np.floor(b)
    sa = _smoothstep(0.0, 1.0, a - fa0)
    sb = _smoothstep(0.0, 1.0, b - fb0)
    ia0 = fa0.astype(np.int64)
    ib0 = fb0.astype(np.int64)
    row0 = (ia0 & (n - 1)) * m
    row1 = ((ia0 + 1) & (n - 1)) * m
    col0 = ib0 & (m - 1)
    col1 = (ib0 + 1) & (m - 1)
    t00 = flat.take(row0 + col0)
    t01 = flat.take(row0 + col1)
    t10 = flat.take(row1 + col0)
    t11 = flat.take(row1 + col1)
    top = t00 + (t01 - t00) * sb
    bottom = t10 + (t11 - t10) * sb
    return top + (bottom - top) * sa


def _unit_vector(rng: np.random.Generator) -> tuple[float, float]:
    """A random direction, by rejection sampling in the unit disc (no trigonometry)."""
    while True:
        dx, dy = _uniform(rng, -1.0, 1.0, 2)
        norm2 = dx * dx + dy * dy
        if 0.05 < norm2 <= 1.0:
            norm = float(np.sqrt(norm2))
            return float(dx) / norm, float(dy) / norm


def _thread_profile(f: FloatArray) -> FloatArray:
    """Cross-section of one thread over its width, ``f`` in [0, 1): 0 at the gaps, 1 centred."""
    return np.sqrt(np.clip(4.0 * f * (1.0 - f), 0.0, 1.0))


# --------------------------------------------------------------------------- normal image


def _render_fabric(rng: np.random.Generator, size: int) -> FloatArray:
    """One normal image, float64 ``(size, size, 3)`` in about [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)

    period = _uniform(rng, 10.5, 12.5)
    sin_a = _uniform(rng, -0.04, 0.04)  # about ±2.3 degrees of rotation
    cos_a = float(np.sqrt(1.0 - sin_a * sin_a))
    off_u, off_v = _uniform(rng, 0.0, 4.0 * period, 2)
    u = (cos_a * xx + sin_a * yy + off_u) / period
    v = (-sin_a * xx + cos_a * yy + off_v) / period
    iu = np.floor(u)
    iv = np.floor(v)
    fu = u - iu
    fv = v - iv

    # Plain weave: the warp thread (running along v) lies on top where iu + iv is even.
    iu_int = iu.astype(np.int64)
    iv_int = iv.astype(np.int64)
    warp_on_top = ((iu_int + iv_int) & 1) == 0
    prof_u = _thread_profile(fu)
    prof_v = _thread_profile(fv)
    height = np.where(warp_on_top, prof_u * (0.72 + 0.28 * prof_v), prof_v * (0.72 + 0.28 * prof_u))

    # Thread-to-thread brightness and fibre streaks along each thread.
    warp_gain = _uniform(rng, 0.86, 1.0, 64).take(iu_int & 63)
    weft_gain = _uniform(rng, 0.86, 1.0, 64).take(iv_int & 63)
    fibre_table = rng.random((64, 64))
    fibre = _value_noise(
        fibre_table,
        np.where(warp_on_top, u * 5.0, u * 0.6 + 17.0),
        np.where(warp_on_top, v * 0.6, v * 5.0 + 31.0),
    )
    gain = np.where(warp_on_top, warp_gain, weft_gain)
    shade = 0.30 + 0.70 * height * gain * (0.82 + 0.18 * fibre)

    # Warp and weft dyed slightly differently; a per-image colour cast.
    base = np.array([0.80, 0.70, 0.55]) + _uniform(rng, -0.05, 0.05, 3)
    base = base * _uniform(rng, 0.88, 1.08)
    weft_tint = 1.0 + _uniform(rng, -0.06, 0.06, 3)
    colour = np.where(warp_on_top[..., None], base, base * weft_tint)

    # Lighting: a gentle gradient plus a broad blotch.
    gx, gy = _uniform(rng, -0.10, 0.10, 2)
    light_table = rng.random((8, 8))
    blotch = _value_noise(light_table, yy / 96.0, xx / 96.0) - 0.5
    light = 1.0 + gx * (xx / size - 0.5) + gy * (yy / size - 0.5) + 0.10 * blotch

    return shade[..., None] * colour * light[..., None]


def _add_sensor_noise(rng: np.random.Generator, img: FloatArray) -> FloatArray:
    """Approximately Gaussian noise (Irwin–Hall sum of three uniforms), mostly luminance."""
    h, w, _ = img.shape
    luma = (rng.random((h, w)) + rng.random((h, w)) + rng.random((h, w)) - 1.5) * 2.0
    chroma = (rng.random((h, w, 3)) + rng.random((h, w, 3)) - 1.0) * 1.2
    return img + (luma[..., None] + chroma) / 255.0


# --------------------------------------------------------------------------- defects


def _segment_distance(
    xx: FloatArray, yy: FloatArray, p0: tuple[float, float], p1: tuple[float, float]
) -> FloatArray:
    """Euclidean distance of every pixel centre to the segment ``p0``–``p1``."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dx * dx + dy * dy
    t = np.clip(((xx - p0[0]) * dx + (yy - p0[1]) * dy) / length2, 0.0, 1.0)
    ex = xx - (p0[0] + t * dx)
    ey = yy - (p0[1] + t * dy)
    return np.sqrt(ex * ex + ey * ey)


def _metaball_field(
    rng: np.random.Generator,
    xx: FloatArray,
    yy: FloatArray,
    n_balls: int,
    radius: tuple[float, float],
    spread: float,
    margin: float,
) -> FloatArray:
    """Sum of ``r² / d²`` fields of a few discs around a random centre; ≥ 1 inside the blob."""
    size = xx.shape[0]
    cx, cy = _uniform(rng, margin, size - margin, 2)
    field = np.zeros_like(xx)
    for _ in range(n_balls):
        bx = cx + _uniform(rng, -spread, spread)
        by = cy + _uniform(rng, -spread, spread)
        r = _uniform(rng, *radius)
        field += (r * r) / ((xx - bx) ** 2 + (yy - by) ** 2 + 1e-6)
    return field


def _add_scratch(rng: np.random.Generator, img: FloatArray) -> tuple[FloatArray, np.ndarray]:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    n_segments = int(2 + 3 * rng.random())
    total_length = _uniform(rng, 60.0, 170.0)
    width = _uniform(rng, 2.0, 4.0)
    point = tuple(_uniform(rng, 50.0, size - 50.0, 2))
    dx, dy = _unit_vector(rng)
    distance = np.full_like(xx, np.inf)
    for _ in range(n_segments):
        step = total_length / n_segments
        nxt = (
            float(np.clip(point[0] + dx * step, 4.0, size - 5.0)),
            float(np.clip(point[1] + dy * step, 4.0, size - 5.0)),
        )
        if nxt != point:
            distance = np.minimum(distance, _segment_distance(xx, yy, point, nxt))
        point = nxt
        tx, ty = _unit_vector(rng)
        dx, dy = dx + 0.6 * tx, dy + 0.6 * ty
        norm = float(np.sqrt(dx * dx + dy * dy)) or 1.0
        dx, dy = dx / norm, dy / norm
    half = width / 2.0
    alpha = np.clip(half + 0.5 - distance, 0.0, 1.0)[..., None]
    # Light scratches expose bright fibres; dark ones are grooves of grime.
    if rng.random() < 0.5:
        target = np.clip(img * 0.5 + _uniform(rng, 0.45, 0.6), 0.0, 1.0)
    else:
        target = img * _uniform(rng, 0.25, 0.45)
    out = img * (1.0 - alpha) + target * alpha
    return out, distance <= half


def _add_hole(rng: np.random.Generator, img: FloatArray) -> tuple[FloatArray, np.ndarray]:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    n_balls = int(2 + 3 * rng.random())
    field = _metaball_field(rng, xx, yy, n_balls, (5.0, 16.0), 10.0, 48.0)
    inner = _smoothstep(0.9, 1.1, field)[..., None]
    rim = (_smoothstep(0.45, 0.65, field) - _smoothstep(0.9, 1.1, field))[..., None]
    # Frayed rim: lighter, slightly desaturated cloth; inside: dark backing with a gradient.
    grey = ((img[..., 0] + img[..., 1] + img[..., 2]) / 3.0)[..., None]
    frayed = np.clip((0.6 * img + 0.4 * grey) * _uniform(rng, 1.2, 1.4), 0.0, 1.0)
    depth = _uniform(rng, 0.04, 0.10) + 0.06 * (yy / size)[..., None]
    backing = depth * np.array([1.0, 0.95, 0.9])
    out = img * (1.0 - inner - rim) + frayed * rim + backing * inner
    return out, field >= 0.55


def _add_stain(rng: np.random.Generator, img: FloatArray) -> tuple[FloatArray, np.ndarray]:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    n_balls = int(2 + 4 * rng.random())
    field = _metaball_field(rng, xx, yy, n_balls, (8.0, 22.0), 18.0, 56.0)
    palette = np.array(
        [
            [0.55, 0.38, 0.22],  # coffee
            [0.45, 0.55, 0.30],  # grass
            [0.40, 0.45, 0.70],  # ink
            [0.65, 0.30, 0.30],  # wine
        ]
    )
    tint = palette[int(rng.random() * len(palette))] + _uniform(rng, -0.05, 0.05, 3)
    strength = _uniform(rng, 0.6, 0.9)
    coverage = _smoothstep(0.4, 1.2, field)
    alpha = (strength * coverage)[..., None]
    # Dye soaks into the cloth: the weave stays visible under the stain.
    tint_mean = (tint[0] + tint[1] + tint[2]) / 3.0
    stained = img * tint / tint_mean * _uniform(rng, 0.65, 0.85)
    out = img * (1.0 - alpha) + stained * alpha
    return out, coverage >= 0.5


_DEFECT_PAINTERS: dict[str, Callable[[np.random.Generator, FloatArray], tuple]] = {
    "scratch": _add_scratch,
    "hole": _add_hole,
    "stain": _add_stain,
}


# --------------------------------------------------------------------------- public API


def render_demo_image(
    split: str, defect_type: str, index: int, size: int = DEMO_IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one demo image in memory.

    Args:
        split: ``"train"`` or ``"test"``.
        defect_type: ``"good"`` or one of :data:`DEMO_DEFECTS`.
        index: image number within its folder.
        size: side length in pixels.

    Returns:
        ``(image, mask)``: ``image`` uint8 ``(size, size, 3)``; ``mask`` bool
        ``(size, size)`` for defects, ``None`` for ``"good"``.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if defect_type not in _TYPE_CODES:
        raise ValueError(f"defect_type must be one of {sorted(_TYPE_CODES)}, got {defect_type!r}")
    rng = np.random.default_rng([_SEED, _SPLIT_CODES[split], _TYPE_CODES[defect_type], index])
    img = _render_fabric(rng, size)
    mask = None
    if defect_type != "good":
        img, mask = _DEFECT_PAINTERS[defect_type](rng, img)
    img = _add_sensor_noise(rng, img)
    pixels = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return pixels, mask


def generate_demo(root: str | Path) -> Path:
    """Write the demo data set into ``root/demo`` (not atomic; see :func:`demo_root`).

    Returns:
        The category folder ``root/demo``.
    """
    category_dir = Path(root) / DEMO_CATEGORY
    for (split, defect_type), count in DEMO_COUNTS.items():
        image_dir = category_dir / split / defect_type
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir = category_dir / "ground_truth" / defect_type
        if defect_type != "good":
            mask_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels, mask = render_demo_image(split, defect_type, index)
            Image.fromarray(pixels, mode="RGB").save(
                image_dir / f"{index:03d}.png", format="PNG", compress_level=1
            )
            if mask is not None:
                Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(
                    mask_dir / f"{index:03d}_mask.png", format="PNG", compress_level=1
                )
    return category_dir


def _marker_text() -> str:
    return f"dfmx demo data set, generator version {DEMO_VERSION}\n"


def _is_complete(root: Path) -> bool:
    marker = root / MARKER_NAME
    try:
        return marker.read_text() == _marker_text()
    except OSError:
        return False


def _publish(staged: Path, root: Path) -> None:
    """Move the finished ``staged`` folder to ``root`` atomically, or accept a rival's copy."""
    try:
        os.rename(staged, root)
        return
    except OSError:
        if _is_complete(root):
            return  # another process finished first; its copy is identical
    # ``root`` exists but is incomplete (not written by us): move it aside, then retry.
    trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.stale-", dir=root.parent))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.replace(root, trash / "old")
        try:
            os.rename(staged, root)
        except OSError:
            if not _is_complete(root):
                raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix><random>`` made as ``mkdir`` makes one, with the
    umask's mode (``tempfile.mkdtemp`` makes ``0o700``, which would keep teammates out of
    the published data set)."""
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            folder.mkdir()
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return folder


def demo_root(cache_dir: str | Path | None = None) -> Path:
    """Return the demo data root (the folder that holds ``demo/``), generating it if missing.

    The root is ``<cache_dir>/demo-v<DEMO_VERSION>``, where ``cache_dir`` defaults to
    :func:`dfmx.cache_dir.default_cache_dir`. Safe under concurrency: each caller that
    finds no complete copy renders into its own temporary sibling folder, writes the marker file
    ``.complete`` last, and renames the folder into place atomically; a folder without the
    marker is never taken for a complete data set.

    Args:
        cache_dir: cache folder; ``None`` for the default.

    Returns:
        Path of the root; ``mvtec_samples(root, DEMO_CATEGORY, split)`` reads it.
    """
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = base / f"demo-v{DEMO_VERSION}"
    if _is_complete(root):
        return root
    base.mkdir(parents=True, exist_ok=True)
    staged = _new_folder(base, f".{root.name}.tmp-")
    try:
        generate_demo(staged)
        (staged / MARKER_NAME).write_text(_marker_text())
        _publish(staged, root)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return root
