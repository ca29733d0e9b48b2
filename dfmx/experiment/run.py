"""One experiment job: data → features → fit → score → metrics → files in the run folder.

Takes a plain nested mapping (the resolved config); knows nothing of Hydra.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfmx import registry
from dfmx.data import Sample, load_mask
from dfmx.data.batches import files_fingerprint
from dfmx.data.overlaps import check_overlaps
from dfmx.data.sources import mask_locations
from dfmx.data.splits import DEFAULT_VAL_FRACTION, hold_out_validation, source_options
from dfmx.data.synthetic import SYNTHESIS_VERSION, synthesise_anomalies
from dfmx.data.validation import (
    MISSING_MASKS_METRIC,
    SKIPPED_CSV,
    Skipped,
    count_missing_masks,
    missing_masks_note,
    validate_samples,
    validate_split,
    write_skipped_csv,
)
from dfmx.engine.torch_model import DFMModel, upsample_maps
from dfmx.errors import DataError
from dfmx.experiment import overlays, plots, result_files
from dfmx.experiment.job_model import checked_model_config, model_config
from dfmx.experiment.predict import model_batches
from dfmx.experiment.saved_model import save_model
from dfmx.features.cache import FeatureCache, feature_key
from dfmx.memo import Memo
from dfmx.metrics import compute_metrics
from dfmx.metrics.image import image_auroc
from dfmx.metrics.pixel import pixel_auroc, pixel_metrics
from dfmx.metrics.threshold import (
    DEFAULT_THRESHOLD_FPR,
    at_threshold,
    fpr_threshold,
    score_statistics,
)
from dfmx.path_text import path_text

log = logging.getLogger(__name__)

#: The synthetic set's masks in its cache entry, beside the layers' maps (no module name
#: has a colon).
_SYNTHETIC_MASKS = "masks:synthetic"


@dataclass
class RunResult:
    """What a job produced. ``metrics`` includes timings (``time_*`` in seconds)."""

    metrics: dict[str, float]
    output_dir: Path
    model: DFMModel
    n_train: int
    n_test: int
    #: Validation normals (held out of training; they set the threshold).
    n_val: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    #: Lines for the summary (``{"masks": "..."}`` when anomalous images lack masks).
    notes: dict[str, str] = field(default_factory=dict)


def build_model(cfg: Mapping[str, Any]) -> DFMModel:
    """The :class:`DFMModel` a job config describes (not fitted)."""
    return DFMModel.from_config(model_config(cfg))


def load_samples(data_cfg: Mapping[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """Training and test samples from the data-source plugin the config names (the
    training samples include those a job holds out for validation, see
    :func:`load_splits`)."""
    train, val, test, _ = _load_samples(data_cfg)
    return train + (val or []), test


def load_splits(data_cfg: Mapping[str, Any], seed: int = 0) -> tuple[
        list[Sample], list[Sample], list[Sample]]:
    """``(train, val, test)`` as a job uses them: the source's validation images, or
    ``data_cfg["val_fraction"]`` of its training images held out with ``seed``
    (:func:`~dfmx.data.splits.hold_out_validation`). Files are not checked here."""
    train, val, test, _ = _load_samples(data_cfg)
    if val is None:
        train, val = hold_out_validation(
            train, float(data_cfg.get("val_fraction", DEFAULT_VAL_FRACTION)), seed)
    return train, val, test


def _load_samples(data_cfg: Mapping[str, Any]) -> tuple[
        list[Sample], list[Sample] | None, list[Sample], str]:
    """The source's ``(train, val or None, test)`` and where it looks for masks
    (:func:`mask_locations`)."""
    name, params = registry.plugin_params(data_cfg)
    cls = registry.load("data", name)
    source = cls(**source_options(cls, params))
    loaded = tuple(source.load())
    if len(loaded) == 3:
        train, val, test = (list(part) for part in loaded)
    elif len(loaded) == 2:
        (train, test), val = (list(part) for part in loaded), None
    else:
        raise DataError(f"data source {name!r} returned {len(loaded)} lists; a data source "
                        "returns (train, test) or (train, val, test)")
    if len(train) < 2:
        raise DataError(
            f"data source {name!r} gave {len(train)} training image(s); DFM needs at least 2"
        )
    if not test:
        raise DataError(f"data source {name!r} gave no test images")
    return train, val, test, mask_locations(source)


@contextmanager
def _timer(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


RawFeatures = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LoaderSettings:
    """How a job's images reach the backbone: resized to ``image_size`` x ``image_size``
    pixels, ``batch_size`` at a time, decoded by ``num_workers`` threads (``None``: one
    per CPU)."""

    image_size: int
    batch_size: int
    num_workers: int | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LoaderSettings:
        """The settings of a job config (``image_size``, ``batch_size``, ``num_workers``)."""
        workers = cfg.get("num_workers")
        return cls(int(cfg["image_size"]), int(cfg["batch_size"]),
                   None if workers is None else int(workers))


def _raw_of_batches(model: DFMModel, batches: Iterable[torch.Tensor]) -> RawFeatures:
    """Raw backbone maps ``{layer: (N, C, h, w)}`` of image ``batches``, on the CPU, float32."""
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in model.layers}
    for batch in batches:
        raw = model.raw_features(batch)
        for name in chunks:
            chunks[name].append(raw[name].cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def raw_features(
    model: DFMModel,
    samples: list[Sample],
    loader: LoaderSettings,
    split: str,
    cache: FeatureCache | None = None,
    desc: str | None = None,
) -> tuple[RawFeatures, bool]:
    """``({layer: (N, C, h, w)}, cache_hit)``: raw backbone maps of ``samples``.

    Read from ``cache`` when it holds them (the key is :func:`~dfmx.features.cache.
    feature_key`), else extracted (and stored when ``cache`` is given). The maps are on
    the backbone's device, float32, identical whichever way they came.
    """
    desc = desc or f"{split} features"

    def compute(image_store: FeatureCache | None = None) -> RawFeatures:
        with model_batches(model, samples, loader.image_size, loader.batch_size,
                           loader.num_workers, desc, image_store) as batches:
            return _raw_of_batches(model, batches)

    if cache is None:
        raw, hit = compute(), False
    else:
        key = feature_key(model.feature_extractor, [s.path for s in samples],
                          loader.image_size, loader.batch_size)
        raw, hit = cache.get_or_compute(key, split, lambda: compute(image_store=cache))
        log.info("%s features: cache %s (%s)", split, "hit" if hit else "miss",
                 cache.entry_path(key, split))
    device = model.feature_extractor.device
    return {name: raw[name].to(device) for name in model.layers}, hit


def _chunks(raw: RawFeatures, size: int) -> Iterator[RawFeatures]:
    """Consecutive slices of ``size`` items (the loader's batches) of every layer."""
    n = next(iter(raw.values())).shape[0]
    for start in range(0, n, size):
        yield {name: t[start:start + size] for name, t in raw.items()}


def features_from_raw(
    model: DFMModel, raw: RawFeatures, image_size: int, batch_size: int
) -> tuple[torch.Tensor, torch.Size]:
    """Pooled, fused, flattened features ``(N, C·h·w)`` and their map shape ``(N, C, h, w)``.

    ``raw`` holds the maps of images of ``image_size`` pixels a side; works ``batch_size``
    items at a time, as extraction from images does.
    """
    maps = [model.pool_and_fuse(part, image_size=(image_size, image_size))
            for part in _chunks(raw, batch_size)]
    feats = torch.cat([m.reshape(m.shape[0], -1) for m in maps])
    return feats, torch.Size((feats.shape[0], *maps[0].shape[1:]))


def extract_features(
    model: DFMModel,
    samples: list[Sample],
    loader: LoaderSettings,
    desc: str,
    *,
    cache: FeatureCache | None = None,
    split: str = "train",
) -> tuple[torch.Tensor, torch.Size]:
    """Training features ``(N, C·h·w)`` and their map shape for ``samples``."""
    raw, _ = raw_features(model, samples, loader, split, cache, desc)
    return features_from_raw(model, raw, loader.image_size, loader.batch_size)


#: Test masks by the mask files' identity and size: the jobs of a sweep decode them once.
_MASKS: Memo[torch.Tensor] = Memo(4)


def _masks(samples: list[Sample], image_size: int) -> torch.Tensor:
    """Ground-truth masks ``(N, H, W)`` bool, as :class:`ImageDataset` gives them.

    Memoised in the process by the mask files' identity (path, size, mtime) and size, so
    the jobs of a sweep decode them once.
    """
    paths = [s.mask_path for s in samples if s.mask_path is not None]
    memo_key = (files_fingerprint(paths) + "|" + ",".join(
        str(int(s.mask_path is not None)) for s in samples), image_size)

    def load() -> torch.Tensor:
        empty = torch.zeros((image_size, image_size), dtype=torch.bool)
        return torch.stack([
            load_mask(s.mask_path, (image_size, image_size))[0] if s.mask_path is not None
            else empty for s in samples
        ])

    return _MASKS.get(memo_key, load).clone()


def score_raw(
    model: DFMModel, raw: RawFeatures, samples: list[Sample], image_size: int, batch_size: int
) -> dict[str, np.ndarray]:
    """Like :func:`score_samples`, from raw maps ``{layer: (N, C, h, w)}`` of ``samples``
    (images of ``image_size`` pixels a side).

    ``batch_size`` items at a time, exactly as ``model(images)`` would score the loader's
    batches.
    """
    size = image_size
    scores, maps = [], []
    for part in _chunks(raw, batch_size):
        fmaps = model.pool_and_fuse(part, image_size=(size, size))
        batch_scores, grid_maps = model.score(fmaps.reshape(fmaps.shape[0], -1), fmaps.shape)
        scores.append(batch_scores.cpu())
        if grid_maps is not None:
            maps.append(upsample_maps(grid_maps, (size, size))[:, 0].cpu())
    return {
        "scores": torch.cat(scores).double().numpy(),
        "maps": torch.cat(maps).float().numpy() if maps else None,
        "masks": _masks(samples, size).numpy(),
        "labels": np.asarray([int(s.label) for s in samples]).astype(int),
    }


def score_samples(
    model: DFMModel,
    samples: list[Sample],
    loader: LoaderSettings,
    desc: str = "score test",
    *,
    cache: FeatureCache | None = None,
    split: str = "test",
) -> dict[str, np.ndarray]:
    """Scores, labels, masks and (if the scorer gives them) image-size maps of ``samples``.

    ``scores (N,)`` float64, ``maps (N, H, W)`` float32 or ``None``, ``masks (N, H, W)``
    bool, ``labels (N,)`` int.
    """
    raw, _ = raw_features(model, samples, loader, split, cache, desc)
    return score_raw(model, raw, samples, loader.image_size, loader.batch_size)


def _cache_from(options: Mapping[str, Any] | None,
                cache: FeatureCache | bool | None) -> FeatureCache | None:
    """``cache`` when it is one, none for ``False``, else the cache ``options`` (the job
    config's ``cache``) describe."""
    if isinstance(cache, FeatureCache):
        return cache
    if cache is False:
        return None
    return FeatureCache.from_config(options)


def run_experiment(
    cfg: Mapping[str, Any],
    output_dir: str | Path,
    *,
    cache: FeatureCache | bool | None = None,
) -> RunResult:
    """Run one job described by the resolved config ``cfg``; write its files to ``output_dir``.

    Files: ``metrics.json``, ``predictions.csv``, ``roc.png``, ``score_histogram.png``,
    ``overlays/*.png`` (maps only) and ``model/`` (when ``save_model``).

    The job fits on the training normals, then calls ``model.calibrate(val_raw)`` with the
    raw maps of the validation normals (:func:`load_splits`), scores them and one
    synthetic anomaly on each (:mod:`dfmx.data.synthetic`): the decision threshold is
    :func:`~dfmx.metrics.threshold.fpr_threshold` of the validation scores at
    ``cfg["threshold_fpr"]``, and ``val_synthetic_AUROC`` (``val_synthetic_pixel_AUROC``
    with maps) rank configurations without test labels. Test labels give the reported
    figures only: ``image_*_at_val_threshold`` at that threshold, and the oracle
    ``image_F1_oracle`` whose threshold is chosen on the test labels.

    Raw backbone features of the training, validation and test images go through the
    feature cache that ``cfg["cache"]`` describes (:meth:`FeatureCache.from_config`; on by
    default); ``cache`` overrides it: a :class:`FeatureCache`, or ``False`` for none. The
    metrics record ``cache_hit_train``/``cache_hit_val``/``cache_hit_test`` (1.0 or 0.0);
    the ``time_*`` figures include reading the cache or extracting.

    Raises:
        ConfigError: for bad options (:func:`~dfmx.experiment.job_model.
            checked_model_config`: the job-level ones and the model's), all in one
            message, before any data is read.
    """
    record = checked_model_config(cfg)
    loader = LoaderSettings.from_config(cfg)
    image_size, batch_size = loader.image_size, loader.batch_size
    feature_cache = _cache_from(cfg.get("cache"), cache)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    fpr = float(cfg.get("threshold_fpr", DEFAULT_THRESHOLD_FPR))
    timings: dict[str, float] = {}
    with _timer(timings, "time_load_data"):
        train, val, test, skipped, masks_at = _checked_splits(cfg["data"], image_size, seed)
    write_skipped_csv(out / SKIPPED_CSV, skipped)
    with _timer(timings, "time_build_model"):
        model = DFMModel.from_config(record)
    log.info("backbone %s (weights: %s), layers %s", model.backbone,
             model.feature_extractor.weights_source, model.layers)
    with _timer(timings, "time_extract_train"):
        raw, hit_train = raw_features(model, train, loader, "train", feature_cache)
        features, shape = features_from_raw(model, raw, image_size, batch_size)
        del raw
    with _timer(timings, "time_fit"):
        model.fit(features, shape)
    del features
    validation: dict[str, Any] = {}
    hit_val = False
    if val:
        with _timer(timings, "time_validate"):
            val_raw, hit_val = raw_features(model, val, loader, "val", feature_cache,
                                           "val features")
            model = model.calibrate(val_raw)
            fake_raw, fake_masks = _synthetic_raw(model, val, loader, seed, feature_cache)
            # Clean and synthetic validation images scored in one pass.
            both = score_raw(model, {n: torch.cat([val_raw[n], fake_raw[n]]) for n in val_raw},
                             val + val, image_size, batch_size)
            del val_raw, fake_raw
            both["masks"][len(val):] = fake_masks
            validation = _validation_metrics(both, len(val))
    else:
        log.warning("no validation images (%d training image(s), data.val_fraction=%s): no "
                    "threshold and no label-free selection metric", len(train),
                    cfg["data"].get("val_fraction", DEFAULT_VAL_FRACTION))
    threshold = (fpr_threshold(validation["scores"], fpr) if validation else float("nan"))
    with _timer(timings, "time_score_test"):
        raw, hit_test = raw_features(model, test, loader, "test", feature_cache, "score test")
        res = score_raw(model, raw, test, image_size, batch_size)
        del raw

    # Pixel metrics (numpy sorts, which release the GIL) run beside the plots, which need
    # the image metrics only, and the files that need no metric (predictions, overlays,
    # the model: zlib and file writes, which release it too).
    with ThreadPoolExecutor(1, thread_name_prefix="dfmx-pixel-metrics") as pool:
        pixel = pool.submit(_pixel_metrics, res, test)
        metrics = compute_metrics(res["labels"], res["scores"])
        metrics["image_threshold"] = threshold
        metrics["threshold_fpr"] = fpr
        metrics.update({f"image_{k}_at_val_threshold": v for k, v in
                        at_threshold(res["labels"], res["scores"], threshold).items()})
        metrics.update(validation.get("metrics", {}))
        files = _plot(out, res, metrics, threshold, fpr)
        val_stats = score_statistics(validation["scores"]) if validation else None
        files.update(_write_outputs(out, cfg, model, test, res, threshold, fpr, val_stats))
        metrics.update(pixel.result())
    n_images = len(train) + len(test)
    timings["time_total"] = sum(timings.values())
    metrics.update(timings)
    metrics["images_per_s"] = n_images / max(
        timings["time_extract_train"] + timings["time_score_test"], 1e-9
    )
    metrics["n_components"] = float(model.n_components)
    metrics["feature_dim"] = float(model.feature_dim)
    metrics["n_train"] = float(len(train))
    metrics["n_val"] = float(len(val))
    metrics["n_test"] = float(len(test))
    metrics["cache_hit_train"] = float(hit_train)
    metrics["cache_hit_val"] = float(hit_val)
    metrics["cache_hit_test"] = float(hit_test)
    metrics["n_skipped"] = float(len(skipped))
    metrics[MISSING_MASKS_METRIC] = float(count_missing_masks(test))
    notes = {"masks": note} if (note := missing_masks_note(test, masks_at)) else {}
    if not val:
        notes["threshold"] = "none: no validation images (see data.val_fraction)"
    files["metrics"] = out / "metrics.json"
    result_files.write_metrics_json(files["metrics"], metrics)
    return RunResult(metrics=metrics, output_dir=out, model=model, n_train=len(train),
                     n_test=len(test), n_val=len(val), files=files, notes=notes)


def _checked_splits(data_cfg: Mapping[str, Any], image_size: int, seed: int) -> tuple[
        list[Sample], list[Sample], list[Sample], list[Skipped], str]:
    """``(train, val, test, skipped, masks_at)``: the source's samples with unreadable files
    skipped, checked (:func:`validate_split`), and the validation normals the source gave
    or ``data.val_fraction`` of the training ones held out with ``seed``."""
    train, given_val, test, masks_at = _load_samples(data_cfg)
    train, test, skipped = validate_split(train, test, image_size)
    if given_val is None:
        train, val = hold_out_validation(
            train, float(data_cfg.get("val_fraction", DEFAULT_VAL_FRACTION)), seed)
    else:
        val, skipped_val = validate_samples(given_val, image_size)
        skipped += skipped_val
        check_overlaps(train + val, test)
    return train, val, test, skipped, masks_at


def _synthetic_raw(model: DFMModel, val: list[Sample], loader: LoaderSettings, seed: int,
                   cache: FeatureCache | None) -> tuple[RawFeatures, np.ndarray]:
    """Raw maps ``{layer: (N, C, h, w)}`` (on the backbone's device) and masks
    ``(N, H, W)`` bool of one synthetic anomaly on each of the ``N`` validation images
    (:func:`synthesise_anomalies`).

    Maps and masks go through ``cache`` together, under the validation images' key plus
    the synthesis version and ``seed``: a hit neither decodes nor synthesises.
    """
    size, batch = loader.image_size, loader.batch_size

    def compute() -> dict[str, torch.Tensor]:
        with model_batches(model, val, size, batch, loader.num_workers, "val images",
                           cache) as batches:
            images = torch.cat(list(batches))
        made = synthesise_anomalies(images, seed)
        raw = _raw_of_batches(model, (made.images[start:start + batch]
                                      for start in range(0, made.images.shape[0], batch)))
        return {**raw, _SYNTHETIC_MASKS: made.masks}

    if cache is None:
        entry = compute()
    else:
        key = {**feature_key(model.feature_extractor, [s.path for s in val], size, batch),
               "synthetic": {"version": SYNTHESIS_VERSION, "seed": seed, "masks": True}}
        entry, _ = cache.get_or_compute(key, "synthetic", compute)
    device = model.feature_extractor.device
    return ({n: entry[n].to(device) for n in model.layers},
            entry[_SYNTHETIC_MASKS].numpy())


def _validation_metrics(both: dict[str, Any], n_val: int) -> dict[str, Any]:
    """The validation normals' scores, and the label-free metrics from ``both``
    (:func:`score_raw` of the ``n_val`` clean validation images followed by their
    synthetic anomalies, ``masks`` the paste masks): ``val_synthetic_AUROC``, and
    ``val_synthetic_pixel_AUROC`` when the scorer gives maps."""
    clean = both["scores"][:n_val]
    labels = np.r_[np.zeros(n_val, int), np.ones(both["scores"].size - n_val, int)]
    metrics = {"val_synthetic_AUROC": image_auroc(labels, both["scores"]),
               "val_score_mean": float(clean.mean()), "val_score_max": float(clean.max())}
    if both["maps"] is not None:
        metrics["val_synthetic_pixel_AUROC"] = pixel_auroc(both["masks"], both["maps"])
    return {"scores": clean, "metrics": metrics}


def _pixel_metrics(res: dict[str, Any], test: list[Sample]) -> dict[str, float]:
    """Pixel metrics (when the scorer gives maps and masks exist) on the normal images and
    the anomalous images that have a mask: an anomalous image without a mask has unknown
    pixel labels, not all-normal ones. ``{}`` when there are none."""
    has_mask = np.asarray([s.mask_path is not None for s in test])
    keep = (res["labels"] == 0) | has_mask
    if res["maps"] is None or not bool(res["masks"][keep].any()):
        return {}
    return pixel_metrics(res["masks"][keep], res["maps"][keep])


def _plot(out: Path, res: dict[str, Any], metrics: Mapping[str, float],
          threshold: float, fpr: float) -> dict[str, Path]:
    """The ROC curve and the score histogram of the test set."""
    files = {"roc": out / "roc.png", "histogram": out / "score_histogram.png"}
    plots.plot_roc(files["roc"], res["labels"], res["scores"], metrics.get("image_AUROC"))
    plots.plot_score_histogram(files["histogram"], res["labels"], res["scores"], threshold,
                               threshold_label=f"validation threshold (FPR {fpr:g})")
    return files


def _write_outputs(
    out: Path,
    cfg: Mapping[str, Any],
    model: DFMModel,
    test: list[Sample],
    res: dict[str, Any],
    threshold: float,
    fpr: float,
    val_stats: dict[str, float] | None,
) -> dict[str, Path]:
    """The files of the job that need no metric: ``predictions.csv``, the overlays and
    the model (``metrics.json`` comes last, with every metric)."""
    paths = [str(s.path) for s in test]
    defect_types = [s.defect_type for s in test]
    files = {"predictions": out / "predictions.csv"}
    result_files.write_predictions_csv(
        files["predictions"], [path_text(p) for p in paths], res["labels"], res["scores"],
        threshold, defect_types,
    )
    if res["maps"] is not None and int(cfg.get("overlays", 0)) > 0:
        overlays.write_overlays(
            out / "overlays", paths, res["labels"], res["scores"], res["maps"],
            res["masks"], int(cfg["image_size"]), k=int(cfg["overlays"]),
        )
        files["overlays"] = out / "overlays"
    if cfg.get("save_model", True):
        files["model"] = save_model(
            model, out / "model", image_size=int(cfg["image_size"]), threshold=threshold,
            threshold_fpr=fpr, threshold_source="validation normals",
            **({"val_scores": val_stats} if val_stats else {}),
            # What defines the model; where it ran (tracking, cache) stays out of the file.
            config=json.loads(json.dumps(
                {k: v for k, v in cfg.items() if k not in ("tracking", "cache")}, default=str)),
        )
    return files
