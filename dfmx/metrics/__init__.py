"""Image- and pixel-level anomaly detection metrics (higher score = more anomalous)."""

from dfmx.metrics.image import f1_optimal, image_aupr, image_auroc, predictions
from dfmx.metrics.pixel import pixel_aupr, pixel_auroc, pixel_auroc_aupr, pro_auc, pro_curve
from dfmx.metrics.report import compute_metrics
from dfmx.metrics.undefined import UndefinedMetricWarning

__all__ = [
    "UndefinedMetricWarning",
    "compute_metrics",
    "f1_optimal",
    "image_aupr",
    "image_auroc",
    "pixel_aupr",
    "pixel_auroc",
    "pixel_auroc_aupr",
    "predictions",
    "pro_auc",
    "pro_curve",
]
