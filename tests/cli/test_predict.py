"""``dfmx-predict`` (``python -m dfmx.cli.predict``) on the model of the session's default run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from cli_runner import CliResult, CliRunner, Job, assert_clean_failure

PREDICT = "dfmx.cli.predict"


@pytest.fixture(scope="module")
def predict_runs(
    cli: CliRunner, cli_runs: dict[str, CliResult], demo_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, object]:
    run = cli_runs["default"]
    assert run.returncode == 0, run
    model = run.run_dir / "model"
    out = tmp_path_factory.mktemp("predict")
    inputs = [demo_dir / "test" / "hole", demo_dir / "test" / "good" / "000.png"]
    jobs = {
        "ok": Job([str(model), *map(str, inputs), "-o", str(out / "ok"), "--batch-size", "32",
                   "--overlays", "2"], module=PREDICT, run_dir=out / "ok"),
        "missing_input": Job([str(model), str(out / "nope.png"), "-o", str(out / "x")],
                             module=PREDICT, run_dir=out / "x"),
        "missing_model": Job([str(out / "no_model"), str(inputs[1]), "-o", str(out / "y")],
                             module=PREDICT, run_dir=out / "y"),
    }
    return {"run": run, "inputs": inputs, **cli.run_many(jobs)}


def _scores(csv_path: Path) -> dict[str, dict[str, str]]:
    with csv_path.open(newline="") as fh:
        return {str(Path(r["path"]).resolve()): r for r in csv.DictReader(fh)}


def test_predict_scores_match_the_run(predict_runs: dict) -> None:
    result: CliResult = predict_runs["ok"]
    assert result.returncode == 0, result
    assert "Traceback" not in result.output
    out = result.run_dir
    predicted = _scores(out / "predictions.csv")
    folder, single = predict_runs["inputs"]
    expected_files = [*sorted(folder.glob("*.png")), single]
    assert sorted(predicted) == sorted(str(p.resolve()) for p in expected_files)
    from_run = _scores(predict_runs["run"].run_dir / "predictions.csv")
    for path, row in predicted.items():
        assert float(row["score"]) == pytest.approx(float(from_run[path]["score"]), rel=1e-6)
        # same threshold as the run (the one saved with the model) -> same decision
        assert row["prediction"] == ("anomalous" if from_run[path]["prediction"] == "1"
                                     else "normal"), path
    assert all(math.isfinite(float(r["score"])) for r in predicted.values())
    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.name.split("_")[:2] for p in overlays] == [["top", "01"], ["top", "02"]]
    assert f"scored {len(expected_files)} image(s)" in result.stdout


def test_predict_missing_input_is_a_clear_error(predict_runs: dict) -> None:
    result: CliResult = predict_runs["missing_input"]
    assert result.returncode == 1, result
    assert_clean_failure(result, "dfmx-predict:", "nope.png")
    assert not (result.run_dir / "predictions.csv").exists()


def test_predict_missing_model_is_a_clear_error(predict_runs: dict) -> None:
    result: CliResult = predict_runs["missing_model"]
    assert result.returncode == 1, result
    assert_clean_failure(result, "dfmx-predict:", "model.json")
