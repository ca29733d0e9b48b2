"""Overlays: an image, its anomaly map and the two blended, one PNG per chosen image.

:func:`write_overlays` shows a labelled test set's riskiest normals and strongest
anomalies (with the ground-truth mask outlined); :func:`write_prediction_overlays` the
highest-scored images of an unlabelled prediction. Maps are ``(N, H, W)`` float anomaly maps
at image size, masks ``(N, H, W)`` bool. The pictures are drawn by
:mod:`dfmx.experiment.overlay_picture` (numpy and Pillow, no matplotlib); every PNG is
written atomically.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dfmx.experiment.drawing import save_png
from dfmx.experiment.labelled_scores import as_labels_scores
from dfmx.experiment.overlay_picture import overlay_picture
from dfmx.memo import Memo
from dfmx.path_text import path_text

__all__ = ["top_indices", "write_overlays", "write_prediction_overlays"]


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def _resize_float(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float ``(h, w)`` array to ``hw``."""
    if arr.shape == hw:
        return arr
    img = Image.fromarray(np.asarray(arr, dtype=np.float32), mode="F")
    return np.asarray(img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR))


#: Decoded, resized images by file identity (path, size, mtime) and size, up to 64 MB: the
#: jobs of a sweep draw mostly the same test images.
_IMAGES: Memo[np.ndarray] = Memo(64 << 20, weigh=lambda image: image.nbytes)


def _load_rgb(path: str | Path, hw: tuple[int, int]) -> np.ndarray:
    """Image ``path`` as read-only uint8 ``(H, W, 3)`` resized to ``hw``, decoded as the
    job decodes it (:func:`~dfmx.data.batches.decode_image`: libpng, a quarter of PIL's
    time on a large PNG). Raises :class:`~dfmx.data.images.ImageLoadError` when
    unreadable, ``FileNotFoundError`` when gone."""
    # local: torch only when images are drawn
    from dfmx.data.batches import decode_image, files_fingerprint

    def load() -> np.ndarray:
        image = decode_image(path, hw, "bilinear").permute(1, 2, 0).numpy()
        image.setflags(write=False)
        return image

    return _IMAGES.get((files_fingerprint([path]), hw), load)


def _safe_stem(path: str | Path, limit: int = 80) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._") or "image"
    return stem[:limit]


def top_indices(labels: np.ndarray, scores: np.ndarray, cls: int, k: int) -> list[int]:
    """Indices of the ``k`` highest-scored images of class ``cls``, highest first.

    Ties keep input order; NaN scores come last.

    Returns:
        Up to ``k`` indices into ``labels``/``scores``.
    """
    lab, sco = as_labels_scores(labels, scores)
    idx = np.flatnonzero(lab == cls)
    key = np.where(np.isnan(sco[idx]), -np.inf, sco[idx])
    order = np.argsort(-key, kind="stable")
    return [int(i) for i in idx[order][: max(int(k), 0)]]


def _map_range(maps: np.ndarray) -> tuple[float, float]:
    """Finite min/max over all maps (chunked so a large stack is not copied at once)."""
    lo, hi = math.inf, -math.inf
    for start in range(0, len(maps), 64):
        m = np.asarray(maps[start:start + 64])
        finite = np.isfinite(m)
        lo = min(lo, float(np.min(m, where=finite, initial=np.inf)))
        hi = max(hi, float(np.max(m, where=finite, initial=-np.inf)))
    if not math.isfinite(lo):
        return 0.0, 1.0
    if hi <= lo:
        hi = lo + 1e-6 * max(1.0, abs(lo))
    return lo, hi


def write_overlays(
    out_dir: str | Path,
    paths: Sequence[str | Path],
    labels: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray | None,
    masks: np.ndarray | None,
    image_size: int | tuple[int, int] | None = None,
    k: int = 4,
    *,
    load_image_fn: Callable[[int], np.ndarray] | None = None,
) -> list[Path]:
    """Write side-by-side overlays for the riskiest normals and the strongest anomalies.

    Picks the ``k`` highest-scored normals (false-positive candidates) and the ``k``
    highest-scored anomalies. Each PNG has three panels: the image; the anomaly map
    (colour scale shared by all maps of the run, with a colorbar); the image with the
    map blended and the ground-truth mask outlined (contour at 0.5) when it has a defect.
    Files are ``normal_01_<stem>.png`` … and ``anomalous_01_<stem>.png`` … (rank by score).

    Args:
        out_dir: folder for the PNGs (created if needed).
        paths: ``N`` image paths; decoded one at a time when needed (:func:`_load_rgb`).
        labels: ``(N,)`` in ``{0, 1}``.
        scores: ``(N,)``.
        maps: ``(N, H, W)`` anomaly maps, or ``None`` → nothing is written.
        masks: ``(N, H, W)`` bool ground truth, or ``None``.
        image_size: panel size ``(H, W)`` or one int for a square; ``None`` uses the maps'
            ``(H, W)``. Maps and masks of another size are resized to it.
        k: images per class.
        load_image_fn: optional ``i -> uint8 (h, w, 3)`` loader replacing reading ``paths``.

    Returns:
        The written PNG paths, normals first, each group in rank order.
    """
    if maps is None or k <= 0:
        return []
    lab, sco = as_labels_scores(labels, scores)
    if len(maps) != len(lab) or len(paths) != len(lab):
        raise ValueError(
            f"lengths differ: paths {len(paths)}, maps {len(maps)}, labels/scores {len(lab)}"
        )
    if masks is not None and len(masks) != len(lab):
        raise ValueError(f"masks has {len(masks)} entries, expected {len(lab)}")
    hw = _size_hw(image_size) if image_size is not None else tuple(np.shape(maps)[1:3])
    vmin, vmax = _map_range(maps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    for cls, kind in ((0, "normal"), (1, "anomalous")):
        for rank, i in enumerate(top_indices(lab, sco, cls, k), start=1):
            amap = _resize_float(np.asarray(maps[i], dtype=np.float32), hw)
            mask = None
            if masks is not None:
                mask = _resize_float(np.asarray(masks[i], dtype=np.float32), hw) >= 0.5
            try:
                if load_image_fn is not None:
                    image = np.asarray(load_image_fn(i), dtype=np.uint8)
                    if image.shape[:2] != hw:
                        image = np.asarray(Image.fromarray(image).convert("RGB").resize(
                            (hw[1], hw[0]), Image.Resampling.BILINEAR))
                else:
                    image = _load_rgb(paths[i], hw)
            except (OSError, ValueError):
                image = None
            p = Path(paths[i])
            name = path_text(f"{p.parent.name}/{p.name}" if p.parent.name else p.name)
            title = f"{name}  —  label: {kind} ({cls})  —  score: {sco[i]:.4g}"
            picture = overlay_picture(image, amap, mask, vmin, vmax, title)
            written.append(save_png(picture, out_dir / f"{kind}_{rank:02d}_{_safe_stem(p)}.png"))
    return written


def write_prediction_overlays(
    out_dir: str | Path,
    paths: Sequence[str | Path],
    scores: np.ndarray,
    maps: np.ndarray | None,
    threshold: float,
    image_size: int | tuple[int, int] | None = None,
    k: int = 8,
) -> list[Path]:
    """Overlays of the ``k`` highest-scored images of an unlabelled prediction run.

    Same three panels as :func:`write_overlays` (no ground truth); the title gives the
    score and the prediction (``score >= threshold``). Files: ``top_01_<stem>.png`` …

    Args:
        paths: ``N`` image paths. scores: ``(N,)``. maps: ``(N, H, W)`` or ``None``
            (nothing is written).
    """
    if maps is None or k <= 0:
        return []
    sco = np.asarray(scores, dtype=np.float64)
    hw = _size_hw(image_size) if image_size is not None else tuple(np.shape(maps)[1:3])
    vmin, vmax = _map_range(maps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    order = np.argsort(-np.where(np.isnan(sco), -np.inf, sco), kind="stable")[:k]
    for rank, i in enumerate(order, start=1):
        amap = _resize_float(np.asarray(maps[i], dtype=np.float32), hw)
        try:
            image = _load_rgb(paths[i], hw)
        except (OSError, ValueError):
            image = None
        verdict = "anomalous" if sco[i] >= threshold else "normal"
        title = f"{path_text(Path(paths[i]).name)}  —  predicted {verdict}  —  score: {sco[i]:.4g}"
        picture = overlay_picture(image, amap, None, vmin, vmax, title)
        written.append(save_png(picture, out_dir / f"top_{rank:02d}_{_safe_stem(paths[i])}.png"))
    return written
