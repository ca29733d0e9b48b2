"""Tests of the run report files: CSV, JSON, summary table, ROC/histogram PNGs, overlays."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfmx.experiment import reports

N, SIZE = 6, 32
LABELS = np.array([0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5])
THRESHOLD = 0.5
DEFECTS = ["good", "good", "good", "crack", "hole", "crack"]


@pytest.fixture()
def run(tmp_path: Path) -> dict:
    """A tiny synthetic run: 6 RGB images on disk, random maps, square masks on anomalies."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    paths = []
    for i in range(N):
        arr = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        p = img_dir / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    maps = rng.random((N, SIZE, SIZE)).astype(np.float32)
    masks = np.zeros((N, SIZE, SIZE), bool)
    masks[LABELS == 1, 8:20, 10:22] = True
    return {"paths": paths, "maps": maps, "masks": masks, "out": tmp_path / "out"}


def _assert_png(path: Path, min_bytes: int = 2000) -> None:
    assert path.is_file()
    assert path.stat().st_size > min_bytes
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 100 and im.size[1] > 100
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


def test_predictions_csv_round_trip(run: dict) -> None:
    path = run["out"] / "predictions.csv"
    reports.write_predictions_csv(path, run["paths"], LABELS, SCORES, THRESHOLD, DEFECTS)
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
        reports.write_predictions_csv(
            run["out"] / "p.csv", run["paths"][:-1], LABELS, SCORES, THRESHOLD, DEFECTS
        )


def test_roc_and_histogram_pngs(run: dict) -> None:
    roc = reports.plot_roc(run["out"] / "roc.png", LABELS, SCORES, auroc=0.7778)
    hist = reports.plot_score_histogram(run["out"] / "hist.png", LABELS, SCORES, THRESHOLD)
    _assert_png(roc)
    _assert_png(hist)


def _full_draw_roc(labels: np.ndarray, scores: np.ndarray, note: str = "") -> np.ndarray:
    """The ROC figure built and drawn whole, as plot_roc did before it kept the unchanging
    parts: the oracle for the blitted picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fig = Figure(figsize=(5.5, 5.2), dpi=100)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.9 if note else 0.93)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="tab:orange", lw=2,
            label=f"ROC (AUROC = {roc_auc_score(labels, scores):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (normals flagged)")
    ax.set_ylabel("True positive rate (anomalies found)")
    n_normal, n_anomalous = int((labels == 0).sum()), int((labels == 1).sum())
    ax.set_title(f"Image-level ROC — {n_normal} normal, {n_anomalous} anomalous{note}",
                 y=1.0, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def test_roc_pictures_equal_a_full_draw_pixel_for_pixel(tmp_path: Path) -> None:
    """The ROC canvas is drawn once and reused: every picture, whatever came before it,
    equals the whole figure drawn anew (also with the two-line title of left-out scores)."""
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(20, int), np.ones(40, int)]
    cases = [np.round(rng.normal(size=60) + labels * shift, 1) for shift in (2.0, -1.0, 0.3)]
    with_nan = cases[0].copy()
    with_nan[:2] = np.nan
    for i, scores in enumerate([*cases, with_nan, cases[1]]):
        path = reports.plot_roc(tmp_path / f"roc{i}.png", labels, scores)
        finite = np.isfinite(scores)
        note = f"\n({int((~finite).sum())} non-finite scores left out)" if not finite.all() else ""
        expected = _full_draw_roc(labels[finite], scores[finite], note)
        with Image.open(path) as im:
            assert np.array_equal(np.asarray(im.convert("RGBA")), expected), i
        assert not list(tmp_path.glob(".*.tmp"))


def test_roc_computes_auroc_and_tolerates_nan_scores(run: dict) -> None:
    scores = SCORES.copy()
    scores[0] = np.nan
    _assert_png(reports.plot_roc(run["out"] / "roc.png", LABELS, scores, auroc=float("nan")))
    _assert_png(reports.plot_score_histogram(run["out"] / "h.png", LABELS, scores, np.nan))


@pytest.mark.parametrize("cls", [0, 1])
def test_single_class_does_not_raise(run: dict, cls: int) -> None:
    labels = np.full(N, cls)
    _assert_png(reports.plot_roc(run["out"] / "roc.png", labels, SCORES))
    _assert_png(reports.plot_score_histogram(run["out"] / "h.png", labels, SCORES, THRESHOLD))


def test_overlays_pick_top_k_by_score(run: dict) -> None:
    written = reports.write_overlays(
        run["out"] / "overlays", run["paths"], LABELS, SCORES, run["maps"], run["masks"],
        SIZE, k=2,
    )
    names = [p.name for p in written]
    # normals by score: img1 (0.7), img2 (0.3), img0 (0.1); anomalies: img3, img5, img4
    assert names == [
        "normal_01_img1.png", "normal_02_img2.png",
        "anomalous_01_img3.png", "anomalous_02_img5.png",
    ]
    assert sorted(p.name for p in (run["out"] / "overlays").iterdir()) == sorted(names)
    for p in written:
        _assert_png(p)


def test_overlays_k_larger_than_class_and_no_masks(run: dict) -> None:
    written = reports.write_overlays(
        run["out"] / "ov", run["paths"], LABELS, SCORES, run["maps"], None, SIZE, k=10
    )
    assert len(written) == N
    assert [p.name.split("_")[0] for p in written] == ["normal"] * 3 + ["anomalous"] * 3


def test_overlays_unreadable_image_does_not_raise(run: dict) -> None:
    paths = list(run["paths"])
    Path(paths[1]).write_bytes(b"not an image")
    written = reports.write_overlays(
        run["out"] / "ov", paths, LABELS, SCORES, run["maps"], run["masks"], SIZE, k=1
    )
    assert [p.name for p in written] == ["normal_01_img1.png", "anomalous_01_img3.png"]


def test_overlays_without_maps_write_nothing(run: dict) -> None:
    out = run["out"] / "overlays"
    assert reports.write_overlays(out, run["paths"], LABELS, SCORES, None, None, SIZE) == []
    assert not out.exists() or not any(out.iterdir())


def test_top_indices_ties_and_nan() -> None:
    labels = np.array([0, 0, 0, 0])
    scores = np.array([np.nan, 0.5, 0.5, 0.9])
    assert reports.top_indices(labels, scores, 0, 4) == [3, 1, 2, 0]


def test_metrics_json_nan_to_null(tmp_path: Path) -> None:
    metrics = {"image_AUROC": 0.91234567, "pixel_PRO": float("nan"), "b": np.float32(2.5),
               "n_test": 6, "inf": float("inf")}
    path = reports.write_metrics_json(tmp_path / "metrics.json", metrics)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded == {"image_AUROC": 0.91234567, "pixel_PRO": None, "b": 2.5, "n_test": 6,
                      "inf": None}
    assert list(loaded) == sorted(loaded)
    assert "\n  " in text  # indented


def test_summary_table() -> None:
    metrics = {"image_AUROC": 0.912345, "pixel_AUROC": float("nan"), "time_fit": 1.23456,
               "n_test": 6.0}
    extra = {"backbone": "efficientnet_lite0", "images/s": 41.5}
    table = reports.summary_table(metrics, extra)
    for key in [*metrics, "backbone", "efficientnet_lite0", "images/s"]:
        assert key in table
    assert "n/a (undefined)" in table
    assert "0.9123" in table and "1.235 s" in table and "41.5000" in table
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1, "rows are not aligned"
    assert len(lines) == len(metrics) + len(extra) + 1 + 4  # rows, header, 4 rules
    ascii_table = reports.summary_table(metrics, ascii_only=True)
    assert ascii_table.isascii() and "n/a (undefined)" in ascii_table


def test_sweep_rows_best_first_failed_last() -> None:
    nan = float("nan")
    metrics = [{"image_AUROC": 0.9}, {"image_AUROC": nan}, {"image_AUROC": 0.99}, {}, {},
               {"image_AUROC": 0.99}]
    errors = [None, None, None, None, "ValueError: boom", None]
    order, best = reports.sweep_rows(metrics, errors)
    assert order == [2, 5, 0, 1, 3, 4]  # ties by job, no AUROC after the rest, failed last
    assert best == 2
    assert reports.sweep_rows([{}, {}], ["a", "b"]) == ([0, 1], None)
    assert reports.sweep_rows([{"image_AUROC": nan}], [None]) == ([0], None)
    many = [{"image_AUROC": i / 100} for i in range(reports.SWEEP_ROWS + 5)]
    order, best = reports.sweep_rows(many, [None] * len(many))
    assert len(order) == reports.SWEEP_ROWS and order[0] == best == len(many) - 1


def test_sweep_picture(tmp_path: Path) -> None:
    labels = [f"#{j} scorer={s} pooling.kernel_size={k}" for j, (s, k) in
              enumerate([("fre", 2), ("fre", 4), ("nll", 2), ("nll", 64)])]
    metrics = [{"image_AUROC": 0.97, "pixel_AUROC": 0.96, "pixel_PRO": 0.88},
               {"image_AUROC": 1.0, "pixel_AUROC": 0.97, "pixel_PRO": 0.9},
               {"image_AUROC": 0.95}, {}]
    errors = [None, None, None, "ValueError: images of size (64, 64) are too small"]
    _assert_png(reports.plot_sweep(tmp_path / "sweep.png", labels, metrics, errors))
    _assert_png(reports.plot_sweep(tmp_path / "failed.png", labels[:2], [{}, {}],
                                   ["ValueError: a", "ValueError: b"]))
    with pytest.raises(ValueError, match="lengths differ"):
        reports.plot_sweep(tmp_path / "bad.png", labels, metrics[:2], errors)
