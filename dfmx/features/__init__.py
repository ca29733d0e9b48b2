"""Feature extraction: timm backbones, offline weight resolution, pooling, precision."""

from dfmx.features.backbones import (
    BACKBONE_ALIASES,
    FeatureExtractor,
    available_layers,
    resolve_backbone_name,
)
from dfmx.features.pooling import pool_features
from dfmx.features.precision import resolve_device, resolve_precision
from dfmx.features.weights import WeightsUnavailableError, load_pretrained

__all__ = [
    "BACKBONE_ALIASES",
    "FeatureExtractor",
    "WeightsUnavailableError",
    "available_layers",
    "load_pretrained",
    "pool_features",
    "resolve_backbone_name",
    "resolve_device",
    "resolve_precision",
]
