"""Scoring new images with a saved model: ``dfmx.experiment.predict`` and ``dfmx-predict``'s
``main`` in-process (its subprocess runs are in ``tests/cli/test_predict.py``)."""

from __future__ import annotations

import csv
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from dfmx.cli import predict as predict_cli
from dfmx.data import Sample
from dfmx.data.demo import demo_root
from dfmx.experiment.predict import expand_inputs, model_batches, predict_images
from dfmx.experiment.run import LoaderSettings, load_splits, run_experiment, score_samples
from dfmx.experiment.saved_model import load_model
from dfmx.metrics.threshold import fpr_threshold


@pytest.fixture(scope="module")
def saved(job_config, dfmx_cache_dir: Path, tmp_path_factory) -> dict:
    """A FRE model fitted on 8 demo images (random resnet18, 64 px) and 4 images to score."""
    demo = demo_root(dfmx_cache_dir) / "demo"
    root = tmp_path_factory.mktemp("predict-data")
    normal, new = root / "normal", root / "new" / "sub"
    normal.mkdir()
    new.mkdir(parents=True)
    for src in sorted((demo / "train" / "good").glob("*.png"))[:8]:
        shutil.copyfile(src, normal / src.name)
    images = [demo / "test" / "good" / "000.png", demo / "test" / "hole" / "000.png",
              demo / "test" / "scratch" / "001.png", demo / "test" / "stain" / "002.png"]
    for i, src in enumerate(images):
        shutil.copyfile(src, new / f"{i}_{src.parent.name}.png")
    (new / "notes.txt").write_text("not an image")
    cfg = job_config(backbone="resnet18", pretrained=False, image_size=64, batch_size=4,
                     data={"name": "folder", "normal_dir": str(normal),
                           "abnormal_dir": str(new), "normal_test_fraction": 0.25})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFMX_CACHE_DIR", str(dfmx_cache_dir))
        result = run_experiment(cfg, root / "run")
    return {"result": result, "model_dir": root / "run" / "model", "new": root / "new",
            "images": sorted(new.glob("*.png")), "cfg": cfg}


def test_expand_inputs_mixes_files_and_folders(saved, tmp_path: Path) -> None:
    files = expand_inputs([saved["new"], saved["images"][0]])
    # the folder is searched recursively and its non-images skipped
    assert files == [*saved["images"], saved["images"][0]]
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        expand_inputs([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        expand_inputs([tmp_path / "empty"])


def test_an_error_mid_way_clears_the_progress_bar_and_stops_decoding(
        saved, capsys: pytest.CaptureFixture[str]) -> None:
    """An error raised while a progress bar shows: the bar's line is cleared on the way
    out, so the message printed further up (here by the test) starts a line of its own,
    and the decoding threads have stopped."""
    model = load_model(saved["model_dir"])
    samples = [Sample(path=p, label=0, defect_type="good", mask_path=None)
               for p in saved["images"]]
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="mid-way"), \
            model_batches(model, samples, 64, 1, 2, "predict") as batches:
        next(batches)
        decoders = {t for t in threading.enumerate()
                    if t.name.startswith("dfmx-decode")} - before
        assert decoders
        raise RuntimeError("mid-way")
    print("dfmx: error: mid-way", file=sys.stderr)
    err = capsys.readouterr().err
    assert "predict:" in err  # the bar was shown
    # What a terminal shows of the last line: the text after its last carriage return.
    assert err.splitlines()[-1].split("\r")[-1] == "dfmx: error: mid-way", repr(err)
    assert not any(t.is_alive() for t in decoders)


def test_predictions_equal_the_run_scores(saved) -> None:
    result = saved["result"]
    with (result.output_dir / "predictions.csv").open(newline="") as fh:
        run_rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    model = load_model(saved["model_dir"])
    preds = predict_images(model, saved["images"], batch_size=3)
    assert preds.paths == [str(p) for p in saved["images"]]
    expected = [float(run_rows[p.name]["score"]) for p in saved["images"]]
    np.testing.assert_allclose(preds.scores, expected, rtol=1e-6)
    # the threshold saved with the model is the validation normals' one; it gives the
    # run's decisions
    cfg = saved["cfg"]
    _, val, _ = load_splits(cfg["data"], cfg["seed"])
    loader = LoaderSettings.from_config(cfg)
    val_scores = score_samples(result.model, val, loader, split="val")["scores"]
    assert preds.threshold == fpr_threshold(val_scores, 0.01) == result.metrics["image_threshold"]
    assert model.metadata["val_scores"]["n"] == len(val) == result.n_val
    assert preds.predictions.astype(int).tolist() == [
        int(run_rows[p.name]["prediction"]) for p in saved["images"]
    ]
    assert preds.maps.shape == (4, 64, 64)  # image size from the model's metadata
    assert predict_images(model, saved["images"][:1], keep_maps=False).maps is None
    # another size gives another feature grid: refused with a message saying why
    with pytest.raises(ValueError, match="size the model was fitted on"):
        predict_images(model, saved["images"][:1], image_size=96)


def test_predict_main_writes_csv_and_overlays(saved, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = predict_cli.main([str(saved["model_dir"]), str(saved["new"]), "-o", str(out),
                             "--overlays", "3", "--threshold=-1e30"])
    assert code == 0
    with (out / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [str(p) for p in saved["images"]]
    assert {r["prediction"] for r in rows} == {"anomalous"}  # every score >= the threshold
    assert len(list((out / "overlays").glob("top_*.png"))) == 3
    assert "scored 4 image(s)" in capsys.readouterr().out


def test_predict_main_uses_the_saved_validation_threshold(saved, tmp_path: Path,
                                                           capsys) -> None:
    out = tmp_path / "out"
    assert predict_cli.main([str(saved["model_dir"]), str(saved["new"]), "-o", str(out),
                             "--overlays", "0"]) == 0
    threshold = saved["result"].metrics["image_threshold"]  # the validation normals' one
    with (out / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["prediction"] for r in rows] == [
        "anomalous" if float(r["score"]) >= threshold else "normal" for r in rows]
    assert f"at threshold {threshold:.6g}" in capsys.readouterr().out


@pytest.mark.parametrize("what", ["model", "input"])
def test_predict_main_reports_user_errors_in_one_line(saved, tmp_path: Path, capsys,
                                                       what: str) -> None:
    model = tmp_path / "no-model" if what == "model" else saved["model_dir"]
    image = tmp_path / "gone.png" if what == "input" else saved["images"][0]
    assert predict_cli.main([str(model), str(image), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dfmx-predict: ")
    assert ("model.json is missing" if what == "model" else "gone.png") in err
    assert "--debug" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "predictions.csv").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--batch-size", "0", "argument --batch-size: must be a whole number >= 1; got '0'"),
    ("--batch-size", "x", "argument --batch-size: must be a whole number >= 1; got 'x'"),
    ("--overlays", "-2", "argument --overlays: must be a whole number >= 0; got '-2'"),
    ("--threshold", "nan", "argument --threshold: must be a finite number; got 'nan'"),
])
def test_predict_main_refuses_bad_options_before_loading(tmp_path: Path, capsys, option: str,
                                                          value: str, message: str) -> None:
    """argparse's usage error (exit status 2), before the model is even looked for;
    --batch-size 0 used to end in a ZeroDivisionError."""
    with pytest.raises(SystemExit) as stop:
        predict_cli.main([str(tmp_path / "no-model"), str(tmp_path), f"{option}={value}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_predict_images_refuses_batch_size_zero_at_the_call(saved) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        predict_images(load_model(saved["model_dir"]), saved["images"], batch_size=0)
