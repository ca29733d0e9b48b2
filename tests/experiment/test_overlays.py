"""Tests of the overlays: which images, which files, unreadable images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dfmx.experiment import overlays

N, SIZE = 6, 32
LABELS = np.array([0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5])
THRESHOLD = 0.5



def test_overlays_pick_top_k_by_score(run: dict, assert_png) -> None:
    written = overlays.write_overlays(
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
        assert_png(p)


def test_overlays_k_larger_than_class_and_no_masks(run: dict) -> None:
    written = overlays.write_overlays(
        run["out"] / "ov", run["paths"], LABELS, SCORES, run["maps"], None, SIZE, k=10
    )
    assert len(written) == N
    assert [p.name.split("_")[0] for p in written] == ["normal"] * 3 + ["anomalous"] * 3


def test_overlays_unreadable_image_does_not_raise(run: dict) -> None:
    paths = list(run["paths"])
    Path(paths[1]).write_bytes(b"not an image")
    written = overlays.write_overlays(
        run["out"] / "ov", paths, LABELS, SCORES, run["maps"], run["masks"], SIZE, k=1
    )
    assert [p.name for p in written] == ["normal_01_img1.png", "anomalous_01_img3.png"]


def test_overlays_without_maps_write_nothing(run: dict) -> None:
    out = run["out"] / "overlays"
    assert overlays.write_overlays(out, run["paths"], LABELS, SCORES, None, None, SIZE) == []
    assert not out.exists() or not any(out.iterdir())


def test_a_sweep_decodes_each_shown_image_once(run: dict, monkeypatch) -> None:
    import dfmx.data.batches as batches

    decoded: list[str] = []
    real_decode = batches.decode_image

    def decode(path, *args):
        decoded.append(Path(path).name)
        return real_decode(path, *args)

    monkeypatch.setattr(batches, "decode_image", decode)
    args = (run["paths"], LABELS, SCORES, run["maps"], run["masks"], SIZE)
    first = overlays.write_overlays(run["out"] / "a", *args, k=1)
    second = overlays.write_overlays(run["out"] / "b", *args, k=1)
    assert decoded == ["img1.png", "img3.png"]
    assert [p.read_bytes() for p in second] == [p.read_bytes() for p in first]
    # A rewritten file is decoded again and shown as it is now.
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(run["paths"][1])
    later = Path(run["paths"][1]).stat().st_mtime_ns + 10**9
    os.utime(run["paths"][1], ns=(later, later))
    third = overlays.write_overlays(run["out"] / "c", *args, k=1)
    assert decoded == ["img1.png", "img3.png", "img1.png"]
    assert third[0].read_bytes() != first[0].read_bytes()
    assert third[1].read_bytes() == first[1].read_bytes()


def test_top_indices_ties_and_nan() -> None:
    labels = np.array([0, 0, 0, 0])
    scores = np.array([np.nan, 0.5, 0.5, 0.9])
    assert overlays.top_indices(labels, scores, 0, 4) == [3, 1, 2, 0]


def test_the_colour_range_is_that_of_the_finite_map_values() -> None:
    maps = np.linspace(-2.0, 3.0, 130 * 16, dtype=np.float32).reshape(130, 4, 4)
    maps[0, 0, 0], maps[70, 1, 1], maps[129, 3, 3] = np.nan, np.inf, -np.inf
    assert overlays._map_range(maps) == (float(maps[0, 0, 1]), float(maps[129, 3, 2]))
    assert overlays._map_range(np.full((3, 4, 4), np.nan, np.float32)) == (0.0, 1.0)
    lo, hi = overlays._map_range(np.ones((2, 4, 4), np.float32))
    assert lo == 1.0 and hi > lo
