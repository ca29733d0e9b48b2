"""Accuracy study: which layers, pooling, scorer, combination and image-score reduction work
across data sets, measured with dfmx's public pieces (backbone features, pooling, PCA,
scorers, metrics).

    python -m benchmarks.accuracy_study --data bottle --out study
    python -m benchmarks.accuracy_study --data demo --out study
    python -m benchmarks.accuracy_study --data texture --out study

``bottle`` is MVTec AD bottle (``--mvtec-root``, default ``$DFMX_MVTEC_ROOT`` or
``../shared/data/mvtec_ad`` beside the checkout);
``demo`` the embedded woven-fabric set; ``texture`` a deterministic granite-like surface
with small defects (pits, hairline cracks, faint spots) written by :func:`write_texture`
under ``--out``. Each run writes ``<data>_<size>.csv`` (one row per configuration and
reduction) and ``<data>_<size>.md`` (the best rows) under ``--out``.

Protocol. 20 % of the training normals (a fixed-seed draw, at least 2) are held out as
validation normals: nothing is fitted on them; they give each layer's scale in the per-layer
ensembles. The backbone (EfficientNet-Lite0, offline weights, ``precision=auto``) runs once
per data set for the layers the sets name; every configuration reuses those raw maps.

Configurations:

* ``concat``: the layers resized to the first one's grid, concatenated, pooled, one PCA and
  one scorer (what ``DFMModel(layer=[...])`` does).
* ``ensemble``: dfmx's own per-layer ensemble (``DFMModel`` with ``combine="ensemble"``,
  :mod:`dfmx.engine.ensemble`): each layer pooled onto the finest layer's pooled grid, one
  PCA and scorer per layer, calibrated on the validation normals
  (``DFMModel.calibrate``); its reductions are the model's own (``max`` and ``topk`` of
  each layer's feature-grid map, before standardising).
* ``ensemble-own-grid``: one PCA and scorer per layer, each layer pooled with the same
  kernel on its own grid; image scores standardised by the validation normals' mean and
  standard deviation and summed; maps divided by the standard deviation of the validation
  map values, resized (bilinear) to the finest grid and summed.
* ``--blur``: Gaussian smoothing (sigma in pixels) of the image-size maps before the pixel
  metrics and the map reductions (0: none, dfmx's maps as they are).
* reductions of the image score: ``sum`` (the scorer's own score; for ensembles the sum of
  standardised scores), ``max`` and ``top1`` / ``top5`` (mean of the top 1 % / 5 % of the
  image-size map).

``seconds`` (wall) and ``cpu_seconds`` (process CPU time, all threads: steadier on a shared
machine) are the cost of pooling, PCA fit, scorer fit and scoring of one configuration (for
ensembles the sum over its layers); backbone extraction is timed once per data set and
printed separately.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from dfmx.data import load_mask, mvtec_samples
from dfmx.data.batches import image_batches
from dfmx.data.sources import DemoData
from dfmx.engine.model_config import ModelConfig
from dfmx.engine.pca import PCA
from dfmx.engine.plugins import build_scorer
from dfmx.engine.torch_model import DFMModel, upsample_maps
from dfmx.features.pooling import pool_features
from dfmx.metrics import image_auroc
from dfmx.metrics.pixel import pixel_metrics

# The stages timm exposes for EfficientNet-Lite0 (strides 8, 16, 32 and 4).
LAYERS = ("blocks.1", "blocks.2", "blocks.4", "blocks.6")
LAYER_SETS: tuple[tuple[str, ...], ...] = (
    ("blocks.2",), ("blocks.4",), ("blocks.6",),
    ("blocks.2", "blocks.4"), ("blocks.4", "blocks.6"), ("blocks.2", "blocks.6"),
    ("blocks.2", "blocks.4", "blocks.6"),
)
REDUCTIONS = ("sum", "max", "top1", "top5")


# ----------------------------------------------------------------------------- data


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Soft disc alpha in [0, 1] (one-pixel edge)."""
    return np.clip(r + 0.5 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2), 0.0, 1.0)


def render_texture(kind: str, seed: Sequence[int], size: int = 256
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """One granite-like surface image ``(size, size, 3)`` uint8 and its defect mask.

    ``kind`` is ``good``, ``pit`` (dark disc, radius 2.5-5 px), ``crack`` (dark hairline,
    1-1.6 px wide, 15-40 px long) or ``spot`` (faint tinted blob, radius 5-9 px).
    """
    rng = np.random.default_rng(list(seed))
    noise = 0.0
    for sigma, weight in ((0.8, 0.35), (2.5, 0.5), (7.0, 0.6), (20.0, 0.5)):
        octave = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
        noise = noise + weight * octave / octave.std()
    grains = (rng.random((size, size)) < 0.004).astype(float)
    grains = gaussian_filter(grains, 0.9) * 6.0
    level = 0.55 + 0.05 * rng.standard_normal()
    grey = level + 0.09 * noise + 0.25 * grains
    tint = np.array([1.0, 0.97, 0.92]) * (1 + 0.03 * rng.standard_normal(3))
    img = grey[..., None] * tint
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    mask = None
    if kind != "good":
        cy, cx = rng.uniform(30, size - 30, 2)
        if kind == "pit":
            alpha = _disc(yy, xx, cy, cx, rng.uniform(2.5, 5.0))
            img = img * (1 - alpha[..., None]) + 0.12 * alpha[..., None]
        elif kind == "crack":
            angle = rng.uniform(0, math.pi)
            length = rng.uniform(15, 40)
            half = rng.uniform(0.5, 0.8)
            dy, dx = math.sin(angle), math.cos(angle)
            t = np.clip((yy - cy) * dy + (xx - cx) * dx, 0, length)
            dist = np.sqrt((yy - cy - t * dy) ** 2 + (xx - cx - t * dx) ** 2)
            alpha = np.clip(half + 0.5 - dist, 0, 1)
            img = img * (1 - 0.6 * alpha[..., None])
        elif kind == "spot":
            alpha = gaussian_filter(_disc(yy, xx, cy, cx, rng.uniform(5, 9)), 1.5)
            colour = np.array([0.75, 0.55, 0.4]) * level * 1.3
            img = img * (1 - 0.45 * alpha[..., None]) + 0.45 * alpha[..., None] * colour
        else:
            raise ValueError(f"unknown texture kind {kind!r}")
        mask = alpha > 0.25
    img = img + 0.01 * rng.standard_normal(img.shape)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8), mask


TEXTURE_COUNTS = {("train", "good"): 80, ("test", "good"): 30, ("test", "pit"): 15,
                  ("test", "crack"): 15, ("test", "spot"): 15}


def write_texture(root: Path) -> Path:
    """Write the texture set in MVTec AD layout under ``root/texture``; returns that folder."""
    category = root / "texture"
    if (category / ".complete").exists():
        return category
    for code, ((split, kind), count) in enumerate(TEXTURE_COUNTS.items()):
        (category / split / kind).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels, mask = render_texture(kind, (7331, code, index))
            Image.fromarray(pixels).save(category / split / kind / f"{index:03d}.png")
            if mask is not None:
                gt = category / "ground_truth" / kind
                gt.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(gt / f"{index:03d}_mask.png")
    (category / ".complete").write_text("1")
    return category


def load_data(name: str, out: Path, mvtec_root: Path):
    """``(train, test)`` samples of the data set ``name``."""
    if name == "bottle":
        return (mvtec_samples(mvtec_root, "bottle", "train"),
                mvtec_samples(mvtec_root, "bottle", "test"))
    if name == "demo":
        return DemoData().load()
    if name == "texture":
        write_texture(out)
        return mvtec_samples(out, "texture", "train"), mvtec_samples(out, "texture", "test")
    raise SystemExit(f"unknown --data {name!r}: choose bottle, demo or texture")


# ----------------------------------------------------------------------------- features


def extract(model: DFMModel, samples, size: int) -> dict[str, torch.Tensor]:
    """Raw backbone maps ``{layer: (N, C, h, w)}`` of ``samples`` at ``size`` pixels."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in model.layers}
    interp = model.feature_extractor.interpolation
    for batch in image_batches(samples, size, interp, 16):
        with torch.inference_mode():
            raw = model.raw_features(batch)
        for name in parts:
            parts[name].append(raw[name].float().cpu())
    return {name: torch.cat(p) for name, p in parts.items()}


def fuse_and_pool(raw: dict[str, torch.Tensor], layers: Sequence[str], k: int) -> torch.Tensor:
    """What ``DFMModel.pool_and_fuse`` does: resize to the first layer's grid, concat, pool."""
    grid = raw[layers[0]].shape[-2:]
    maps = [raw[n] if raw[n].shape[-2:] == grid else
            F.interpolate(raw[n], size=grid, mode="bilinear", align_corners=False)
            for n in layers]
    return pool_features(maps[0] if len(maps) == 1 else torch.cat(maps, 1), "avg", k)


@dataclass
class Scored:
    """One fitted PCA + scorer: scores and feature-grid maps of val and test."""

    val_scores: torch.Tensor
    val_maps: torch.Tensor | None
    test_scores: torch.Tensor
    test_maps: torch.Tensor | None
    n_components: int
    seconds: float
    cpu_seconds: float


class Study:
    """Fits and caches the single models (one layer set, one kernel, level, scorer)."""

    def __init__(self, raw: dict[str, dict[str, torch.Tensor]]) -> None:
        self.raw = raw  # split -> layer -> (N, C, h, w)
        self.pcas: dict[tuple, tuple[PCA, dict[str, torch.Tensor], float, float]] = {}
        self.scored: dict[tuple, Scored] = {}

    def _pca(self, layers: tuple[str, ...], k: int, level: float):
        key = (layers, k, level)
        if key not in self.pcas:
            start, cpu = time.perf_counter(), time.process_time()
            feats = {s: fuse_and_pool(self.raw[s], layers, k) for s in ("fit", "val", "test")}
            pca = PCA(level).fit(feats["fit"].reshape(feats["fit"].shape[0], -1))
            self.pcas[key] = (pca, feats, time.perf_counter() - start,
                              time.process_time() - cpu)
        return self.pcas[key]

    def single(self, layers: tuple[str, ...], k: int, level: float, scorer: str) -> Scored:
        key = (layers, k, level, scorer)
        if key not in self.scored:
            pca, feats, pca_s, pca_cpu = self._pca(layers, k, level)
            start, cpu = time.perf_counter(), time.process_time()
            name, _, shrink = scorer.partition(":")
            params = {"shrinkage": float(shrink)} if shrink else {}
            model = build_scorer(name, params).fit(feats["fit"], pca)
            val, test = model.score(feats["val"], pca), model.score(feats["test"], pca)
            self.scored[key] = Scored(val.scores.double(), val.maps, test.scores.double(),
                                      test.maps, pca.n_components_,
                                      pca_s + time.perf_counter() - start,
                                      pca_cpu + time.process_time() - cpu)
        return self.scored[key]

    def real_ensemble(self, layers: tuple[str, ...], k: int, level: float, scorer: str,
                      how: str):
        """dfmx's ensemble: ``(image scores (N,), grid maps or None, seconds, cpu seconds,
        n_components)`` with reduction ``how`` (a study name: sum, max, top1, top5)."""
        key = ("real", layers, k, level, scorer)
        name, _, shrink = scorer.partition(":")
        if key not in self.pcas:
            params = {"shrinkage": float(shrink)} if shrink else {}
            model = DFMModel.from_config(ModelConfig(
                backbone="efficientnet_lite0", layers=layers, pooling_params={"kernel_size": k},
                n_comps=level, score_type=name, scorer_params=params, combine="ensemble"))
            start, cpu = time.perf_counter(), time.process_time()
            sub = {s: {n: self.raw[s][n] for n in layers} for s in ("fit", "val", "test")}
            feats = {s: model.pool_and_fuse(r) for s, r in sub.items()}
            model.fit(feats["fit"].reshape(feats["fit"].shape[0], -1), feats["fit"].shape)
            self.pcas[key] = (model, feats, time.perf_counter() - start,
                              time.process_time() - cpu)
        model, feats, fit_s, fit_cpu = self.pcas[key]
        start, cpu = time.perf_counter(), time.process_time()
        reduction, share = {"sum": ("sum", 0.05), "max": ("max", 0.05),
                            "top1": ("topk", 0.01), "top5": ("topk", 0.05)}[how]
        if reduction != "sum" and not model.produces_maps:
            raise ValueError(f"{name} gives no maps to reduce")
        model.ensemble.reduction, model.ensemble.share = reduction, share
        model.ensemble.calibrate(feats["val"])
        scores, maps = model.score(feats["test"].reshape(feats["test"].shape[0], -1),
                                   feats["test"].shape)
        return (scores.double(), maps, fit_s + time.perf_counter() - start,
                fit_cpu + time.process_time() - cpu, str(model.n_components))

    def ensemble(self, layers: tuple[str, ...], k: int, level: float, scorer: str):
        """``(image scores (N,), grid maps (N, 1, h, w) or None, seconds, cpu seconds,
        n_components)``."""
        parts = [self.single((name,), k, level, scorer) for name in layers]
        scores = sum((p.test_scores - p.val_scores.mean()) / p.val_scores.std() for p in parts)
        maps = None
        if parts[0].test_maps is not None:
            grid = max((p.test_maps.shape[-2:] for p in parts), key=lambda s: s[0] * s[1])
            maps = sum(F.interpolate(p.test_maps / p.val_maps.std(), size=grid,
                                     mode="bilinear", align_corners=False)
                       for p in parts)
        return (scores, maps, sum(p.seconds for p in parts), sum(p.cpu_seconds for p in parts),
                "+".join(str(p.n_components) for p in parts))


def reduce_map(maps: np.ndarray, how: str) -> np.ndarray:
    """Image scores ``(N,)`` from image-size maps ``(N, H, W)``: ``max``, ``top1``, ``top5``."""
    flat = maps.reshape(maps.shape[0], -1)
    if how == "max":
        return flat.max(1)
    frac = {"top1": 0.01, "top5": 0.05}[how]
    k = max(1, math.ceil(frac * flat.shape[1]))
    return np.sort(flat, axis=1)[:, -k:].mean(1)


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, choices=("bottle", "demo", "texture"))
    parser.add_argument("--out", type=Path, default=Path("study"))
    parser.add_argument("--mvtec-root", type=Path, default=Path(os.environ.get(
        "DFMX_MVTEC_ROOT", Path(__file__).resolve().parents[2] / "shared/data/mvtec_ad")))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--kernels", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.97])
    parser.add_argument("--scorers", nargs="+", default=["fre", "nll", "ppca"],
                        help="scorer names; ppca:S sets its shrinkage to S")
    parser.add_argument("--layer-sets", nargs="+", default=None,
                        help="layer sets such as blocks.4 blocks.2+blocks.4 (default: all)")
    parser.add_argument("--combinations", nargs="+", default=["concat", "ensemble"],
                        choices=("concat", "ensemble", "ensemble-own-grid"))
    parser.add_argument("--blur", type=float, nargs="+", default=[0.0],
                        help="Gaussian sigmas (pixels) applied to the image-size maps")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--top", type=int, default=15, help="rows in the markdown table")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    layer_sets = (LAYER_SETS if args.layer_sets is None
                  else tuple(tuple(s.split("+")) for s in args.layer_sets))
    needed = sorted({n for s in layer_sets for n in s}, key=LAYERS.index)

    train, test = load_data(args.data, args.out, args.mvtec_root)
    order = np.random.default_rng(0).permutation(len(train))
    n_val = max(2, round(args.val_fraction * len(train)))
    val_idx, fit_idx = sorted(order[:n_val]), sorted(order[n_val:])
    splits = {"fit": [train[i] for i in fit_idx], "val": [train[i] for i in val_idx],
              "test": test}
    size = args.image_size
    model = DFMModel("efficientnet_lite0", needed, precision="auto")
    start, cpu_start = time.perf_counter(), time.process_time()
    raw = {s: extract(model, samples, size) for s, samples in splits.items()}
    extract_s = time.perf_counter() - start
    extract_cpu = time.process_time() - cpu_start
    print(f"{args.data}: fit {len(splits['fit'])}, val {len(splits['val'])}, "
          f"test {len(test)}; extraction of {needed} at {size} px: {extract_s:.1f} s "
          f"({extract_cpu:.1f} CPU s)", flush=True)
    labels = np.asarray([int(s.label) for s in test])
    masks = torch.stack([load_mask(s.mask_path, size)[0] if s.mask_path is not None
                         else torch.zeros(size, size, dtype=torch.bool) for s in test]).numpy()
    has_mask = np.asarray([s.mask_path is not None for s in test])
    keep = (labels == 0) | has_mask

    study = Study(raw)
    rows = []
    for layers, k, level, scorer, comb in itertools.product(
            layer_sets, args.kernels, args.levels, args.scorers, args.combinations):
        if comb.startswith("ensemble") and len(layers) == 1:
            continue
        try:
            real: dict[str, torch.Tensor] = {}
            if comb == "ensemble":
                for how in REDUCTIONS:
                    try:
                        got = study.real_ensemble(layers, k, level, scorer, how)
                    except ValueError:
                        if how == "sum":
                            raise
                        continue
                    real[how] = got[0]
                    if how == "sum":
                        scores, maps, secs, cpu, ncomp = got
            elif comb == "concat":
                one = study.single(layers, k, level, scorer)
                scores, maps, secs, cpu, ncomp = (one.test_scores, one.test_maps, one.seconds,
                                                  one.cpu_seconds, str(one.n_components))
            else:
                scores, maps, secs, cpu, ncomp = study.ensemble(layers, k, level, scorer)
        except ValueError as exc:  # e.g. a grid smaller than the pooling window
            print(f"skip {layers} k={k} {scorer} {comb}: {exc}", flush=True)
            continue
        base = {"data": args.data, "image_size": size, "layers": "+".join(layers),
                "combination": comb if len(layers) > 1 else "single", "kernel": k,
                "pca_level": level, "scorer": scorer, "n_components": ncomp,
                "seconds": round(secs, 2), "cpu_seconds": round(cpu, 2)}
        for sigma in args.blur:
            pix = {"pixel_AUROC": float("nan"), "pixel_PRO": float("nan")}
            big = None
            if maps is not None:
                big = upsample_maps(maps.float(), (size, size))[:, 0].numpy()
                if sigma > 0:
                    big = gaussian_filter(big, (0, sigma, sigma), mode="nearest")
                got = pixel_metrics(masks[keep], big[keep])
                pix = {"pixel_AUROC": got["pixel_AUROC"], "pixel_PRO": got["pixel_PRO"]}
            mine = []
            for how in REDUCTIONS:
                if how != "sum" and big is None:
                    continue
                if real:
                    if how not in real:
                        continue
                    image = real[how].numpy()
                else:
                    image = scores.numpy() if how == "sum" else reduce_map(big, how)
                mine.append({**base, "blur": sigma, "reduction": how,
                             "image_AUROC": round(image_auroc(labels, image), 4),
                             "pixel_AUROC": round(pix["pixel_AUROC"], 4),
                             "pixel_PRO": round(pix["pixel_PRO"], 4)})
            rows += mine
            images = " ".join(f"{r['reduction']}={r['image_AUROC']:.4f}" for r in mine)
            print(f"{base['layers']:28s} {base['combination']:8s} k={k} {level} {scorer:5s} "
                  f"blur={sigma:g} {images} pix={pix['pixel_AUROC']:.4f} "
                  f"pro={pix['pixel_PRO']:.4f} {secs:.1f}s", flush=True)

    stem = args.out / f"{args.data}_{size}"
    with open(f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ranked = sorted(rows, key=lambda r: (-(r["image_AUROC"] + np.nan_to_num(r["pixel_AUROC"])
                                          + np.nan_to_num(r["pixel_PRO"]))))
    cols = ["layers", "combination", "kernel", "pca_level", "scorer", "blur", "reduction",
            "image_AUROC", "pixel_AUROC", "pixel_PRO", "n_components", "seconds",
            "cpu_seconds"]
    lines = [f"{args.data} at {size} px (extraction of {', '.join(needed)}: {extract_s:.1f} s, "
             f"{extract_cpu:.1f} CPU s)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in ranked[:args.top]]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
