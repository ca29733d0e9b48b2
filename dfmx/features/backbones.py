"""Pretrained CNN backbones (timm ``features_only``) that turn images into feature maps.

timm is imported only where a net is built or a name is new: what a process learns of a
backbone is kept for the next (:mod:`dfmx.features.prepared`), so a command whose backbone
was built before runs its kept frozen graph without importing timm.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dfmx.data.images import to_float
from dfmx.errors import ConfigError
from dfmx.features.graph import GraphRunner, resolve_optimize
from dfmx.features.precision import resolve_device, resolve_precision, uses_channels_last
from dfmx.features.prepared import (
    Description,
    PreparedNet,
    read_description,
    write_description,
)
from dfmx.features.weights import load_pretrained, weights_file_source
from dfmx.memo import Memo

#: Friendly names -> timm model names. Any other timm model name is accepted as is.
BACKBONE_ALIASES: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "wide_resnet50": "wide_resnet50_2",
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}


@dataclass(frozen=True)
class LayerInfo:
    """One feature level of a timm backbone."""

    index: int
    """Position in timm's ``feature_info`` (the ``out_indices`` value)."""
    channels: int
    reduction: int
    """Stride of the feature map relative to the input image."""


def resolve_backbone_name(name: str) -> str:
    """Map a backbone name (an alias or any timm model name) to the timm model name.

    Raises:
        ValueError: unknown name; the message suggests close matches among the aliases and
            ``timm.list_models()``.
    """
    if name in BACKBONE_ALIASES:
        return BACKBONE_ALIASES[name]
    if read_description(name) is not None:  # described by this timm before
        return name
    import timm

    if timm.is_model(name):
        return name
    candidates = list(dict.fromkeys([*BACKBONE_ALIASES, *timm.list_models()]))
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown backbone {name!r}.{hint} Aliases: {', '.join(BACKBONE_ALIASES)}; "
        "any name from timm.list_models() also works."
    )


def _create_on_meta(timm_name: str, **kwargs: object) -> nn.Module:
    """Build a timm model without allocating weights (meta device), else on the CPU."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(timm_name, pretrained=False, **kwargs)
    except Exception:  # some model constructors need real tensors (e.g. .tolist())
        return timm.create_model(timm_name, pretrained=False, **kwargs)


@functools.cache
def describe(timm_name: str) -> Description:
    """timm's feature levels and input normalisation of ``timm_name``: kept from an earlier
    process where there is one, else read from a model built on the meta device."""
    kept = read_description(timm_name)
    if kept is not None:
        return kept
    model = _create_on_meta(timm_name, features_only=True)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    description = Description(
        layers=tuple((str(entry["module"]), index, int(entry["num_chs"]),
                      int(entry["reduction"]))
                     for index, entry in enumerate(model.feature_info.info)),
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=str(cfg.get("interpolation", "bilinear")),
    )
    write_description(timm_name, description)
    return description


def _layer_table(timm_name: str) -> dict[str, LayerInfo]:
    """All feature levels of ``timm_name`` by ``feature_info`` module name, shallow to deep."""
    return {name: LayerInfo(index, channels, reduction)
            for name, index, channels, reduction in describe(timm_name).layers}


def layer_infos(backbone: str, layers: str | Sequence[str]) -> dict[str, LayerInfo]:
    """The feature levels ``layers`` of ``backbone`` (an alias or a timm name), duplicates
    dropped, in the order given. Cheap: the model is built on the meta device.

    Raises:
        ConfigError: an unknown backbone, no layer, or an unknown layer (the message lists
            the backbone's layers).
    """
    table = _layer_table(resolve_backbone_name(backbone))
    requested = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    if not requested:
        raise ConfigError("At least one layer is needed.")
    unknown = [name for name in requested if name not in table]
    if unknown:
        raise ConfigError(
            f"Unknown layer(s) {', '.join(map(repr, unknown))} for backbone {backbone!r}; "
            f"its layers are: {', '.join(table)}."
        )
    return {name: table[name] for name in requested}


def available_layers(backbone: str) -> list[str]:
    """The layer names (timm ``feature_info`` module names) of a backbone, shallow to deep.

    Cheap: the model is built on the meta device, nothing is downloaded.
    """
    return list(_layer_table(resolve_backbone_name(backbone)))


def _truncate_after(model: nn.Module, deepest: str) -> None:
    """Drop the modules after the deepest requested layer where timm keeps them.

    timm's ``FeatureListNet`` (resnets, convnexts, ...) already stops after the last
    ``out_indices`` module. ``EfficientNetFeatures``/``MobileNetV3Features`` build and run
    every block; their forward loops over ``self.blocks``, so trailing blocks can be cut.
    """
    match = re.fullmatch(r"blocks\.(\d+)", deepest)
    blocks = getattr(model, "blocks", None)
    if match and isinstance(blocks, nn.Sequential):
        keep = int(match.group(1)) + 1
        if len(blocks) > keep:
            del blocks[keep:]


#: Truncated timm nets by (timm name, out_indices), copied for each backbone that loads
#: weights: the jobs of a sweep build the same backbone again and again, and timm's
#: construction costs several times a deep copy. Safe because loading is strict: every
#: parameter and persistent buffer is overwritten, so the skeleton's initial values never
#: show. Two are kept (the larger ones, such as Wide-ResNet-50, are tens of MB each).
_SKELETONS: Memo[nn.Module] = Memo(2)


def _new_net(timm_name: str, out_indices: tuple[int, ...], deepest: str) -> nn.Module:
    import timm

    net = timm.create_model(timm_name, features_only=True, out_indices=out_indices,
                            pretrained=False)
    _truncate_after(net, deepest)
    return net


def _net_for_weights(timm_name: str, out_indices: tuple[int, ...], deepest: str) -> nn.Module:
    """A fresh copy of the net whose weights are about to be loaded (see _SKELETONS)."""

    def skeleton() -> nn.Module:
        # Its random init is overwritten: leave the global RNG as a cached copy does.
        with torch.random.fork_rng(devices=[]):
            return _new_net(timm_name, out_indices, deepest)

    return copy.deepcopy(_SKELETONS.get((timm_name, out_indices), skeleton))


#: On a CPU the backbone runs on at most this many images at a time, whatever the batch:
#: the early, wide-spatial layers' activations then stay in cache, which makes 8 faster
#: than 16 for ResNets and EfficientNet-Lites alike (4 is as fast, 1 and 2 slower;
#: ``benchmarks/test_extraction_speed.py`` compares 8 and 16 per call).
#: ``FeatureExtractor.micro_batch`` changes it; GPUs take the whole batch.
CPU_MICRO_BATCH = 8


def _drop_graphs(module: FeatureExtractor, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: built graphs hold the old weights as constants."""
    del incompatible_keys
    module._runner.reset()
    module.recorded_fingerprint = None


class FeatureExtractor(nn.Module):
    """Frozen timm CNN that maps images to a dict of feature maps.

    Args:
        backbone: an alias from :data:`BACKBONE_ALIASES` or any timm model name.
        layers: one or more timm ``feature_info`` module names (``"layer3"`` for resnets,
            ``"blocks.4"`` for efficientnets); see :func:`available_layers`.
        pre_trained: load pretrained weights (see :func:`dfmx.features.load_pretrained`);
            ``False`` gives timm's random init.
        weights: an explicit ``.safetensors`` or torch state dict file; it is loaded even
            when ``pre_trained`` is ``False``.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"``.
        device: where the backbone runs: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``
            (CUDA where present); one this machine lacks raises ``ValueError``.
        optimize: how the forward runs: ``"auto"``, ``"none"`` (eager), ``"freeze"``
            (frozen TorchScript graph) or ``"compile"`` (``torch.compile``); see
            :mod:`dfmx.features.graph`. Graphs are built on the first call for each input
            shape and dropped when the weights, device or dtype change through
            ``load_state_dict`` or ``.to()``.

    Example:
        >>> fx = FeatureExtractor("resnet18", "layer3", pre_trained=False)
        >>> fx(torch.rand(2, 3, 64, 64))["layer3"].shape
        torch.Size([2, 256, 4, 4])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        backbone: str,
        layers: str | Sequence[str],
        pre_trained: bool = True,
        weights: str | Path | None = None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        optimize: str = "auto",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.timm_name = resolve_backbone_name(backbone)
        table = layer_infos(backbone, layers)
        self.layers: list[str] = list(table)
        self.channels: dict[str, int] = {n: table[n].channels for n in self.layers}
        self.reductions: dict[str, int] = {n: table[n].reduction for n in self.layers}
        # timm returns the outputs in increasing out_indices order.
        self._out_names = sorted(self.layers, key=lambda n: table[n].index)
        out_indices = tuple(table[n].index for n in self._out_names)

        description = describe(self.timm_name)
        self.interpolation: str = description.interpolation
        device = resolve_device(device)
        for name, values in (("mean", description.mean), ("std", description.std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32,
                                                    device=device).view(1, 3, 1, 1))
        self.precision: str = resolve_precision(precision, device)
        self.channels_last: bool = uses_channels_last(self.precision, device)
        self.micro_batch: int = CPU_MICRO_BATCH
        self.optimize: str = resolve_optimize(optimize, device)
        self.training = False

        # What building the net takes (see _build_net).
        self._out_indices, self._weights = out_indices, weights
        self._pretrained = weights is not None or pre_trained
        prepared = None
        if self._pretrained and self.optimize == "freeze" and device.type == "cpu":
            prepared = PreparedNet.find(self.timm_name, out_indices,
                                        weights_file_source(self.timm_name, weights))
        #: The SHA-256 of the net's state dict where a process that built this net with
        #: these weights recorded it (``dfmx.features.cache.weights_fingerprint``).
        self.recorded_fingerprint: str | None = None
        if prepared is not None and prepared.fingerprint is not None:
            # Built by an earlier process: the net is built when something needs it.
            self.weights_source: str = str(prepared.weights_source)
            self.recorded_fingerprint = prepared.fingerprint
        else:
            self._build_net()
            if prepared is not None:
                from dfmx.features.cache.keys import tensors_sha256

                prepared.record(self.weights_source, tensors_sha256(self.net.state_dict()))
                self.recorded_fingerprint = prepared.fingerprint
        autocast = torch.bfloat16 if self.precision == "bf16" else None
        self._runner = GraphRunner(self._built_net, self.optimize, autocast, store=prepared)
        self.register_load_state_dict_post_hook(_drop_graphs)

    def _build_net(self) -> None:
        """Build the net, load its weights, put it on the extractor's device and layout."""
        deepest = self._out_names[-1]
        if self._pretrained:
            net = _net_for_weights(self.timm_name, self._out_indices, deepest)
            self.weights_source = load_pretrained(net, self.timm_name, self._weights,
                                                  self.backbone)
        else:
            net = _new_net(self.timm_name, self._out_indices, deepest)  # seeded random init
            self.weights_source = "random"
        net.requires_grad_(False).train(False).to(self.mean.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        nn.Module.__setattr__(self, "net", net)

    @property
    def net(self) -> nn.Module:
        """The timm ``features_only`` net, truncated after the deepest layer. Where its
        graph was kept by an earlier process it is built on first use (the features, from
        the kept graph, do not need it)."""
        if "net" not in self._modules:
            try:
                self._build_net()
            except AttributeError as err:  # not to be taken for a missing ``net``
                raise RuntimeError(f"building the backbone failed: {err!r}") from err
        return self._modules["net"]

    def _built_net(self) -> nn.Module:
        return self.net

    # What walks the submodules needs the net: built first where it is not yet.
    def named_children(self):
        self._built_net()
        return super().named_children()

    def named_modules(self, *args, **kwargs):
        self._built_net()
        return super().named_modules(*args, **kwargs)

    def state_dict(self, *args, **kwargs):
        self._built_net()
        return super().state_dict(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._built_net()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):
        """``.to()``, ``.cuda()``, ``.float()``, ...: built graphs hold old tensors, drop them."""
        runner = self.__dict__.get("_runner")
        if runner is not None:
            self._built_net()
            runner.reset()
        return super()._apply(fn, recurse)

    @property
    def device(self) -> torch.device:
        """The device the backbone lives on."""
        return self.mean.device

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in eval mode whatever ``mode`` says: BatchNorm statistics never update (a
        net not built yet is built in eval mode)."""
        del mode
        if "net" not in self._modules:
            self.training = False
            return self
        return super().train(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps of a batch of images.

        Args:
            images: RGB floats in ``[0, 1]`` or 8-bit values (``uint8``, divided by 255
                here, after the copy to the device), shape ``(N, 3, H, W)``, on any
                device; they are normalised here with the backbone's ``mean``/``std``.

        Returns:
            ``{layer: (N, C_layer, H / r, W / r)}`` for each requested layer (``r`` its
            reduction, rounded as the convolutions round), float32, contiguous NCHW,
            whatever the compute precision.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape (N, 3, H, W), got {tuple(images.shape)}.")
        with torch.inference_mode():
            x = images.to(device=self.device)
            x = to_float(x) if x.dtype == torch.uint8 else x.float()
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            step = self.micro_batch if self.device.type == "cpu" else x.shape[0]
            parts = [self._runner(x[i:i + step]) for i in range(0, x.shape[0], max(step, 1))]
            return {
                name: torch.cat([part[self._out_names.index(name)] for part in parts]).to(
                    dtype=torch.float32, memory_format=torch.contiguous_format)
                for name in self.layers
            }

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone!r}, timm_name={self.timm_name!r}, layers={self.layers}, "
            f"weights_source={self.weights_source!r}, precision={self.precision!r}, "
            f"optimize={self.optimize!r}"
        )
