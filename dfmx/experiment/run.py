"""One experiment job: data → features → fit → score → metrics → files in the run folder.

Takes a plain nested mapping (the resolved config); knows nothing of Hydra.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dfmx import registry
from dfmx.data import ImageDataset, Sample, make_loader
from dfmx.engine.torch_model import DFMModel
from dfmx.experiment import reports
from dfmx.experiment.saved_model import save_model
from dfmx.metrics import compute_metrics

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a job produced. ``metrics`` includes timings (``time_*`` in seconds)."""

    metrics: dict[str, float]
    output_dir: Path
    model: DFMModel
    n_train: int
    n_test: int
    files: dict[str, Path] = field(default_factory=dict)


def _split(node: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    params = dict(node)
    return str(params.pop("name")), params


def build_model(cfg: Mapping[str, Any]) -> DFMModel:
    """The :class:`DFMModel` a config describes (not fitted)."""
    _, backbone = _split(cfg["backbone"])
    layers = list(cfg["layer"].get("names") or backbone["layers"])
    pooling_name, pooling = _split(cfg["pooling"])
    scorer_name, scorer_params = _split(cfg["scorer"])
    return DFMModel(
        backbone=backbone["arch"],
        layer=layers,
        pre_trained=bool(backbone["pretrained"]),
        pooling_kernel_size=int(pooling.pop("kernel_size", 1)),
        n_comps=cfg["pca_level"],
        score_type=scorer_name,
        pooling=pooling_name,
        weights=backbone.get("weights"),
        precision=cfg.get("precision", "fp32"),
        scorer_params=scorer_params,
        device=cfg.get("device", "cpu"),
    )


def load_samples(data_cfg: Mapping[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """Training and test samples from the data-source plugin the config names."""
    name, params = _split(data_cfg)
    source = registry.load("data", name)(**params)
    train, test = source.load()
    if len(train) < 2:
        raise ValueError(
            f"data source {name!r} gave {len(train)} training image(s); DFM needs at least 2"
        )
    if not test:
        raise ValueError(f"data source {name!r} gave no test images")
    return train, test


def _loader(
    samples: list[Sample], cfg: Mapping[str, Any], model: DFMModel
) -> torch.utils.data.DataLoader:
    # Resize as the backbone was trained (its pretrained config's interpolation).
    dataset = ImageDataset(samples, image_size=int(cfg["image_size"]),
                           interpolation=model.feature_extractor.interpolation)
    return make_loader(
        dataset, batch_size=int(cfg["batch_size"]), num_workers=cfg.get("num_workers")
    )


@contextmanager
def _timer(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def extract_features(
    model: DFMModel, samples: list[Sample], cfg: Mapping[str, Any], desc: str
) -> tuple[torch.Tensor, torch.Size]:
    """Training features ``(N, C·h·w)`` and their map shape for ``samples``."""
    chunks, shape = [], None
    for batch in tqdm(_loader(samples, cfg, model), desc=desc, unit="batch", leave=False):
        feats, shape = model.get_features(batch["image"])
        chunks.append(feats)
    return torch.cat(chunks), shape


def score_samples(
    model: DFMModel, samples: list[Sample], cfg: Mapping[str, Any], desc: str = "score test"
) -> dict[str, np.ndarray]:
    """Scores, labels, masks and (if the scorer gives them) image-size maps of ``samples``."""
    scores, maps, masks, labels = [], [], [], []
    for batch in tqdm(_loader(samples, cfg, model), desc=desc, unit="batch", leave=False):
        out = model(batch["image"])
        scores.append(out.pred_score.cpu())
        if out.anomaly_map is not None:
            maps.append(out.anomaly_map[:, 0].cpu())
        masks.append(batch["mask"][:, 0].bool())
        labels.append(torch.as_tensor(batch["label"]))
    return {
        "scores": torch.cat(scores).double().numpy(),
        "maps": torch.cat(maps).float().numpy() if maps else None,
        "masks": torch.cat(masks).numpy(),
        "labels": torch.cat(labels).numpy().astype(int),
    }


def run_experiment(cfg: Mapping[str, Any], output_dir: str | Path) -> RunResult:
    """Run one job described by the resolved config ``cfg``; write its files to ``output_dir``.

    Files: ``metrics.json``, ``predictions.csv``, ``roc.png``, ``score_histogram.png``,
    ``overlays/*.png`` (maps only) and ``model/`` (when ``save_model``).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(cfg.get("seed", 0)))
    timings: dict[str, float] = {}
    with _timer(timings, "time_load_data"):
        train, test = load_samples(cfg["data"])
    with _timer(timings, "time_build_model"):
        model = build_model(cfg)
    log.info("backbone %s (weights: %s), layers %s", model.backbone,
             model.feature_extractor.weights_source, model.layers)
    with _timer(timings, "time_extract_train"):
        features, shape = extract_features(model, train, cfg, "train features")
    with _timer(timings, "time_fit"):
        model.fit(features, shape)
    del features
    with _timer(timings, "time_score_test"):
        res = score_samples(model, test, cfg)

    has_masks = bool(res["masks"].any()) and res["maps"] is not None
    metrics = compute_metrics(
        res["labels"], res["scores"],
        masks=res["masks"] if has_masks else None,
        maps=res["maps"] if has_masks else None,
    )
    n_images = len(train) + len(test)
    timings["time_total"] = sum(timings.values())
    metrics.update(timings)
    metrics["images_per_s"] = n_images / max(
        timings["time_extract_train"] + timings["time_score_test"], 1e-9
    )
    metrics["n_components"] = float(model.pca_model.n_components_)
    metrics["feature_dim"] = float(model.pca_model.mean_.numel())
    metrics["n_train"] = float(len(train))
    metrics["n_test"] = float(len(test))

    files = _write_outputs(out, cfg, model, test, res, metrics)
    return RunResult(metrics=metrics, output_dir=out, model=model, n_train=len(train),
                     n_test=len(test), files=files)


def _write_outputs(
    out: Path,
    cfg: Mapping[str, Any],
    model: DFMModel,
    test: list[Sample],
    res: dict[str, Any],
    metrics: dict[str, float],
) -> dict[str, Path]:
    paths = [str(s.path) for s in test]
    defect_types = [s.defect_type for s in test]
    threshold = metrics.get("image_F1_threshold", float("nan"))
    if not np.isfinite(threshold):
        threshold = float(np.median(res["scores"]))
    files = {
        "metrics": out / "metrics.json",
        "predictions": out / "predictions.csv",
        "roc": out / "roc.png",
        "histogram": out / "score_histogram.png",
    }
    reports.write_metrics_json(files["metrics"], metrics)
    reports.write_predictions_csv(
        files["predictions"], paths, res["labels"], res["scores"], threshold, defect_types
    )
    reports.plot_roc(files["roc"], res["labels"], res["scores"], metrics.get("image_AUROC"))
    reports.plot_score_histogram(files["histogram"], res["labels"], res["scores"], threshold)
    if res["maps"] is not None and int(cfg.get("overlays", 0)) > 0:
        reports.write_overlays(
            out / "overlays", paths, res["labels"], res["scores"], res["maps"],
            res["masks"], int(cfg["image_size"]), k=int(cfg["overlays"]),
        )
        files["overlays"] = out / "overlays"
    if cfg.get("save_model", True):
        files["model"] = save_model(
            model, out / "model", image_size=int(cfg["image_size"]), threshold=threshold,
            config=json.loads(json.dumps(dict(cfg), default=str)),
        )
    return files
