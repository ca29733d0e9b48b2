"""Overlapping data sets, training images without variation, missing masks, file names
that are not valid UTF-8, secrets in overrides and unusable tracking servers: each
through the real CLI (``python -m dfmx`` in a subprocess)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import CliResult, assert_clean_failure, command_env, warm_cache
from cli_runner import run_cli as run_command
from PIL import Image

from . import corpus as c

TRACEBACK = "Traceback (most recent call last)"
FAST = ["image_size=64", "batch_size=32", "overlays=0", "save_model=false", "precision=auto"]


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> CliResult:
    env = command_env(warm_cache(cwd / "cache"), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0",
                      MLFLOW_ENABLE_ASYNC_LOGGING="false")
    result = run_command([*FAST, *args, f"hydra.run.dir={cwd / 'run'}"], cwd, env,
                         timeout=timeout)
    result.run_dir = cwd / "run"
    return result


def assert_stops(result: CliResult, *needles: str) -> None:
    assert_clean_failure(result, *needles)
    assert not (result.run_dir / "metrics.json").exists(), result


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("round2")
    c.folder_tree(root / "set", n_normal=8, n_abnormal=4)
    normal, abnormal = root / "set" / "normal", root / "set" / "abnormal"
    beside = root / "beside"  # MVTec-style masks kept with the anomalous images
    shutil.copytree(abnormal, beside)
    for image in sorted(beside.glob("*.png")):
        c.write_mask(beside / f"{image.stem}_mask.png")
    same = root / "same"
    same.mkdir()
    first = sorted(abnormal.glob("*.png"))[0]  # not used elsewhere in these runs
    for i in range(4):
        shutil.copy(first, same / f"{i}.png")
    black = root / "black"
    black.mkdir()
    for i, side in enumerate((40, 48, 56, 64)):
        Image.new("RGB", (side, side)).save(black / f"{i}.png")
    os.symlink(normal, root / "normal_link")
    shutil.copytree(normal, root / "normal_copy")
    bad = root / "bad_names"
    shutil.copytree(normal, bad / "normal")
    shutil.copytree(abnormal, bad / "abnormal")
    for part in ("normal", "abnormal"):
        src = sorted((bad / part).glob("*.png"))[0]
        shutil.copy(src, os.fsencode(bad / part) + b"/bad\xff.png")
    with open(os.fsencode(bad / "abnormal") + b"/empty\xfe.png", "wb"):
        pass  # an empty file: skipped, and listed in skipped_files.csv
    # A folder whose own name is not valid UTF-8, holding bad_names' images.
    undecodable = Path(os.fsdecode(os.fsencode(root) + b"/names\xfd"))
    shutil.copytree(bad, undecodable)
    some_masks = root / "some_masks"  # masks of 2 of the 4 anomalous images
    for image in sorted(abnormal.glob("*.png"))[:2]:
        c.write_mask(some_masks / f"{image.stem}_mask.png")
    return {"root": root, "normal": normal, "abnormal": abnormal, "beside": beside,
            "some_masks": some_masks, "undecodable": undecodable,
            "same": same, "black": black, "link": root / "normal_link",
            "copy": root / "normal_copy", "bad": bad}


def _cwd(folders: dict[str, Path], name: str) -> Path:
    cwd = folders["root"] / "cwd" / name
    cwd.mkdir(parents=True)
    return cwd


# ------------------------------------------------------------------- item 4: overlaps
#: Overlapping sets: the folders given (keys of the ``folders`` fixture) and the phrases of
#: the one-line refusal.
OVERLAPS = {
    "masks_in_the_anomalous_folder": ({"abnormal_dir": "beside", "mask_dir": "beside"},
                                      "data.abnormal_dir and data.mask_dir are the same folder"),
    "masks_beside_the_anomalous_images": ({"abnormal_dir": "beside"},
                                          "look like masks kept beside their images",
                                          "_mask.png"),
    "anomalous_folder_is_the_training_folder": (
        {"abnormal_dir": "normal"}, "data.normal_dir and data.abnormal_dir are the same folder"),
    "test_folder_linked_to_the_training_folder": (
        {"test_normal_dir": "link"},
        "data.normal_dir and data.test_normal_dir are the same folder"),
    "test_images_equal_to_training_images": (
        {"test_normal_dir": "copy", "abnormal_dir": "abnormal"},
        "both a training image and a test image (identical contents)"),
}


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_overlapping_sets_stop(folders: dict[str, Path], case: str) -> None:
    f = folders
    given, *phrases = OVERLAPS[case]
    result = run_cli(["tracking=none", "data=folder", f"data.normal_dir={f['normal']}",
                      *(f"data.{key}={f[name]}" for key, name in given.items())],
                     _cwd(f, case))
    assert_stops(result, *phrases)
    assert len(result.stderr.strip().splitlines()) <= 3, result  # the line and the debug hint


# ---------------------------------------------------------------- item 5: no variation
@pytest.mark.parametrize(("folder", "phrases"), [
    ("same", ("all have the same contents", "carry no variation")),  # checked on the files
    ("black", ("NoVariationError", "carry no variation")),  # blank: checked on the features
], ids=["one_image_repeated", "blank_images"])
def test_training_images_without_variation_stop(folders: dict[str, Path], folder: str,
                                                phrases: tuple[str, str]) -> None:
    f = folders
    result = run_cli(["tracking=none", "data=folder", f"data.normal_dir={f[folder]}",
                      f"data.test_normal_dir={f['normal']}"], _cwd(f, folder))
    assert_stops(result, *phrases)
    assert "NaN" not in result.output


# ---------------------------------- item 6 (missing masks) and item 12 (non-UTF-8 names)
def test_missing_masks_and_undecodable_names(folders: dict[str, Path]) -> None:
    f = folders
    bad = f["bad"]
    result = run_cli(["tracking=none", "data=folder", f"data.normal_dir={bad / 'normal'}",
                      f"data.abnormal_dir={bad / 'abnormal'}"], _cwd(f, "names"))
    assert result.returncode == 0, result
    assert TRACEBACK not in result.output and "UnicodeEncodeError" not in result.output
    # Item 6: the summary says how many anomalous images lack masks and where they were
    # looked for; metrics.json counts them.
    assert "5 of 5 anomalous test image(s) have no mask, so pixel metrics are not computed" \
        in result.stdout, result
    assert "data.mask_dir is not set" in result.stdout, result
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n_test_anomalous_without_mask"] == 5  # 4 + bad\xff.png
    assert "pixel_AUROC" not in metrics
    # Item 12: the undecodable names are read (or skipped) and written escaped.
    predictions = (result.run_dir / "predictions.csv").read_text(encoding="utf-8")
    assert "bad\\xff.png" in predictions, predictions
    skipped = (result.run_dir / "skipped_files.csv").read_text(encoding="utf-8")
    assert "empty\\xfe.png" in skipped and "empty file" in skipped, skipped


def test_images_without_masks_are_left_out_of_pixel_metrics(folders: dict[str, Path]) -> None:
    """Masks for 2 of the 4 anomalous images: the warning and the summary say the same
    thing (the other 2 are left out of the pixel metrics), and pixel metrics exist."""
    f = folders
    cwd = _cwd(f, "some_masks")
    result = run_cli(["tracking=none", "data=folder", f"data.normal_dir={f['normal']}",
                      f"data.abnormal_dir={f['abnormal']}", f"data.mask_dir={f['some_masks']}"],
                     cwd)
    assert result.returncode == 0, result
    assert "2 of 4 anomalous test image(s) have no mask, so pixel metrics use the other 2" \
        in result.stdout, result
    assert "(2 of 4). Pixel metrics leave them out (their pixel labels are unknown) and use " \
        "the other 2" in result.output, result
    assert "as normal" not in result.output, result
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert any(key.startswith("pixel_") for key in metrics), metrics


def test_undecodable_names_are_tracked_escaped(folders: dict[str, Path]) -> None:
    """A data folder whose name is not valid UTF-8 (``names\\xfd``), holding
    ``bad\\xff.png``, with an MLflow store: unquoted, the override is refused in one line
    saying to quote it (Hydra's grammar reads such bytes only in quotes); quoted, the run
    finishes and its params and artifacts carry the names escaped."""
    from mlflow.tracking import MlflowClient

    folder = folders["undecodable"]
    cwd = _cwd(folders, "names_tracked")
    db = f"sqlite:///{cwd / 'mlflow.db'}"
    result = run_cli([f"tracking.tracking_uri={db}", "data=folder",
                      f"data.normal_dir={folder}/normal"], cwd)
    assert_stops(result, "data.normal_dir", "not valid UTF-8", "data.normal_dir='VALUE'")
    result = run_cli([f"tracking.tracking_uri={db}", "data=folder",
                      f"data.normal_dir='{folder}/normal'",
                      f"data.abnormal_dir='{folder}/abnormal'"], cwd)
    assert result.returncode == 0, result
    assert TRACEBACK not in result.output and "UnicodeEncodeError" not in result.output
    client = MlflowClient(db)
    (run,) = client.search_runs([client.get_experiment_by_name("dfmx").experiment_id])
    assert run.info.status == "FINISHED", run.data.tags
    assert run.data.params["data.normal_dir"].endswith("names\\xfd/normal"), run.data.params
    rows = Path(client.download_artifacts(run.info.run_id, "predictions.csv", str(cwd)))
    assert "names\\xfd/abnormal/bad\\xff.png" in rows.read_text(encoding="utf-8")


# ------------------------------------------------------------------ item 8: secrets
def test_secrets_in_overrides_are_recorded_nowhere(folders: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    f = folders
    cwd = _cwd(f, "secrets")
    db = f"sqlite:///{cwd / 'mlflow.db'}"
    result = run_cli([f"tracking.tracking_uri={db}", "data=folder",
                      f"data.normal_dir={f['normal']}",
                      "backbone.weights=https://alice:s3cr3tTOKEN@weights.invalid/w.pth"], cwd)
    assert result.returncode != 0, result
    assert "s3cr3tTOKEN" not in result.output, result
    for file in (cwd / "run").rglob("*"):
        if file.is_file():
            assert b"s3cr3tTOKEN" not in file.read_bytes(), file
    client = MlflowClient(db)
    (run,) = client.search_runs([client.get_experiment_by_name("dfmx").experiment_id])
    assert run.info.status == "FAILED"
    for value in [*run.data.tags.values(), *run.data.params.values()]:
        assert "s3cr3tTOKEN" not in value, run.data.tags
    error = Path(client.download_artifacts(run.info.run_id, "error.txt", str(cwd)))
    assert "s3cr3tTOKEN" not in error.read_text()


# --------------------------------------------------------- item 7: unusable servers
class _Handler(http.server.BaseHTTPRequestHandler):
    api_status = 500
    needs_auth: str | None = None

    def do_GET(self) -> None:
        if self.needs_auth and self.headers.get("Authorization") != self.needs_auth:
            status = 401
        else:
            status = 200 if self.path == "/health" else self.api_status
        body = b"OK" if status == 200 else b'{"error_code": "INTERNAL_ERROR"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    """A server on 127.0.0.1 answering /health with 200 and every API call with 500, to
    requests carrying basic auth ``alice:tok``; others get 401."""
    import base64

    handler = type("H", (_Handler,), {
        "needs_auth": "Basic " + base64.b64encode(b"alice:tok").decode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unusable_tracking_servers_are_one_line(
    fake_server: str, folders: dict[str, Path]
) -> None:
    f = folders
    data = ["data=folder", f"data.normal_dir={f['normal']}"]
    # Credentials in the URI are used (not taken for a host name); the API then fails.
    result = run_cli([f"tracking.tracking_uri=http://alice:tok@{fake_server}", *data],
                     _cwd(f, "api500"), timeout=120)
    assert_stops(result, "answers /health but its API fails (HTTP 500)")
    assert "tok@" not in result.output and "Name or service" not in result.output
    result = run_cli([f"tracking.tracking_uri=http://alice:wrong@{fake_server}", *data],
                     _cwd(f, "api401"), timeout=120)
    assert_stops(result, "refused the credentials in the URI (HTTP 401)")
    assert "wrong" not in result.output
    cwd = _cwd(f, "folder_uri")
    result = run_cli([f"tracking.tracking_uri={cwd / 'mlruns'}", *data], cwd, timeout=120)
    assert_stops(result, "is a folder", "sqlite:///")


def test_credentials_in_the_uri_reach_a_server_behind_authentication(
    folders: dict[str, Path]
) -> None:
    """A real ``mlflow server`` behind a proxy that lets through only requests carrying
    ``alice:s3cr3tTOKEN`` (HTTP basic authentication): with the credentials in the URI the
    run finishes, every request (the check, the API calls, the artifact uploads) carries
    them, and they are recorded nowhere."""
    from mlflow.tracking import MlflowClient
    from mlflow_server import basic_auth_proxy, mlflow_server

    f = folders
    cwd = _cwd(f, "auth")
    with mlflow_server(cwd) as upstream, \
            basic_auth_proxy(upstream, "alice", "s3cr3tTOKEN") as (address, seen):
        result = run_cli([f"tracking.tracking_uri=http://alice:s3cr3tTOKEN@{address}",
                          "data=folder", f"data.normal_dir={f['normal']}"], cwd)
        assert result.returncode == 0, result
        client = MlflowClient(upstream)
        (run,) = client.search_runs([client.get_experiment_by_name("dfmx").experiment_id])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.info.status == "FINISHED", run.data.tags
    assert "predictions.csv" in artifacts, artifacts
    assert seen and all(allowed for _, _, allowed in seen), seen
    assert any(method == "PUT" for method, _, _ in seen), seen  # artifacts went through it
    assert "s3cr3tTOKEN" not in result.output, result
    for value in [*run.data.tags.values(), *run.data.params.values()]:
        assert "s3cr3tTOKEN" not in value, run.data.tags


def test_predict_writes_undecodable_names_escaped(folders: dict[str, Path]) -> None:
    """``dfmx-predict`` on a folder holding ``bad\\xff.png``: scored, written escaped."""
    import torch

    from dfmx import DFMModel
    from dfmx.experiment.saved_model import save_model

    cwd = _cwd(folders, "predict")
    model = DFMModel("efficientnet_lite0", "blocks.4", pooling_kernel_size=2)
    feats, shape = model.get_features(torch.rand(4, 3, 64, 64))
    model.fit(feats, shape)
    directory = save_model(model, cwd / "model", image_size=64, threshold=1.0)
    result = run_command([str(directory), str(folders["bad"] / "normal"), "--overlays", "2",
                          "--output", str(cwd / "out")], cwd,
                         command_env(warm_cache(cwd / "cache"), OMP_NUM_THREADS="1"),
                         module="dfmx.cli.predict")
    assert result.returncode == 0, result
    assert TRACEBACK not in result.stderr
    rows = (cwd / "out" / "predictions.csv").read_text(encoding="utf-8")
    assert "bad\\xff.png" in rows, rows


def test_secrets_stay_out_of_a_sweep(folders: dict[str, Path]) -> None:
    """A ``-m`` sweep: Hydra's launch lines, ``multirun.yaml``, the jobs' ``.hydra``
    files, the job records and the summary line carry no secret."""
    f = folders
    cwd = _cwd(f, "sweep_secrets")
    env = command_env(warm_cache(cwd / "cache"), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    result = run_command(["-m", "scorer=fre,nll", *FAST, "tracking=none", "data=folder",
                          f"data.normal_dir={f['normal']}",
                          "backbone.weights=https://alice:s3cr3tTOKEN@weights.invalid/w.pth",
                          f"hydra.sweep.dir={cwd / 'sweep'}"], cwd, env)
    proc, out = result, result.output
    assert proc.returncode != 0 and "dfmx sweep:" in out, out
    assert "s3cr3tTOKEN" not in out, out
    assert (cwd / "sweep" / "multirun.yaml").is_file()
    for file in (cwd / "sweep").rglob("*"):
        if file.is_file():
            assert b"s3cr3tTOKEN" not in file.read_bytes(), file
