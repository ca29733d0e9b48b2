"""Save and load fitted models: safetensors for tensors, JSON for the description.

Loading never unpickles and never runs code from the files: ``model.json`` holds the
model's record (:class:`~dfmx.engine.model_config.ModelConfig`: backbone, layers, pooling
and scorer, resolved through the installed plugins) and the tensors come from safetensors.

Every field of ``model.json`` is checked on load against the format below, and a bad one
is refused with one line naming it. Two SHA-256 sums detect edits: ``tensors_sha256`` of
the tensor file, and ``description_sha256`` of the description itself (every other field,
as canonical JSON). So a value that is well-formed but not the one saved, such as a
``threshold`` that labels every image normal, is refused too; ``dfmx-predict
--threshold`` is the way to score with another threshold. Backbone weights are stored
only when they cannot be rebuilt from a named source (random initialisation or an explicit
weights file); otherwise the backbone is rebuilt from its source and checked against a
fingerprint of its weights.

Format 2 (written): ``format``, ``format_version``, ``model`` (the record's dict),
``weights_source``, ``backbone_included``, ``backbone_fingerprint``, ``n_components``,
``metadata`` (``image_size``, ``threshold``, ``config``, ...), ``tensors_sha256``,
``description_sha256``. Format 1 files (the record's fields at the top level, no
description checksum) are read by mapping their keys; their fields are checked the same
way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from dfmx.atomic import atomic_write_bytes, atomic_write_text
from dfmx.engine.model_config import ModelConfig, ModelConfigError
from dfmx.engine.plugins import check_plugin_options
from dfmx.engine.torch_model import DFMModel
from dfmx.errors import UserError
from dfmx.features.cache import weights_fingerprint
from dfmx.registry import provider

FORMAT = "dfmx-model"
FORMAT_VERSION = 2
TENSORS = "model.safetensors"
CONFIG = "model.json"
_BACKBONE_PREFIX = "feature_extractor."
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ModelFileError(UserError, ValueError):
    """A saved model is missing, malformed, tampered with or incompatible."""


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _canonical(description: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in description.items() if k != "description_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def description_sha256(description: Mapping[str, Any]) -> str:
    """The checksum of a description: SHA-256 of its canonical JSON, this field left out."""
    return hashlib.sha256(_canonical(description)).hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _metadata_problem(metadata: Any) -> str | None:
    """What is wrong with a model's ``metadata`` (``None``: nothing)."""
    if not isinstance(metadata, dict):
        return f"metadata must be a mapping of names to values; got {metadata!r}"
    size = metadata.get("image_size")
    if "image_size" in metadata and not (_is_int(size) and size >= 1):
        return f"metadata.image_size must be a whole number >= 1; got {size!r}"
    threshold = metadata.get("threshold")
    if "threshold" in metadata and not (
            isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
            and math.isfinite(threshold)):
        return f"metadata.threshold must be a finite number; got {threshold!r}"
    if "config" in metadata and not isinstance(metadata["config"], dict):
        return f"metadata.config must be a mapping; got {metadata['config']!r}"
    return None


#: Format 2's fields besides the record and the metadata: (field, rule, check).
_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("weights_source", "a string", lambda v: isinstance(v, str)),
    ("backbone_included", "true or false", lambda v: isinstance(v, bool)),
    ("backbone_fingerprint", "a string", lambda v: isinstance(v, str)),
    ("n_components", "a whole number >= 1", lambda v: _is_int(v) and v >= 1),
    ("tensors_sha256", "64 hex digits", lambda v: isinstance(v, str) and _HEX64.fullmatch(v)),
    ("description_sha256", "64 hex digits",
     lambda v: isinstance(v, str) and _HEX64.fullmatch(v)),
)

#: A format-1 file's keys of the record (the rest of its keys are format 2's).
_V1_RECORD = ("backbone", "layers", "pre_trained", "pooling", "n_comps", "score_type",
              "scorer_params", "precision")


def _from_format_1(config: dict[str, Any]) -> dict[str, Any]:
    """A format-1 description as format 2 (with no description checksum to compare)."""
    missing = [k for k in (*_V1_RECORD, "pooling_kernel_size", "tensors_sha256",
                           "weights_source", "backbone_included", "backbone_fingerprint")
               if k not in config]
    if missing:
        raise ModelFileError(f"lacks {', '.join(missing)}: the file was edited or truncated")
    record = {k: config[k] for k in _V1_RECORD}
    record["pooling_params"] = {"kernel_size": config["pooling_kernel_size"]}
    upgraded = {k: v for k, v in config.items()
                if k not in (*_V1_RECORD, "pooling_kernel_size")}
    upgraded["model"] = record
    upgraded.setdefault("metadata", {})
    upgraded.setdefault("n_components", 1)
    return upgraded


def check_description(config: Any) -> dict[str, Any]:
    """Validate a parsed ``model.json`` against the format; returns it as format 2.

    Raises:
        ModelFileError: the first bad field, named, in one line (without the file's path).
    """
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError("is not a dfmx model description")
    version = config.get("format_version")
    if version == 1:
        config = _from_format_1(config)
    elif version != FORMAT_VERSION:
        raise ModelFileError(
            f"has format version {version}; this dfmx reads versions 1 and {FORMAT_VERSION}")
    else:
        missing = [k for k in ("model", "metadata", *(f[0] for f in _FIELDS)) if k not in config]
        if missing:
            raise ModelFileError(f"lacks {', '.join(missing)}: the file was edited or truncated")
    for name, rule, ok in _FIELDS:
        if name in config and not ok(config[name]):
            raise ModelFileError(f"field {name} must be {rule}; got {config[name]!r}")
    problem = _metadata_problem(config["metadata"])
    if problem:
        raise ModelFileError(f"field {problem}")
    try:
        check_plugin_options(ModelConfig.from_dict(config["model"]))
    except ModelConfigError as exc:
        raise ModelFileError(f"field {exc.message(f'model.{exc.field}')}") from None
    if version == FORMAT_VERSION and description_sha256(config) != config["description_sha256"]:
        raise ModelFileError(
            "does not match the checksum recorded in it (description_sha256): it was edited "
            "after saving. Save the model again, or pass dfmx-predict --threshold to score "
            "with another threshold"
        )
    return config


def _state_without_backbone(model: DFMModel) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` without the backbone's entries, in the same order; a backbone
    not built yet (its graph kept by an earlier process) is not built for it."""
    state: dict[str, torch.Tensor] = {}
    model._save_to_state_dict(state, "", keep_vars=False)
    for name, child in model.named_children():
        if f"{name}." != _BACKBONE_PREFIX:
            child.state_dict(destination=state, prefix=f"{name}.")
    return state


def _load_state_without_backbone(model: DFMModel, tensors: Mapping[str, torch.Tensor]) -> None:
    """:meth:`~torch.nn.Module.load_state_dict` of everything but the backbone, strict: the
    tensors :func:`_state_without_backbone` gives, no more, no fewer. The backbone keeps
    its weights and, where it is not built yet, stays so."""
    expected = _state_without_backbone(model)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise RuntimeError(f"missing keys {missing}, unexpected keys {unexpected}")
    errors: list[str] = []
    model._load_from_state_dict({k: v for k, v in tensors.items() if "." not in k}, "", {},
                                True, [], [], errors)
    if errors:
        raise RuntimeError("; ".join(errors))
    for name, child in model.named_children():
        if f"{name}." != _BACKBONE_PREFIX:
            child.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items()
                                   if k.startswith(f"{name}.")}, strict=True)


def save_model(model: DFMModel, directory: str | Path, **metadata: Any) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; returns it.

    ``metadata`` (e.g. ``image_size=256``, ``threshold=1.5``) is stored in the JSON and
    returned by :func:`load_model_metadata`; :func:`load_model` uses ``image_size`` for
    prediction. A non-finite ``threshold`` is left out (no threshold known).
    """
    if not model.is_fitted:
        raise ValueError("only a fitted model can be saved: call fit() first")
    threshold = metadata.get("threshold")
    if isinstance(threshold, float) and not math.isfinite(threshold):
        metadata = {k: v for k, v in metadata.items() if k != "threshold"}
    problem = _metadata_problem(metadata)
    if problem:
        raise ValueError(problem)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extractor = model.feature_extractor
    include_backbone = not model.pre_trained or str(extractor.weights_source).startswith("file:")
    state = model.state_dict() if include_backbone else _state_without_backbone(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # Serialised in memory and written by Python, so that a full disk or a file size
    # limit is an OSError (one line on the command line), not safetensors' own error.
    data = save_tensors(tensors)
    atomic_write_bytes(directory / TENSORS, data)
    # The precision the model ran at, so that it scores alike on another machine.
    record = model.config.replace(precision=extractor.precision, device="cpu")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": record.to_dict(),
        "weights_source": str(extractor.weights_source),
        "backbone_included": include_backbone,
        "backbone_fingerprint": weights_fingerprint(extractor),
        "n_components": int(model.n_components),
        "tensors_sha256": hashlib.sha256(data).hexdigest(),
        "metadata": metadata,
        # Which package to install where a plugin is missing (read by dfmx-predict).
        "plugin_packages": {"scorer": provider("scorer", model.score_type),
                            "pooling": provider("pooling", model.pooling)},
    }
    config["description_sha256"] = description_sha256(config)
    atomic_write_text(directory / CONFIG, json.dumps(config, indent=2, sort_keys=True))
    return directory


def load_model_metadata(path: str | Path) -> dict[str, Any]:
    """The checked description of a saved model, as format 2 (``path``: the folder or its
    ``model.json``); raises :class:`ModelFileError` naming the first bad field."""
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
    try:
        return check_description(config)
    except ModelFileError as exc:
        raise ModelFileError(f"{config_path} {exc}") from None


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
    record = ModelConfig.from_dict(config["model"])
    # A stored backbone is loaded from the tensors, not rebuilt from its source.
    record = record.replace(pre_trained=record.pre_trained and not included,
                            weights=None if included else record.weights, device=str(device))
    try:
        model = DFMModel.from_config(record)
    except ValueError as exc:
        raise ModelFileError(f"{directory / CONFIG}: field model: {exc}") from exc
    if not included and (weights_fingerprint(model.feature_extractor)
                         != config["backbone_fingerprint"]):
        raise ModelFileError(
            f"the backbone weights rebuilt from {config['weights_source']} differ from "
            "those the model was fitted with (another version of the weights package?)"
        )
    try:
        if included:
            model.load_state_dict(tensors, strict=True)
        else:
            _load_state_without_backbone(model, tensors)
    except RuntimeError as exc:
        raise ModelFileError(f"{tensors_path} does not fit the model in {CONFIG}: {exc}") from exc
    model.metadata = dict(config.get("metadata") or {})
    return model
