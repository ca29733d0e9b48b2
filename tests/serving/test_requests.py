"""Requests and answers of the pyfunc model without a server: rows, checks, maps."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dfmx.tracking.pyfunc_inputs import (
    MAX_BATCH,
    BadRequest,
    RequestImage,
    image_files,
    request_images,
)
from dfmx.tracking.pyfunc_outputs import answer_table, grid_map, png_map


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_rows_from_paths_bytes_and_base64_text() -> None:
    jpeg = _jpeg()
    frame = pd.DataFrame({"path": ["a.png", None, None],
                          "image": [None, jpeg, base64.b64encode(jpeg).decode()]})
    assert request_images(frame) == [RequestImage("a.png", None), RequestImage("", jpeg),
                                     RequestImage("", jpeg)]
    assert request_images(["a.png", Path("b.png")]) == [RequestImage("a.png", None),
                                                        RequestImage("b.png", None)]
    wrapped = base64.encodebytes(jpeg).decode()  # MIME lines, as MLflow writes examples
    assert request_images(pd.DataFrame({"image": [wrapped]}))[0].data == jpeg


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"file": ["a.png"]}), "the request holds no images"),
    (pd.DataFrame({"image": []}), "the request holds no images"),
    (pd.DataFrame({"path": ["a.png"] * (MAX_BATCH + 1)}), f"at most {MAX_BATCH} per request"),
    (pd.DataFrame({"path": ["a.png"], "image": [b"x"]}), "row 0: give either 'path' or "
                                                         "'image', not both"),
    (pd.DataFrame({"path": ["a.png", None]}), "row 1: give either 'path' or 'image'"),
    (pd.DataFrame({"image": ["not base64!"]}), "row 0: the 'image' value is not base64"),
    (pd.DataFrame({"image": [3]}), "row 0: the 'image' value is a int"),
])
def test_bad_rows_name_the_problem(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        request_images(frame)


def test_sent_bytes_become_files_removed_afterwards(tmp_path: Path) -> None:
    jpeg = _jpeg()
    existing = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(existing)
    with image_files([RequestImage("", jpeg), RequestImage(str(existing), None)]) as files:
        written = Path(files[0])
        assert written.suffix == ".jpg" and written.read_bytes() == jpeg
        assert files[1] == str(existing)
    assert not written.exists()
    for rows, message in [
        ([RequestImage("", b"")], "row 0: the 'image' value is empty"),
        ([RequestImage("", b"GIF89a nonsense")], "row 0: the 'image' value is not an image"),
        ([RequestImage(str(tmp_path / "no.png"), None)], "no such file on the server"),
    ]:
        with pytest.raises(BadRequest, match=message), image_files(rows):
            pass


def test_answer_columns_decision_and_maps() -> None:
    maps = np.zeros((2, 8, 8), dtype=np.float32)
    maps[1, :4, :4] = 2.0
    table = answer_table(["a.png", ""], np.array([1.0, 3.0]), 2.0, maps, "both", 2)
    assert list(table.columns) == ["path", "score", "threshold", "anomalous", "map",
                                   "map_png", "map_max"]
    assert list(table["anomalous"]) == [False, True]
    assert table["map"][1] == [[2.0, 0.0], [0.0, 0.0]]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(table["map_png"][1]))))
    assert png.shape == (8, 8) and png.max() == 255 and table["map_max"][1] == 2.0
    no_threshold = answer_table(["a"], np.array([1.0]), float("nan"), None, "none", 16)
    assert no_threshold["anomalous"][0] is None and no_threshold["threshold"][0] is None
    assert grid_map(maps[1], 1) == [[0.5]]
    assert png_map(maps[0])[1] == 0.0
