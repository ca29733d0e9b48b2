"""Tests of the run tables: predictions.csv and metrics.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dfmx.experiment import result_files

N = 6
DEFECTS = ["good", "good", "good", "crack", "hole", "crack"]
LABELS = np.array([0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5])
THRESHOLD = 0.5



def test_predictions_csv_round_trip(run: dict) -> None:
    path = run["out"] / "predictions.csv"
    result_files.write_predictions_csv(path, run["paths"], LABELS, SCORES, THRESHOLD, DEFECTS)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "defect_type", "label", "score", "prediction"]
    assert len(rows) == N
    for row, p, d, y, s in zip(rows, run["paths"], DEFECTS, LABELS, SCORES, strict=True):
        assert row["path"] == p and row["defect_type"] == d
        assert int(row["label"]) == y
        assert float(row["score"]) == s  # full precision
        assert int(row["prediction"]) == int(s >= THRESHOLD)
    # score exactly at the threshold is predicted anomalous
    assert [int(r["prediction"]) for r in rows] == [0, 1, 0, 1, 0, 1]


def test_predictions_csv_length_mismatch(run: dict) -> None:
    with pytest.raises(ValueError):
        result_files.write_predictions_csv(
            run["out"] / "p.csv", run["paths"][:-1], LABELS, SCORES, THRESHOLD, DEFECTS
        )


def test_metrics_json_nan_to_null(tmp_path: Path) -> None:
    metrics = {"image_AUROC": 0.91234567, "pixel_PRO": float("nan"), "b": np.float32(2.5),
               "n_test": 6, "inf": float("inf")}
    path = result_files.write_metrics_json(tmp_path / "metrics.json", metrics)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded == {"image_AUROC": 0.91234567, "pixel_PRO": None, "b": 2.5, "n_test": 6,
                      "inf": None}
    assert list(loaded) == sorted(loaded)
    assert "\n  " in text  # indented
