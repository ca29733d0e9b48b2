"""The bad-input corpus, generated once per session, and the real CLI run on it.

Every ``python -m dfmx`` costs seconds of start-up (torch, timm, Hydra), so the
commands of the selected tests (``@pytest.mark.cli_case("name")``) are all started when
the first of them is needed, two at a time, and each test checks the result of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from cli_runner import CliResult, CliRunner, Job, command_env, warm_cache

from . import corpus as c

PARALLEL = 2
TIMEOUT_S = 300
#: Small and fast settings every command uses.
FAST = ["image_size=64", "batch_size=32", "overlays=0", "save_model=false", "precision=auto",
        "tracking=none"]

CASE_KEY = pytest.StashKey[set]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cli_case(name): the test reads this CLI case's result")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[CASE_KEY] = {
        m.args[0] for item in items for m in item.iter_markers("cli_case")
    }


# ------------------------------------------------------------------------ the data
def build_corpus(root: Path) -> dict[str, Path]:
    """Every bad data set, under ``root``; returns named paths the cases use."""
    paths: dict[str, Path] = {}

    # A data set with every recoverable problem at once: the run must skip, warn and finish.
    bundle = c.mvtec_tree(root / "bundle", defects={"crack": 3, "scratch": 2})
    cat = bundle / "widget"
    train, gt = cat / "train" / "good", cat / "ground_truth"
    c.write_corrupt_png(train / "corrupt.png")
    c.write_empty(train / "empty.png")
    c.write_text(train / "text.png")
    c.write_text(train / "notes.txt")
    (train / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    (train / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(40))
    c.write_mode(train / "cmyk.jpg", 7, "CMYK")
    c.write_mode(train / "palette.png", 8, "P")
    c.write_large_png(train / "large.png", side=8000)
    c.write_bomb_png(cat / "test" / "good" / "bomb.png")
    for f in (gt / "scratch").glob("*.png"):  # masks missing for one anomalous class
        f.unlink()
    (gt / "scratch").rmdir()
    c.write_mask(gt / "crack" / "000_mask.png", size=128)  # twice the image's size
    c.write_mask(gt / "crack" / "orphan_mask.png")  # no test/crack/orphan.png
    c.write_png(cat / "test" / "crack" / "badmask.png", 77)
    c.write_corrupt_png(gt / "crack" / "badmask_mask.png")
    paths["bundle"] = bundle

    c.folder_tree(root / "oneclass", n_normal=10)
    paths["oneclass"] = root / "oneclass" / "normal"

    empty = c.mvtec_tree(root / "empty", n_train=0)
    empty_train = empty / "widget" / "train" / "good"
    empty_train.mkdir(parents=True)
    c.write_text(empty_train / "notes.txt")
    (empty_train / "Thumbs.db").write_bytes(bytes(64))
    (empty_train / ".DS_Store").write_bytes(bytes(64))
    paths["empty"] = empty

    paths["one"] = c.mvtec_tree(root / "one", n_train=1)

    few = c.mvtec_tree(root / "few", n_train=1)
    c.write_corrupt_png(few / "widget" / "train" / "good" / "corrupt.png")
    c.write_empty(few / "widget" / "train" / "good" / "empty.png")
    paths["few"] = few

    paths["tiny"] = c.mvtec_tree(root / "tiny", size=8)
    paths["ok"] = c.mvtec_tree(root / "ok")
    paths["notes"] = c.write_text(root / "notes.txt", "backbone weights? no.\n")
    paths["user_weights"] = _user_weights(root / "user_weights")
    return paths


def _user_weights(folder: Path) -> Path:
    """A folder of the user's own files that a cache pointed at it must leave alone: a
    weights file larger than the cache bound, a safetensors file named like a cache entry
    (but not one), a stale-looking ``.tmp`` file and a ``locks`` folder of its own."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.arange(750_000, dtype=torch.float32)},
              str(folder / "finetuned.safetensors"))
    save_file({"w": torch.zeros(4)}, str(folder / f"train-{'ab' * 20}.safetensors"),
              metadata={"format": "3", "key": "{}", "split": "train", "checksum": "x"})
    old = time.time() - 7200
    for name in (".backup.tmp", "locks/mine.lock"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text("the user's\n")
        os.utime(folder / name, (old, old))
    return folder


def _mvtec(root: Path) -> list[str]:
    return ["data=mvtec", f"data.root={root}", "data.category=widget"]


#: name -> (module, arguments) given the corpus paths; run dirs are added per case.
CASES: dict[str, Callable[[dict[str, Path]], tuple[str, list[str]]]] = {
    "skip_bundle": lambda p: ("dfmx", _mvtec(p["bundle"])),
    "one_class": lambda p: ("dfmx", ["data=folder", f"data.normal_dir={p['oneclass']}"]),
    "empty_train": lambda p: ("dfmx", _mvtec(p["empty"])),
    "missing_train": lambda p: ("dfmx", ["data=folder", f"data.normal_dir={p['oneclass']}x"]),
    "one_train": lambda p: ("dfmx", _mvtec(p["one"])),
    "too_few_after_skip": lambda p: ("dfmx", _mvtec(p["few"])),
    # One layer: the ensemble default pools its finer layer onto the coarse grid, so 16 px
    # still gives it a 1x1 grid; a stride-16 layer with kernel 2 needs 32 px.
    "tiny_images": lambda p: ("dfmx", [*_mvtec(p["tiny"]), "image_size=16",
                                       "layer.names=[blocks.4]", "combine=concat"]),
    "unknown_backbone": lambda p: ("dfmx", ["backbone=resnt18"]),
    "unknown_layer": lambda p: ("dfmx", ["layer=blocks4"]),
    "unknown_scorer": lambda p: ("dfmx", ["scorer=fer"]),
    "unknown_key": lambda p: ("dfmx", ["pca_levle=0.9"]),
    "bad_job_values": lambda p: ("dfmx", [*_mvtec(p["ok"]), "image_size=0", "batch_size=abc"]),
    "bad_layer_name": lambda p: ("dfmx", [*_mvtec(p["ok"]), "layer.names=[blocks.9]"]),
    "bad_weights": lambda p: ("dfmx", [*_mvtec(p["ok"]), f"backbone.weights={p['notes']}"]),
    "cache_user_files": lambda p: ("dfmx", [*_mvtec(p["ok"]), f"cache.dir={p['user_weights']}",
                                            "cache.max_gb=0.001"]),
    "cache_max_gb_zero": lambda p: ("dfmx", [*_mvtec(p["ok"]), "cache.max_gb=0"]),
    "cache_unusable": lambda p: ("dfmx", [*_mvtec(p["ok"]), f"cache.dir={p['notes']}/cache"]),
    # sysfs refuses new entries even to root (as a read-only mount does to everyone).
    "cache_read_only": lambda p: ("dfmx", [*_mvtec(p["ok"]), "cache.dir=/sys/kernel/dfmx-cache"]),
    "predict_tampered": lambda p: (
        "dfmx.cli.predict",
        [str(p["tampered_model"]), str(p["ok"] / "widget" / "test"), "--overlays", "0",
         "--output", str(p["root"] / "preds")],
    ),
}


def _tampered_model(root: Path) -> Path:
    """A model saved by the API, then one byte of its tensors flipped."""
    import torch

    from dfmx import DFMModel
    from dfmx.experiment.saved_model import TENSORS, save_model

    model = DFMModel("efficientnet_lite0", "blocks.4", pooling_kernel_size=2)
    feats, shape = model.get_features(torch.rand(4, 3, 64, 64))
    model.fit(feats, shape)
    directory = save_model(model, root / "tampered_model", image_size=64, threshold=1.0)
    tensors = directory / TENSORS
    data = bytearray(tensors.read_bytes())
    data[-5] ^= 0xFF
    tensors.write_bytes(bytes(data))
    return directory


def _job(name: str, module: str, args: list[str], root: Path) -> Job:
    """The command of case ``name``, run in a working folder of its own."""
    run_dir = root / "runs" / name
    if module == "dfmx":
        args = [*FAST, *args, f"hydra.run.dir={run_dir}"]
    cwd = root / "cwd" / name
    cwd.mkdir(parents=True, exist_ok=True)
    return Job(args, module=module, run_dir=run_dir, cwd=cwd)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability")
    paths = build_corpus(root)
    paths["root"] = root
    return paths


@pytest.fixture(scope="session")
def cli_runs(
    request: pytest.FixtureRequest, corpus: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[CliResult]]]:
    """Futures of the CLI results of every selected case, started together."""
    wanted = request.config.stash.get(CASE_KEY, set())
    if "predict_tampered" in wanted:
        corpus["tampered_model"] = _tampered_model(corpus["root"])
    env = command_env(warm_cache(tmp_path_factory.mktemp("dfmx-cache") / "cache"),
                      OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0",
                      PYTHONWARNINGS="ignore::DeprecationWarning")
    runner = CliRunner(env, corpus["root"], parallel=PARALLEL, timeout=TIMEOUT_S)
    # Slow successful runs first, so the pool stays busy to the end.
    order = sorted(wanted, key=lambda n: (n not in ("skip_bundle", "one_class"), n))
    yield runner.start_many({name: _job(name, *CASES[name](corpus), corpus["root"])
                             for name in order})
    runner.close()


@pytest.fixture
def cli(request: pytest.FixtureRequest, cli_runs: dict[str, Future[CliResult]]) -> CliResult:
    """The result of the CLI case named by the test's ``cli_case`` marker."""
    marker = request.node.get_closest_marker("cli_case")
    assert marker is not None, "a test using `cli` needs @pytest.mark.cli_case(name)"
    return cli_runs[marker.args[0]].result(timeout=TIMEOUT_S * 2)
