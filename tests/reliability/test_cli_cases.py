"""Every bad input through the real CLI: one clear message, the right exit status.

The commands run in subprocesses started together by ``conftest.cli_runs``; each test
reads the result of its case. ``docs/reliability.md`` maps every case to its test.
"""

from __future__ import annotations

import csv

import pytest
from cli_runner import CliResult, assert_clean_failure

TRACEBACK = "Traceback (most recent call last)"


def assert_one_error(result: CliResult) -> None:
    """Exactly one error report: one ERROR log line or one ``dfmx: error:`` line."""
    reports = result.output.count("[ERROR]") + result.output.count("dfmx: error:")
    assert reports == 1, result


# ----------------------------------------------------------- works / skip-with-warning
@pytest.mark.cli_case("skip_bundle")
def test_skip_bundle_finishes(cli: CliResult) -> None:
    """Corrupt, empty, text-as-png and bomb files are skipped; CMYK, palette and an
    8000x8000 image work; the run finishes and reports the skipped files once."""
    assert cli.returncode == 0, cli
    assert TRACEBACK not in cli.output, cli
    assert "skipped 5 unreadable file(s) (3 training, 2 test)" in cli.output, cli
    # train: 8 textures + CMYK + palette + 8000x8000; test: 3 good, 3 crack, 2 scratch
    assert "6 train / 5 val / 8 test" in cli.output, cli


@pytest.mark.cli_case("skip_bundle")
def test_skip_bundle_writes_skipped_csv(cli: CliResult) -> None:
    with (cli.run_dir / "skipped_files.csv").open(encoding="utf-8") as fh:
        rows = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in csv.DictReader(fh)}
    assert set(rows) == {"corrupt.png", "empty.png", "text.png", "bomb.png",
                         "badmask_mask.png"}, rows
    assert "empty file" in rows["empty.png"]
    assert "not an image" in rows["text.png"]
    assert "too large" in rows["bomb.png"]
    assert "unreadable mask" in rows["badmask_mask.png"]


@pytest.mark.cli_case("skip_bundle")
def test_skip_bundle_warns_about_masks(cli: CliResult) -> None:
    out = cli.output
    assert "differ in size from their image and are resized" in out, cli
    assert "match no test image" in out and "orphan_mask.png" in out, cli
    assert "have no ground-truth mask: scratch (2 of 2)" in out, cli


@pytest.mark.cli_case("skip_bundle")
def test_non_image_files_are_ignored_silently(cli: CliResult) -> None:
    for name in ("notes.txt", "Thumbs.db", ".DS_Store"):
        assert name not in cli.output, cli


@pytest.mark.cli_case("one_class")
def test_one_class_test_set_reports_undefined_auroc(cli: CliResult) -> None:
    assert cli.returncode == 0, cli
    assert TRACEBACK not in cli.output, cli
    assert "image AUROC is undefined: the test set has only normal images" in cli.output, cli
    assert "n/a (undefined)" in cli.stdout, cli
    assert (cli.run_dir / "predictions.csv").is_file()


# ------------------------------------------------------------------------------ stop
@pytest.mark.cli_case("empty_train")
def test_empty_training_folder_stops(cli: CliResult) -> None:
    assert_clean_failure(cli, "no training images in", "train/good", "it holds 3 other file(s)")
    assert_one_error(cli)


@pytest.mark.cli_case("missing_train")
def test_missing_training_folder_stops(cli: CliResult) -> None:
    assert_clean_failure(cli, "normal image folder not found", "normalx")
    assert_one_error(cli)


@pytest.mark.cli_case("one_train")
def test_one_training_image_stops(cli: CliResult) -> None:
    assert_clean_failure(cli, "only 1 training image(s) in", "train/good", "at least 2")
    assert_one_error(cli)


@pytest.mark.cli_case("too_few_after_skip")
def test_too_few_images_after_skipping_stops(cli: CliResult) -> None:
    assert_clean_failure(cli, "only 1 usable training image(s)", "after skipping 2 unreadable",
                 "corrupt.png", "empty.png")
    assert_one_error(cli)


@pytest.mark.cli_case("tiny_images")
def test_images_too_small_for_backbone_stop(cli: CliResult) -> None:
    assert_clean_failure(cli, "images of size (16, 16) are too small", "image_size >= 32",
                 "pooling.kernel_size")
    assert_one_error(cli)


@pytest.mark.cli_case("unknown_backbone")
def test_unknown_backbone_suggests(cli: CliResult) -> None:
    assert_clean_failure(cli, "unknown backbone 'resnt18'", "Did you mean 'resnet18'")
    assert_one_error(cli)


@pytest.mark.cli_case("unknown_layer")
def test_unknown_layer_option_lists_options(cli: CliResult) -> None:
    assert_clean_failure(cli, "unknown layer 'blocks4'", "Options for layer: default")
    assert_one_error(cli)


@pytest.mark.cli_case("unknown_scorer")
def test_unknown_scorer_suggests(cli: CliResult) -> None:
    assert_clean_failure(cli, "unknown scorer 'fer'", "Did you mean 'fre'", "nll")
    assert_one_error(cli)


@pytest.mark.cli_case("unknown_key")
def test_unknown_config_key_suggests(cli: CliResult) -> None:
    assert_clean_failure(cli, "unknown config key 'pca_levle'", "Did you mean 'pca_level'")
    assert_one_error(cli)


@pytest.mark.cli_case("bad_job_values")
def test_bad_job_values_stop_naming_each(cli: CliResult) -> None:
    """Both bad values in one message, before any data is read (image_size=0 used to end
    in a torch traceback from the resize, batch_size=0 in a division by zero)."""
    assert_clean_failure(cli, "image_size must be a whole number >= 1", "got 0",
                 "batch_size must be a whole number >= 1", "got 'abc'")
    assert_one_error(cli)
    assert not (cli.run_dir / "metrics.json").exists()


@pytest.mark.cli_case("bad_layer_name")
def test_layer_missing_from_backbone_lists_layers(cli: CliResult) -> None:
    assert_clean_failure(cli, "Unknown layer(s) 'blocks.9'", "its layers are: blocks.0, blocks.1")
    assert_one_error(cli)


@pytest.mark.cli_case("bad_weights")
def test_weights_file_that_is_not_weights_stops(cli: CliResult) -> None:
    assert_clean_failure(cli, "notes.txt' is not a weights file",
                 "neither a zip-based torch checkpoint nor a legacy pickle")
    assert_one_error(cli)
    assert "Please file an issue" not in cli.output, cli  # torch's long message is cut


@pytest.mark.cli_case("predict_tampered")
def test_predict_with_tampered_model_stops(cli: CliResult) -> None:
    assert_clean_failure(cli, "model.safetensors does not match the checksum",
                 "modified or truncated")
    assert cli.output.count("dfmx-predict:") == 1, cli


# ----------------------------------------------------------- the feature cache
@pytest.mark.cli_case("cache_user_files")
def test_cache_never_deletes_files_it_did_not_write(cli: CliResult, corpus) -> None:
    """cache.dir pointing at the user's weights folder, with a bound smaller than their
    weights file: the run finishes, the cache keeps its own entries within the bound, and
    every file of the user's is still there, unchanged."""
    from safetensors.torch import load_file

    from dfmx.features.cache import FeatureCache

    assert cli.returncode == 0, cli
    folder = corpus["user_weights"]
    weights = load_file(str(folder / "finetuned.safetensors"))["w"]
    assert weights.shape == (750_000,) and float(weights[-1]) == 749_999.0, cli
    for name in (f"train-{'ab' * 20}.safetensors", ".backup.tmp", "locks/mine.lock"):
        assert (folder / name).is_file(), f"{name} was deleted\n{cli}"
    assert (folder / ".backup.tmp").read_text() == "the user's\n"
    cache = FeatureCache(folder, max_gb=0.001)
    assert cache.entries(), cli  # the cache did use the folder
    assert f"train-{'ab' * 20}.safetensors" not in {p.name for p in cache.entries()}
    assert cache.size_bytes() <= cache.max_bytes


@pytest.mark.cli_case("cache_max_gb_zero")
def test_cache_bound_of_zero_warns_once(cli: CliResult) -> None:
    assert cli.returncode == 0, cli
    assert cli.output.count("larger than cache.max_gb") == 1, cli


@pytest.mark.cli_case("cache_unusable")
def test_unusable_cache_folder_warns_once(cli: CliResult) -> None:
    """cache.dir through a file (the same OSError path as a read-only folder, which a root
    user, as in CI containers, could still write): the run finishes, one warning."""
    assert cli.returncode == 0, cli
    assert TRACEBACK not in cli.output, cli
    assert cli.output.count("feature cache") == 1, cli
    assert "running without it" in cli.output, cli


@pytest.mark.cli_case("cache_read_only")
def test_read_only_cache_folder_warns_once(cli: CliResult) -> None:
    """cache.dir in a place nobody may write, root included (sysfs refuses new entries
    with ``EPERM``, as a read-only mount refuses them to everyone): the run finishes, one
    warning naming the folder."""
    assert cli.returncode == 0, cli
    assert TRACEBACK not in cli.output, cli
    assert cli.output.count("feature cache") == 1, cli
    assert "/sys/kernel/dfmx-cache" in cli.output and "running without it" in cli.output, cli
