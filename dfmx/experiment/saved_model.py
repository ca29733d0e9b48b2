"""Save and load fitted models: safetensors for tensors, JSON for the configuration.

Loading never unpickles and never runs code from the files: the JSON names the backbone,
layers, pooling and scorer (resolved through the installed plugins), and the tensors come
from safetensors. A SHA-256 of the tensor file recorded in the JSON detects a tampered or
truncated file. Backbone weights are stored only when they cannot be rebuilt from a named
source (random initialisation or an explicit weights file); otherwise the backbone is
rebuilt from its source and checked against a fingerprint of its weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dfmx.engine.torch_model import DFMModel
from dfmx.features.cache import weights_fingerprint
from dfmx.registry import provider

FORMAT = "dfmx-model"
FORMAT_VERSION = 1
TENSORS = "model.safetensors"
CONFIG = "model.json"
_BACKBONE_PREFIX = "feature_extractor."
_REQUIRED_KEYS = (
    "backbone", "layers", "pre_trained", "weights_source", "backbone_included",
    "backbone_fingerprint", "pooling", "pooling_kernel_size", "n_comps", "score_type",
    "scorer_params", "precision", "tensors_sha256",
)


class ModelFileError(ValueError):
    """A saved model is missing, malformed, tampered with or incompatible."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: DFMModel, directory: str | Path, **metadata: Any) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; returns it.

    ``metadata`` (e.g. ``image_size=256``) is stored in the JSON and returned by
    :func:`load_model_metadata`; :func:`load_model` uses ``image_size`` for prediction.
    """
    if not model.is_fitted:
        raise ValueError("only a fitted model can be saved: call fit() first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extractor = model.feature_extractor
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    include_backbone = not model.pre_trained or str(extractor.weights_source).startswith("file:")
    tensors = state if include_backbone else {
        k: v for k, v in state.items() if not k.startswith(_BACKBONE_PREFIX)
    }
    _atomic_write(directory / TENSORS, lambda p: save_file(tensors, str(p)))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": model.backbone,
        "layers": model.layers,
        "pre_trained": model.pre_trained,
        "weights_source": str(extractor.weights_source),
        "backbone_included": include_backbone,
        "backbone_fingerprint": weights_fingerprint(extractor),
        "pooling": model.pooling,
        "pooling_kernel_size": model.pooling_kernel_size,
        "n_comps": model.n_comps,
        "n_components": model.pca_model.n_components_,
        "score_type": model.score_type,
        "scorer_params": model.scorer_params,
        "precision": extractor.precision,
        "tensors_sha256": _sha256(directory / TENSORS),
        "metadata": metadata,
        # Which package to install where a plugin is missing (read by dfmx-predict).
        "plugin_packages": {"scorer": provider("scorer", model.score_type),
                            "pooling": provider("pooling", model.pooling)},
    }
    _atomic_write(
        directory / CONFIG, lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True))
    )
    return directory


def load_model_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON description of a saved model (``path`` is the folder or its ``model.json``)."""
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    config_path = directory / CONFIG
    if not config_path.is_file():
        raise ModelFileError(f"no saved dfmx model at {directory}: {CONFIG} is missing")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{config_path} is not a dfmx model description")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{config_path} has format version {config.get('format_version')}; "
            f"this dfmx reads version {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in config]
    if missing:
        raise ModelFileError(
            f"{config_path} lacks {', '.join(missing)}: the file was edited or truncated"
        )
    return config


def load_model(path: str | Path, device: str | torch.device = "cpu") -> DFMModel:
    """Load a model saved by :func:`save_model` (``path``: its folder or ``model.json``)."""
    config = load_model_metadata(path)
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    tensors_path = directory / TENSORS
    if not tensors_path.is_file():
        raise ModelFileError(f"{tensors_path} is missing")
    if _sha256(tensors_path) != config["tensors_sha256"]:
        raise ModelFileError(
            f"{tensors_path} does not match the checksum recorded in {CONFIG}: "
            "the file was modified or truncated after saving"
        )
    try:
        tensors = load_file(str(tensors_path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{tensors_path} is not a valid safetensors file: {exc}") from exc
    included = bool(config["backbone_included"])
    model = DFMModel(
        backbone=config["backbone"],
        layer=config["layers"],
        pre_trained=bool(config["pre_trained"]) and not included,
        pooling_kernel_size=int(config["pooling_kernel_size"]),
        n_comps=config["n_comps"],
        score_type=config["score_type"],
        pooling=config["pooling"],
        precision=config["precision"],
        scorer_params=config["scorer_params"],
        device=device,
    )
    if not included:
        backbone_state = {
            k: v for k, v in model.state_dict().items() if k.startswith(_BACKBONE_PREFIX)
        }
        if weights_fingerprint(model.feature_extractor) != config["backbone_fingerprint"]:
            raise ModelFileError(
                f"the backbone weights rebuilt from {config['weights_source']} differ from "
                "those the model was fitted with (another version of the weights package?)"
            )
        tensors = {**backbone_state, **tensors}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{tensors_path} does not fit the model in {CONFIG}: {exc}") from exc
    model.metadata = dict(config.get("metadata") or {})
    return model
