"""Tests of the overlay pictures' pixels: colormap, colorbar, mask outline, grey panel,
titles, and that drawing them imports no matplotlib.

The PNGs are written by :func:`write_overlays` and read back; panels are found by their
colours (a uniform panel is the largest block of its colour).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dfmx.experiment.drawing import font
from dfmx.experiment.overlay_picture import jet_lut
from dfmx.experiment.overlays import write_overlays, write_prediction_overlays

SIZE = 128
JET = jet_lut()
TOP, BOTTOM = tuple(JET[255]), tuple(JET[0])


def _write(tmp_path: Path, maps: np.ndarray, masks: np.ndarray | None = None,
           images: np.ndarray | None = None, paths: list[str] | None = None) -> list[Path]:
    """One normal (index 0) and one anomalous image (index 1), k=1: the normal first."""
    n = len(maps)
    if images is None:
        images = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    paths = paths or [f"/data/x/img{i}.png" for i in range(n)]
    return write_overlays(tmp_path / "ov", paths, np.array([0, 1]), np.array([0.2, 0.9]),
                          maps, masks, SIZE, k=1, load_image_fn=lambda i: images[i])


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _block(picture: np.ndarray, colour: tuple[int, ...]) -> tuple[slice, slice, int]:
    """Bounding box of the largest connected block of ``colour`` and its pixel count."""
    labels, count = ndimage.label(np.all(picture == np.array(colour, np.uint8), axis=-1))
    assert count, f"no pixel of colour {colour}"
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, count + 1))
    biggest = int(np.argmax(sizes)) + 1
    rows, cols = ndimage.find_objects(labels)[biggest - 1]
    return rows, cols, int(sizes[biggest - 1])


def _ink_columns(picture: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Columns (absolute) of dark text pixels in the window."""
    dark = picture[rows, cols].astype(int).sum(-1) < 300
    return np.flatnonzero(dark.any(axis=0)) + (cols.start or 0)


def _assert_title(picture: np.ndarray, rows: slice, cols: slice, text: str) -> None:
    """The title over the panel at ``rows, cols`` is ``text``: its ink, centred over the
    panel, is as wide as ``text`` set in the panel-title font (neighbouring titles start
    more than 150 px from a panel's centre)."""
    centre = (cols.start + cols.stop - 1) / 2
    window = slice(max(0, int(centre) - 150), int(centre) + 150)
    ink = _ink_columns(picture, slice(rows.start - 22, rows.start - 2), window)
    left, _, right, _ = font(14).getbbox(text)
    assert abs((ink[-1] - ink[0] + 1) - (right - left)) <= 4, text
    assert abs((ink[0] + ink[-1]) / 2 - centre) <= 2, text


def test_jet_runs_dark_blue_to_dark_red_like_matplotlibs() -> None:
    assert JET.shape == (256, 3) and JET.dtype == np.uint8
    assert BOTTOM == (0, 0, 128) and TOP == (128, 0, 0)
    # the colour stops at eighths: blue, cyan, yellow, red
    for x, colour in ((1 / 8, (0, 0, 255)), (3 / 8, (0, 255, 255)), (5 / 8, (255, 255, 0)),
                      (7 / 8, (255, 0, 0))):
        assert np.abs(JET[round(x * 255)].astype(int) - colour).max() <= 4
    mpl = pytest.importorskip("matplotlib")
    theirs = mpl.colormaps["jet"](np.arange(256))[:, :3] * 255
    diff = np.abs(theirs - JET)
    # matplotlib places its stops a little off the eighths (e.g. red ends at 0.89)
    assert diff.mean() < 6 and diff.max() < 36


def test_map_panel_colours_follow_the_run_wide_scale(tmp_path: Path) -> None:
    maps = np.zeros((2, SIZE, SIZE), np.float32)
    maps[0] = 1.0  # the run's maximum everywhere
    maps[1, :, SIZE // 2:] = 0.5
    normal, anomalous = (_read(p) for p in _write(tmp_path, maps))
    rows, cols, count = _block(normal, TOP)
    assert (rows.stop - rows.start, cols.stop - cols.start, count) == (SIZE, SIZE, SIZE * SIZE)
    # the other map: left half at the minimum (bottom colour), right half at mid-scale
    left = _block(anomalous, BOTTOM)
    right = _block(anomalous, tuple(JET[128]))
    assert left[2] == right[2] == SIZE * SIZE // 2
    assert left[0] == right[0] == rows and left[1].stop == right[1].start
    # the blend over a black image is the colour at 45 %
    assert _block(normal, tuple(np.rint(np.array(TOP) * 0.45).astype(int)))[2] == SIZE * SIZE


def test_the_colorbar_runs_from_the_top_colour_down_to_the_bottom_one(tmp_path: Path) -> None:
    maps = np.zeros((2, SIZE, SIZE), np.float32)
    maps[0] = 3.0
    picture = _read(_write(tmp_path, maps)[0])
    rows, cols, _ = _block(picture, TOP)
    lookup = {tuple(c): i for i, c in reversed(list(enumerate(JET)))}
    bars = [x for x in range(cols.stop, picture.shape[1])
            if tuple(picture[rows.start, x]) == TOP and tuple(picture[rows.stop - 1, x]) == BOTTOM
            and all(tuple(p) in lookup for p in picture[rows, x])]
    assert bars, "no colorbar right of the map"
    indices = [lookup[tuple(p)] for p in picture[rows, bars[0]]]
    assert indices == sorted(indices, reverse=True) and len(set(indices)) > SIZE // 2
    # tick labels (dark text) right of the bar, beside the panel: 0, 0.5, ..., 3
    assert len(_ink_columns(picture, rows, slice(bars[-1] + 2, picture.shape[1]))) > 10


def test_mask_outline_is_a_white_line_along_the_mask_edge(tmp_path: Path) -> None:
    maps = np.zeros((2, SIZE, SIZE), np.float32)
    masks = np.zeros((2, SIZE, SIZE), bool)
    masks[1, 40:80, 48:88] = True
    picture = _read(_write(tmp_path, maps, masks)[1])
    rows, cols, _ = _block(picture, tuple(np.rint(np.array(BOTTOM) * 0.45).astype(int)))
    assert (rows.stop - rows.start, cols.stop - cols.start) == (SIZE, SIZE)  # blend panel
    white = np.all(picture[rows, cols] == 255, axis=-1)
    expected = np.zeros((SIZE, SIZE), bool)  # 2 px: one inside the mask, one outside
    expected[39:81, 47:89] = True
    expected[41:79, 49:87] = False
    np.testing.assert_array_equal(white, expected)
    _assert_title(picture, rows, cols, "overlay + ground truth (white contour)")


@pytest.mark.parametrize("fill", [False, True], ids=["empty-mask", "all-defect-mask"])
def test_no_outline_for_an_empty_or_full_mask(tmp_path: Path, fill: bool) -> None:
    maps = np.zeros((2, SIZE, SIZE), np.float32)
    masks = np.full((2, SIZE, SIZE), fill)
    for path in _write(tmp_path, maps, masks):
        picture = _read(path)
        rows, cols, count = _block(picture, tuple(np.rint(np.array(BOTTOM) * 0.45).astype(int)))
        assert count == SIZE * SIZE
        assert not np.all(picture[rows, cols] == 255, axis=-1).any()
        _assert_title(picture, rows, cols, "overlay (no defect in mask)")


def test_unreadable_image_gives_a_grey_panel_titled_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    maps = rng.random((2, SIZE, SIZE)).astype(np.float32)
    written = write_prediction_overlays(tmp_path / "pred", [str(good), str(bad)],
                                        np.array([0.9, 0.1]), maps, 0.5, SIZE)
    readable, unreadable = (_read(p) for p in written)
    rows, cols, count = _block(unreadable, (128, 128, 128))
    assert count == SIZE * SIZE and (rows.stop - rows.start, cols.stop - cols.start) == (SIZE,
                                                                                      SIZE)
    assert _block(readable, (128, 128, 128))[2] < 10  # random pixels, no grey panel
    _assert_title(unreadable, rows, cols, "image (could not be read)")
    _assert_title(readable, rows, cols, "image")


def test_long_undecodable_name_is_shortened_not_clipped(tmp_path: Path) -> None:
    maps = np.zeros((2, SIZE, SIZE), np.float32)
    name = "/data/x/" + "very_long_name_" * 30 + "\udcff.png"
    written = _write(tmp_path, maps, paths=[name, "/data/x/short.png"])
    assert written[0].name.startswith("normal_01_very_long_name_")
    picture = _read(written[0])
    panel_top = _block(picture, BOTTOM)[0].start
    ink = _ink_columns(picture, slice(0, panel_top - 30), slice(None))
    assert len(ink) > picture.shape[1] // 2  # the title spans the picture ...
    assert ink[0] >= 8 and ink[-1] < picture.shape[1] - 8  # ... inside its margins


def test_small_images_are_enlarged_to_a_legible_panel(tmp_path: Path) -> None:
    maps = np.zeros((2, 32, 48), np.float32)
    maps[0] = 1.0
    written = write_overlays(tmp_path / "ov", ["a.png", "b.png"], np.array([0, 1]),
                             np.array([0.2, 0.9]), maps, None, (32, 48), k=1,
                             load_image_fn=lambda i: np.zeros((32, 48, 3), np.uint8))
    rows, cols, count = _block(_read(written[0]), TOP)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (96, 144)  # 3x, nearest
    assert count == 96 * 144


_NO_MATPLOTLIB = """
import json, sys
import numpy as np
from PIL import Image
from dfmx.experiment.overlays import write_overlays, write_prediction_overlays
out = sys.argv[1]
Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(out + "/a.png")
maps = np.random.default_rng(0).random((2, 40, 40)).astype(np.float32)
masks = np.zeros((2, 40, 40), bool); masks[1, 10:20, 10:20] = True
paths = [out + "/a.png", out + "/missing.png"]
n = len(write_overlays(out + "/ov", paths, np.array([0, 1]), np.array([0.1, 0.9]), maps,
                       masks, 40, k=1))
n += len(write_prediction_overlays(out + "/pred", paths, np.array([0.1, 0.9]), maps, 0.5))
print(json.dumps([n, sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib")]))
"""


def test_drawing_overlays_imports_no_matplotlib(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", _NO_MATPLOTLIB, str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [4, []]
