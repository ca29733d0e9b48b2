"""Synthetic anomalies on normal images, for a selection metric that needs no labels.

Each normal image gets one defect, drawn from a generator seeded by ``seed`` (the same
inputs always give the same images and masks):

* even positions, **cut-paste**: a rectangle cut from another image of the set (the next
  one; the image itself when the set has one), scaled, rotated, its brightness jittered,
  and pasted at a random place;
* odd positions, **noise blob**: an ellipse at a random place, size and angle, filled
  with smooth random colour noise.

The mask is exactly the set of pixels that were replaced: pixels outside it are left
untouched. Pure numpy and PIL on decoded images; no model involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = ["SYNTHESIS_VERSION", "SyntheticAnomalies", "synthesise_anomalies"]

#: Bump when what :func:`synthesise_anomalies` makes of the same inputs changes (cached
#: features of synthetic images are keyed by it).
SYNTHESIS_VERSION = 1

#: Side of a defect as a share of the image's shorter side.
_SCALE = (0.10, 0.25)


@dataclass
class SyntheticAnomalies:
    """``images`` uint8 ``(N, 3, H, W)``, ``masks`` bool ``(N, H, W)`` (true where a pixel
    was replaced) and ``kinds`` (``"cutpaste"`` or ``"noise"``, one per image)."""

    images: torch.Tensor
    masks: torch.Tensor
    kinds: list[str]


def _cut_paste(target: np.ndarray, source: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste a rotated, scaled patch of ``source`` (H, W, 3) into a copy of ``target``."""
    h, w = target.shape[:2]
    side = min(h, w)
    ph = max(2, int(rng.uniform(*_SCALE) * side))
    pw = max(2, int(ph * rng.uniform(0.5, 2.0)))
    pw = min(pw, w)
    y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    patch = source[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
    patch = np.clip(patch * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
    angle = float(rng.uniform(-45.0, 45.0))
    rgba = np.dstack([patch, np.full(patch.shape[:2], 255, np.uint8)])
    rotated = np.asarray(Image.fromarray(rgba, "RGBA").rotate(
        angle, resample=Image.Resampling.NEAREST, expand=True))
    rotated = rotated[:h, :w]
    rh, rw = rotated.shape[:2]
    ty, tx = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    out = target.copy()
    mask = np.zeros((h, w), bool)
    inside = rotated[..., 3] > 0
    region = out[ty:ty + rh, tx:tx + rw]
    region[inside] = rotated[..., :3][inside]
    mask[ty:ty + rh, tx:tx + rw] = inside
    return out, mask


def _noise_blob(target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fill a random ellipse of a copy of ``target`` (H, W, 3) with smooth colour noise."""
    h, w = target.shape[:2]
    side = min(h, w)
    ry = max(1.0, rng.uniform(*_SCALE) * side / 2)
    rx = max(1.0, ry * rng.uniform(0.5, 2.0))
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    if not mask.any():  # a blob centred off a tiny image: take the nearest pixel
        mask[min(int(cy), h - 1), min(int(cx), w - 1)] = True
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    noise = np.asarray(Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BICUBIC))
    out = target.copy()
    out[mask] = noise[mask]
    return out, mask


def synthesise_anomalies(images: torch.Tensor, seed: int = 0) -> SyntheticAnomalies:
    """One synthetic defect on each of ``images`` (uint8 ``(N, 3, H, W)``, normal images).

    Deterministic: the same ``images`` and ``seed`` give the same result. ``images`` is
    not modified.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (N, 3, H, W); got {images.dtype} "
                         f"{tuple(images.shape)}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, SYNTHESIS_VERSION, 0x5E17])
    hwc = images.permute(0, 2, 3, 1).cpu().numpy()
    n = hwc.shape[0]
    outs, masks, kinds = [], [], []
    for i in range(n):
        if i % 2 == 0:
            out, mask = _cut_paste(hwc[i], hwc[(i + 1) % n], rng)
            kinds.append("cutpaste")
        else:
            out, mask = _noise_blob(hwc[i], rng)
            kinds.append("noise")
        outs.append(out)
        masks.append(mask)
    if not outs:
        h, w = images.shape[-2:]
        return SyntheticAnomalies(images.clone(), torch.zeros((0, h, w), dtype=torch.bool), [])
    return SyntheticAnomalies(
        images=torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).contiguous(),
        masks=torch.from_numpy(np.stack(masks)),
        kinds=kinds,
    )
