"""All image- and pixel-level metrics of one evaluation in a single dict."""

from __future__ import annotations

from typing import Any

from dfmx.metrics.image import f1_optimal, image_aupr, image_auroc
from dfmx.metrics.inputs import image_inputs, pixel_inputs
from dfmx.metrics.pixel import pixel_metrics


def compute_metrics(
    labels: Any, scores: Any, masks: Any | None = None, maps: Any | None = None
) -> dict[str, float]:
    """Compute every applicable metric.

    Undefined metrics (only one image class; no anomalous or no normal pixels) are NaN, each
    with an ``UndefinedMetricWarning`` saying why; the others are still computed.

    Args:
        labels: (N,) bool or 0/1 image labels, 1 = anomalous.
        scores: (N,) image anomaly scores, higher = more anomalous.
        masks: optional (N,H,W) or (N,1,H,W) bool or 0/1 ground-truth masks.
        maps: optional anomaly maps of the same shape as ``masks``; give both or neither.

    Returns:
        ``image_AUROC``, ``image_AUPR``, ``image_F1_oracle``, ``image_F1_oracle_threshold``
        (the F1-optimal threshold on these labels) and, when masks
        and maps are given, ``pixel_AUROC``, ``pixel_AUPR``, ``pixel_PRO``.

    Raises:
        ValueError: on mismatched shapes, non-binary labels/masks, NaN/inf scores or maps, or
            when only one of ``masks`` and ``maps`` is given.
    """
    y, s = image_inputs(labels, scores)
    if (masks is None) != (maps is None):
        given, missing = ("masks", "maps") if maps is None else ("maps", "masks")
        raise ValueError(f"{given} were given without {missing}; pass both or neither")
    m = a = None
    if masks is not None:
        m, a = pixel_inputs(masks, maps)
        if m.shape[0] != y.shape[0]:
            raise ValueError(
                f"masks/maps hold {m.shape[0]} images but labels/scores hold {y.shape[0]}: "
                f"masks {tuple(m.shape)}, labels {tuple(y.shape)}"
            )
    f1, threshold = f1_optimal(y, s)
    results = {
        "image_AUROC": image_auroc(y, s),
        "image_AUPR": image_aupr(y, s),
        # The best F1 over thresholds chosen on these very labels: an oracle figure, not
        # what a deployed threshold achieves (see dfmx.metrics.threshold).
        "image_F1_oracle": f1,
        "image_F1_oracle_threshold": threshold,
    }
    if m is not None:
        results.update(pixel_metrics(m, a))
    return results
