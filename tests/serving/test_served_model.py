"""A logged model served by a real ``mlflow models serve`` (127.0.0.1): images sent as
paths, base64 PNG and JPEG bytes, in batches, score as ``dfmx-predict`` scores them; bad
requests get a 400 with one message and no traceback; the shell lines of
``docs/serving.md`` send an image to it."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import mlflow
import numpy as np
import pytest
from cli_runner import run_cli
from PIL import Image
from served_model import LoggedModel, Server, image_request, path_request, post

from dfmx.experiment.saved_model import load_model_metadata
from dfmx.tracking.pyfunc import _pins_not_rechecked, model_signature, pip_requirements
from dfmx.tracking.pyfunc_inputs import MAX_BATCH

SERVING_DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def dfmx_predict(model: LoggedModel, files: list[Path], out: Path) -> dict[str, dict]:
    """``dfmx-predict`` rows (score, prediction) by file path."""
    result = run_cli([str(model.model_dir), *map(str, files), "--output", str(out),
                      "--overlays", "0"], out, model.env, module="dfmx.cli.predict",
                     timeout=600)
    assert result.returncode == 0, result
    with (out / "predictions.csv").open() as fh:
        return {str(Path(r["path"]).resolve()): r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def jpeg_file(demo_images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jpeg") / "stain.jpg"
    Image.open(demo_images[-1]).convert("RGB").save(path, format="JPEG", quality=85)
    return path


@pytest.fixture(scope="module")
def expected(logged_model: LoggedModel, demo_images: list[Path], jpeg_file: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return dfmx_predict(logged_model, [*demo_images, jpeg_file],
                        tmp_path_factory.mktemp("dfmx-predict"))


def _threshold(model: LoggedModel) -> float:
    return float(load_model_metadata(model.model_dir)["metadata"]["threshold"])


def _check_row(row: dict, want: dict, threshold: float) -> None:
    # Ensemble scores are standardised sums near zero: an absolute bound as well.
    assert row["score"] == pytest.approx(float(want["score"]), rel=1e-5, abs=1e-5)
    assert row["threshold"] == pytest.approx(threshold)
    assert row["anomalous"] == (want["prediction"] == "anomalous")


def test_paths_batch_scores_as_dfmx_predict(server: Server, logged_model: LoggedModel,
                                            demo_images: list[Path], expected: dict) -> None:
    status, body = post(server.url, path_request(demo_images))
    assert status == 200, body
    rows = body["predictions"]
    assert [r["path"] for r in rows] == [str(p) for p in demo_images]
    for row, path in zip(rows, demo_images, strict=True):
        _check_row(row, expected[str(path.resolve())], _threshold(logged_model))
    assert "map" not in rows[0] and "map_png" not in rows[0]
    # The sent decision follows the saved threshold: the defective images score higher.
    assert min(r["score"] for r in rows[2:]) > max(r["score"] for r in rows[:2])


def test_base64_png_batch_scores_as_the_files(server: Server, logged_model: LoggedModel,
                                              demo_images: list[Path], expected: dict) -> None:
    status, body = post(server.url, image_request([p.read_bytes() for p in demo_images]))
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == len(demo_images)
    for row, path in zip(rows, demo_images, strict=True):
        assert row["path"] == ""
        _check_row(row, expected[str(path.resolve())], _threshold(logged_model))


def test_base64_jpeg_scores_as_the_file(server: Server, logged_model: LoggedModel,
                                        jpeg_file: Path, expected: dict) -> None:
    status, body = post(server.url, image_request([jpeg_file.read_bytes()]))
    assert status == 200, body
    want = expected[str(jpeg_file.resolve())]
    _check_row(body["predictions"][0], want, _threshold(logged_model))


def test_maps_on_request(server: Server, logged_model: LoggedModel,
                         demo_images: list[Path]) -> None:
    status, body = post(server.url, image_request([demo_images[2].read_bytes()],
                                                  map="both", map_size=8))
    assert status == 200, body
    row = body["predictions"][0]
    grid = np.asarray(row["map"])
    assert grid.shape == (8, 8)
    assert np.all(grid >= 0) and grid.max() > 0
    png = Image.open(io.BytesIO(base64.b64decode(row["map_png"])))
    size = int(load_model_metadata(logged_model.model_dir)["metadata"]["image_size"])
    assert png.mode == "L" and png.size == (size, size)
    pixels = np.asarray(png, dtype=np.float64) / 255 * row["map_max"]
    # The grid is the PNG's map averaged over 8x8 blocks (up to 8-bit rounding).
    blocks = pixels.reshape(8, size // 8, 8, size // 8).mean(axis=(1, 3))
    assert blocks == pytest.approx(grid, abs=row["map_max"] / 255)


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and header declaring ``width x height`` (no pixel data): a file
    whose size is read without decoding anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + struct.pack(">I", 0) + b"IEND"
            + struct.pack(">I", zlib.crc32(b"IEND")))


def _noise_png(size: int, seed: int = 0) -> bytes:
    """A ``size x size`` RGB PNG of random pixels (it barely compresses: about
    ``3 * size**2`` bytes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


SIGNATURE_REFUSAL = "Data is not compatible with model signature. Failed to convert column image"

BAD_REQUESTS = {
    "not an image": (image_request([b"this is not an image"]), "is not an image"),
    # MLflow's base64 decoder drops characters outside the alphabet: nothing is left.
    "no base64 characters": ({"dataframe_split": {"columns": ["image"], "data": [["%%%"]]}},
                             "row 0: the 'image' value is empty"),
    # Text that does not decode is refused by MLflow's own signature check.
    "not base64": ({"dataframe_split": {"columns": ["image"], "data": [["hello world!"]]}},
                   SIGNATURE_REFUSAL),
    "wrong column": ({"dataframe_split": {"columns": ["file"], "data": [["a.png"]]}},
                     "the request holds no images"),
    "empty batch": ({"dataframe_split": {"columns": ["image"], "data": []}},
                    "the request holds no images"),
    "too many rows": (image_request([_png_header(8, 8)] * (MAX_BATCH + 1)),
                      f"the request holds {MAX_BATCH + 1} images; at most {MAX_BATCH} "
                      "per request"),
    "path and image": ({"dataframe_split": {"columns": ["path", "image"],
                                            "data": [["/x/a.png", _b64(_noise_png(8))]]}},
                       "row 0: give either 'path' or 'image', not both"),
    # A sound header (the size check passes) and half the pixel data.
    "truncated png": (image_request([_noise_png(64)[:6000]]),
                      "row 0: the 'image' value cannot be decoded ("),
    "oversized image": (image_request([_png_header(20000, 20000)]), "is too large"),
    "missing file": (path_request(["/nonexistent/a.png"]), "no such file on the server"),
    "unknown map": (image_request([_png_header(8, 8)], map="heat"), "param 'map'"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_a_400_with_one_message(server: Server, case: str) -> None:
    body, phrase = BAD_REQUESTS[case]
    status, answer = post(server.url, body)
    assert status == 400, answer
    assert phrase in answer["message"], answer
    text = json.dumps(answer)
    assert "Traceback" not in text and "stack_trace" not in answer
    assert "dfmx-request-" not in text, "the answer names the server's temporary file"


def test_logged_signature_and_input_example(logged_model: LoggedModel, server: Server,
                                            tmp_path: Path) -> None:
    """The logged signature, and the logged example request answered by the server (MLflow
    does not check the example when dfmx logs the model)."""
    mlflow.set_tracking_uri(logged_model.tracking_uri)
    info = mlflow.models.get_model_info(logged_model.model_uri)
    assert info.signature == model_signature()
    assert info.saved_input_example_info["artifact_path"] == "input_example.json"
    folder = Path(mlflow.artifacts.download_artifacts(logged_model.model_uri,
                                                      dst_path=str(tmp_path)))
    status, body = post(server.url, (folder / "serving_input_example.json").read_bytes())
    assert status == 200, body
    [row] = body["predictions"]
    assert np.isfinite(row["score"]) and isinstance(row["anomalous"], bool), row


def test_logged_requirements_pin_the_installed_versions(logged_model: LoggedModel,
                                                       tmp_path: Path) -> None:
    """MLflow's check of the pins is skipped while dfmx logs (they are the installed
    versions); the pins are logged all the same, and the check is back afterwards."""
    import mlflow.utils.environment as environment

    check = environment.warn_dependency_requirement_mismatches
    with _pins_not_rechecked():
        assert environment.warn_dependency_requirement_mismatches is not check
    assert environment.warn_dependency_requirement_mismatches is check
    mlflow.set_tracking_uri(logged_model.tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(logged_model.model_uri,
                                                      dst_path=str(tmp_path)))
    logged = (folder / "requirements.txt").read_text().split()
    assert set(pip_requirements()) <= set(logged), logged


def test_the_logged_model_carries_the_run_s_metrics(logged_model: LoggedModel) -> None:
    """The job's metrics are the run's and its logged model's (MLflow 3's model page),
    logged once each."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(logged_model.tracking_uri)
    model = client.get_logged_model(logged_model.model_uri.removeprefix("models:/"))
    run = client.get_run(model.source_run_id)
    on_model = {m.key: m.value for m in model.metrics or []}
    assert "image_AUROC" in on_model and "time_total" in on_model
    np.testing.assert_equal(on_model, run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "image_AUROC")) == 1
    assert run.info.status == "FINISHED"


def _doc_send_lines() -> str:
    """The shell lines after the ``mlflow models serve ... &`` line of the first bash block
    of ``docs/serving.md``: wait for ``/ping``, send ``part.png``."""
    block = SERVING_DOC.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return block.split(" &\n", 1)[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the documented lines use curl")
def test_doc_lines_send_an_image_over_the_argument_limit(server: Server,
                                                         tmp_path: Path) -> None:
    """The documented request streams its body: a PNG whose base64 text is over Linux's
    128 KiB limit on one command-line argument gets the score that the same bytes get."""
    lines = _doc_send_lines()
    assert lines.count("http://127.0.0.1:5001/") == 2, lines
    png = _noise_png(256)
    assert len(_b64(png)) > 128 * 1024
    (tmp_path / "part.png").write_bytes(png)
    proc = subprocess.run(["bash", "-c", lines.replace("http://127.0.0.1:5001", server.url)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    status, want = post(server.url, image_request([png]))
    assert status == 200, want
    got = json.loads(proc.stdout)["predictions"]
    assert len(got) == 1
    assert got[0]["score"] == pytest.approx(want["predictions"][0]["score"], rel=1e-6)
