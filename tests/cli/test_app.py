"""``python -m dfmx``: every config group, sweeps, help and error messages (real subprocesses).

The commands run once per session in :func:`conftest.cli_runs`; each test checks one.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml
from cli_runner import CliResult, assert_clean_failure
from PIL import Image

from .conftest import load_metrics

IMAGE_METRICS = ("image_AUROC", "image_AUPR", "image_F1_oracle", "image_threshold",
                 "image_FPR_at_val_threshold", "val_synthetic_AUROC")
PIXEL_METRICS = ("pixel_AUROC", "pixel_AUPR", "pixel_PRO")
CSV_COLUMNS = ["path", "defect_type", "label", "score", "prediction"]
GROUPS = {
    "backbone": ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18",
                 "resnet50", "wide_resnet50"],
    "data": ["demo", "folder", "mvtec"],
    "layer": ["default"],
    "pooling": ["avg", "max", "none"],
    "scorer": ["fre", "knn", "nll"],
}


def _ok(result: CliResult) -> Path:
    assert result.returncode == 0, result
    assert "Traceback" not in result.output, result
    return result.run_dir


def _config(job_dir: Path) -> dict:
    return yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "predictions.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == CSV_COLUMNS
        return list(reader)


def _check_job(job_dir: Path, *, pixel: bool) -> dict:
    """metrics.json with finite image (and, iff ``pixel``, pixel) metrics; CSV row count."""
    metrics = load_metrics(job_dir)
    for key in IMAGE_METRICS + (PIXEL_METRICS if pixel else ()):
        assert math.isfinite(metrics[key]), (key, metrics)
    if not pixel:
        assert not any(k.startswith("pixel_") for k in metrics), metrics
    rows = _rows(job_dir)
    assert len(rows) == metrics["n_test"]
    return metrics


def _group_options(help_text: str) -> dict[str, list[str]]:
    section = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    options = {}
    for line in section.splitlines():
        group, sep, rest = line.partition(":")
        if sep and " " not in group and rest.strip():
            options[group] = [o.strip() for o in rest.split(",")]
    return options


def test_default_run_writes_every_output(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["default"]
    run_dir = _ok(result)
    cfg = _config(run_dir)
    assert cfg["backbone"]["name"] == "efficientnet_lite0" and cfg["scorer"]["name"] == "fre"
    assert cfg["image_size"] == 128 and cfg["precision"] == "auto" and cfg["overlays"] == 2

    metrics = _check_job(run_dir, pixel=True)
    assert metrics["image_AUROC"] > 0.8, metrics
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (48, 12, 50)

    rows = _rows(run_dir)
    assert {r["defect_type"] for r in rows} == {"good", "scratch", "hole", "stain"}
    for row in rows:
        assert Path(row["path"]).is_file()
        assert int(row["label"]) == (row["defect_type"] != "good")
        assert math.isfinite(float(row["score"]))
        assert row["prediction"] in ("0", "1")

    for name in ("roc.png", "score_histogram.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    overlays = sorted((run_dir / "overlays").glob("*.png"))
    assert len(overlays) == 4, overlays
    assert sum(p.name.startswith("normal_") for p in overlays) == 2
    assert (run_dir / "model" / "model.json").is_file()
    assert (run_dir / "model" / "model.safetensors").stat().st_size > 0

    # The summary table closes the run: configuration and metric rows.
    table = result.stdout[result.stdout.index("┌"):]
    for needle in ("efficientnet_lite0", "fre", "demo: 48 train / 12 val / 50 test", str(run_dir),
                   *IMAGE_METRICS, *PIXEL_METRICS):
        assert needle in table, needle


def test_wide_resnet_random_nll_has_no_pixel_metrics(cli_runs: dict[str, CliResult]) -> None:
    run_dir = _ok(cli_runs["wide_nll"])
    cfg = _config(run_dir)
    assert cfg["backbone"]["arch"] == "wide_resnet50" and cfg["backbone"]["pretrained"] is False
    assert cfg["scorer"] == {"name": "nll"}
    _check_job(run_dir, pixel=False)   # the data has masks, but NLL gives no maps
    assert not (run_dir / "overlays").exists()


def test_missing_pretrained_weights_is_a_one_line_error(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["wide_no_weights"]
    assert_clean_failure(result, "wide_resnet50", "pretrained=false")
    # the message is a single line; the next only says how to get the traceback
    line = next(ln for ln in result.output.splitlines() if "wide_resnet50" in ln)
    assert "pretrained=false" in line
    assert not (result.run_dir / "metrics.json").exists()


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()),
                  key=lambda p: int(p.name))


def test_pooling_and_several_layers(cli_runs: dict[str, CliResult]) -> None:
    jobs = _jobs(_ok(cli_runs["layers"]))
    assert [_config(j)["pooling"]["name"] for j in jobs] == ["max", "none"]
    dims = []
    for job in jobs:
        cfg = _config(job)
        assert cfg["layer"]["names"] == ["layer2", "layer3"]
        assert (cfg["backbone"]["arch"], cfg["backbone"]["pretrained"]) == ("resnet18", False)
        dims.append(_check_job(job, pixel=True)["feature_dim"])
        saved = json.loads((job / "model" / "model.json").read_text())
        assert saved["model"]["layers"] == ["layer2", "layer3"]
        assert saved["backbone_included"] is True
    # resnet18 layer2 + layer3 = 128 + 256 channels on the 16x16 grid of layer2 at 128 px;
    # max pooling k=2 -> 8x8, no pooling keeps 16x16.
    assert dims == [384 * 8 * 8, 384 * 16 * 16]


def test_multirun_sweep_writes_one_folder_per_job(cli_runs: dict[str, CliResult]) -> None:
    jobs = _jobs(_ok(cli_runs["sweep"]))
    assert len(jobs) == 4, jobs
    seen = set()
    for job in jobs:
        cfg = _config(job)
        scorer, kernel = cfg["scorer"]["name"], cfg["pooling"]["kernel_size"]
        seen.add((scorer, kernel))
        _check_job(job, pixel=scorer == "fre")
        assert (job / "model" / "model.safetensors").is_file()
        # The nll jobs come after the fre jobs of the same features: their PCAs are shared.
        reused = "the earlier fit of the same features reused" in (job / "app.log").read_text()
        assert reused == (scorer == "nll"), (job, scorer)
    assert seen == {("fre", 2), ("fre", 4), ("nll", 2), ("nll", 4)}
    sweep_dir = cli_runs["sweep"].run_dir
    assert (sweep_dir / "sweep_table.csv").is_file()  # also with tracking=none
    with Image.open(sweep_dir / "sweep_summary.png") as picture:
        assert picture.format == "PNG" and picture.size[0] >= 1000


def test_mvtec_layout_data(cli_runs: dict[str, CliResult]) -> None:
    job = _jobs(_ok(cli_runs["layers"]))[0]
    cfg = _config(job)
    assert cfg["data"]["name"] == "mvtec" and cfg["data"]["category"] == "tiny"
    metrics = _check_job(job, pixel=True)   # the ground_truth masks were read
    # 6 training normals: 4 held out for validation (the minimum of 5, lowered so 2 fit)
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (2, 4, 6)
    rows = _rows(job)
    assert [r["defect_type"] for r in rows] == ["good"] * 3 + ["scratch"] * 3
    assert [r["label"] for r in rows] == ["0"] * 3 + ["1"] * 3
    assert all(r["path"].startswith(str(cfg["data"]["root"])) for r in rows)


def test_plain_folder_data(cli_runs: dict[str, CliResult]) -> None:
    job = _jobs(_ok(cli_runs["sweep"]))[0]
    cfg = _config(job)
    assert cfg["data"]["name"] == "folder" and cfg["scorer"]["name"] == "fre"
    metrics = _check_job(job, pixel=True)
    # normal_test_fraction 0.2 of 8 normals -> 2 held out; all 3 anomalies are test images;
    # 4 of the 6 others held out for validation
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (2, 4, 5)
    rows = _rows(job)
    assert [r["label"] for r in rows] == ["0", "0", "1", "1", "1"]
    assert [r["defect_type"] for r in rows[2:]] == ["abnormal"] * 3
    # masks in both naming styles were found: the pixel metrics are defined
    assert 0.0 <= metrics["pixel_PRO"] <= 1.0


def test_mvtec_without_root_is_a_clear_error(cli_runs: dict[str, CliResult]) -> None:
    """Refused by the start-up check of the options: a usage error, before a run folder."""
    result = cli_runs["mvtec_no_root"]
    assert_clean_failure(result, "dfmx: error: data=mvtec: data.root is required")
    assert result.returncode == 2, result
    assert result.run_dir is not None and not result.run_dir.exists(), result


def test_help_lists_every_group_and_option(cli) -> None:
    result = cli.help
    assert result.returncode == 0, result
    options = _group_options(result.stdout)
    for group, expected in GROUPS.items():
        assert set(expected) <= set(options[group]), (group, options)
    assert "kernel_size" in result.stdout and "pca_level" in result.stdout


def test_cfg_job_shows_plugin_scorer_params(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["cfg_knn"]
    assert result.returncode == 0, result
    cfg = yaml.safe_load(result.stdout)
    assert cfg["scorer"] == {"name": "knn", "n_neighbors": 3, "whiten": False}
    assert cfg["backbone"]["name"] == "efficientnet_lite0"


def test_unknown_option_lists_available_scorers(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["bogus_scorer"]
    assert_clean_failure(result, "bogus")
    listed = result.output.split("bogus", 1)[1]
    for name in GROUPS["scorer"]:
        assert name in listed, name


def test_unknown_key_is_refused(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["bad_key"]
    assert_clean_failure(result, "pca_levle")
    assert not (result.run_dir / "metrics.json").exists()
