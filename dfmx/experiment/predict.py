"""Score new images with a fitted model (no labels needed)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dfmx import interrupts
from dfmx.data import IMAGE_EXTENSIONS, Sample
from dfmx.data.batches import ImageStore, image_batches
from dfmx.engine.torch_model import DFMModel
from dfmx.errors import DataError


@dataclass
class Predictions:
    """``paths`` (N), ``scores (N,)``, ``maps (N, H, W)`` or ``None``, and the decision
    ``threshold`` (``score >= threshold`` is predicted anomalous; NaN when unknown)."""

    paths: list[str]
    scores: np.ndarray
    maps: np.ndarray | None
    threshold: float

    @property
    def predictions(self) -> np.ndarray:
        return self.scores >= self.threshold


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from a mix of files and folders (folders are searched recursively)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    if not files:
        raise DataError(f"no images found in {', '.join(str(i) for i in inputs)}")
    return files


@contextmanager
def model_batches(
    model: DFMModel, samples: Sequence[Sample], image_size: int, batch_size: int,
    workers: int | None, desc: str, image_store: ImageStore | None = None,
) -> Iterator[Iterator[torch.Tensor]]:
    """``with model_batches(...) as batches``: uint8 image batches for ``model``, with a
    progress bar: resized with its backbone's interpolation, decoded by
    :func:`~dfmx.data.batches.image_batches`' threads (ahead of the backbone only on a
    GPU); ``image_store`` keeps the decoded chunks for other jobs.

    However the block ends, the bar is closed (its line cleared) and the decoding threads
    are stopped on the way out, so that an error or a stop message printed further up
    starts a line of its own.
    """
    extractor = model.feature_extractor
    batches = image_batches(samples, image_size, extractor.interpolation, batch_size,
                            workers=workers, overlap=extractor.device.type != "cpu",
                            store=image_store)
    bar = tqdm(batches, desc=desc, unit="batch", leave=False,
               total=math.ceil(len(samples) / batch_size))
    try:
        yield _checked(bar)
    finally:
        bar.close()
        batches.close()


def _checked(batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``batches``, stopping at the next batch on a Ctrl-C that library code swallowed."""
    for batch in batches:
        interrupts.check()
        yield batch


def predict_images(
    model: DFMModel,
    paths: Sequence[str | Path],
    image_size: int | None = None,
    batch_size: int = 16,
    num_workers: int | None = None,
    keep_maps: bool = True,
) -> Predictions:
    """Score image files with a fitted model.

    ``image_size`` defaults to the size saved with the model (``model.metadata``).
    """
    meta = getattr(model, "metadata", {}) or {}
    size = int(image_size or meta.get("image_size") or 256)
    samples = [Sample(path=Path(p), label=0, defect_type="unknown", mask_path=None)
               for p in paths]
    scores, maps = [], []
    with torch.inference_mode(), \
            model_batches(model, samples, size, batch_size, num_workers, "predict") as batches:
        for batch in batches:
            out = model(batch)
            scores.append(out.pred_score.double().cpu())
            if keep_maps and out.anomaly_map is not None:
                maps.append(out.anomaly_map[:, 0].float().cpu())
    return Predictions(
        paths=[str(p) for p in paths],
        scores=torch.cat(scores).numpy(),
        maps=torch.cat(maps).numpy() if maps else None,
        threshold=float(meta.get("threshold", float("nan"))),
    )
