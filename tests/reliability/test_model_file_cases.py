"""Hand-edited ``model.json`` files through the real ``dfmx-predict`` (subprocesses).

Each edit is refused on load with one ``dfmx-predict:`` line naming the field; an edit
that keeps the file well-formed (a threshold of 1e12 that labels every image normal) is
caught by the description's checksum, and the message points to ``--threshold``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cli_runner import CliResult, command_env, run_cli, warm_cache

from . import corpus as c

TRACEBACK = "Traceback (most recent call last)"

#: name -> (edit of the parsed model.json, the field the one error line must name).
EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "negative_image_size": (lambda d: d["metadata"].update(image_size=-5),
                            "field metadata.image_size must be a whole number >= 1; got -5"),
    "null_threshold": (lambda d: d["metadata"].update(threshold=None),
                       "field metadata.threshold must be a finite number; got None"),
    "list_metadata": (lambda d: d.update(metadata=[1, 2]),
                      "field metadata must be a mapping of names to values; got [1, 2]"),
    "text_kernel_size": (lambda d: d["model"]["pooling_params"].update(kernel_size="big"),
                         "field model.pooling_params: pooling kernel_size must be a whole "
                         "number >= 1; got 'big'"),
    "huge_threshold": (lambda d: d["metadata"].update(threshold=1e12),
                       "description_sha256"),
}


def _run(args: list[str], cwd: Path) -> CliResult:
    return run_cli(args, cwd, command_env(warm_cache(cwd / "cache"), OMP_NUM_THREADS="1"),
                   module="dfmx.cli.predict")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliResult]:
    """Every edited copy of one saved model, and the untouched one with --threshold 1e12."""
    import torch

    from dfmx import DFMModel
    from dfmx.experiment.saved_model import CONFIG, save_model

    root = tmp_path_factory.mktemp("model_files")
    images = root / "images"
    for i in range(3):
        c.write_png(images / f"{i}.png", seed=i, size=64)
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2)
    feats, shape = model.get_features(torch.rand(4, 3, 64, 64))
    saved = save_model(model.fit(feats, shape), root / "model", image_size=64, threshold=1.0)
    jobs = {"untouched": [str(saved), str(images), "--overlays", "0", "--threshold", "1e12",
                          "-o", str(root / "out")]}
    for name, (edit, _) in EDITS.items():
        copy = root / name
        copy.mkdir()
        for f in saved.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        description = json.loads((copy / CONFIG).read_text())
        edit(description)
        (copy / CONFIG).write_text(json.dumps(description))
        jobs[name] = [str(copy), str(images), "--overlays", "0", "-o", str(root / f"o_{name}")]
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(_run, args, root) for name, args in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_an_edited_model_json_is_refused_naming_the_field(results, name: str) -> None:
    result = results[name]
    assert result.returncode == 1, result
    assert TRACEBACK not in result.output, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("dfmx-predict:")]
    assert len(errors) == 1, result
    assert "model.json" in errors[0] and EDITS[name][1] in errors[0], result
    assert not (Path(result.args[-1]) / "predictions.csv").exists()


def test_the_checksum_message_points_to_the_threshold_option(results) -> None:
    assert "dfmx-predict --threshold" in results["huge_threshold"].stderr


def test_another_threshold_is_given_on_the_command_line(results) -> None:
    result = results["untouched"]
    assert result.returncode == 0, result
    assert "0 predicted anomalous at threshold 1e+12" in result.stdout, result
