"""Fixtures for the command-line tests: the real CLI, run in subprocesses.

Each ``python -m dfmx`` process costs several seconds of start-up (torch, timm, Hydra), so
the app commands of all CLI test modules are launched once per session, a few at a time
(:func:`cli_runs`), and each test checks the result of "its" command. Everything runs
offline: the Hugging Face / torch hub caches point at empty folders and downloads are off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cli_runner import CliResult, CliRunner, Job, command_env
from demo_trees import make_folder_tree, make_mvtec_tree

from dfmx.data.demo import demo_root

#: Commands started at once; start-up is mostly single-threaded import work.
PARALLEL = 3
TIMEOUT_S = 400
RANDOM_RESNET = ["backbone=resnet18", "backbone.pretrained=false"]


@pytest.fixture(scope="session")
def cli(
    dfmx_cache_dir: Path, plugin_sites: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CliRunner]:
    """The command runner (offline, ``tracking=none``); ``cli.help`` is the output of
    ``python -m dfmx --help`` with the test plugins of ``plugin_sites["good"]`` installed
    (``maxerr`` and a broken one)."""
    home = tmp_path_factory.mktemp("cli-home")
    env = command_env(
        dfmx_cache_dir,
        unset=("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HYDRA_FULL_ERROR"),
        HF_HOME=str(home / "hf"),             # empty: no cached timm weights
        TORCH_HOME=str(home / "torch"),
        HF_HUB_OFFLINE="1",
        MLFLOW_TRACKING_URI=(home / "mlruns").as_uri(),
    )
    runner = CliRunner(env, home, parallel=PARALLEL, timeout=TIMEOUT_S)
    runner.help = runner.run("--help", env={"PYTHONPATH": str(plugin_sites["good"])})
    runner.common = ["tracking=none"]  # MLflow has its own tests (tests/tracking)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def demo_dir(dfmx_cache_dir: Path) -> Path:
    """``<root>/demo``: the generated demo category (MVTec AD layout)."""
    return demo_root(dfmx_cache_dir) / "demo"


# ----------------------------------------------------------------- plugin packages

_MAXERR = '''
"""A test scorer: the largest absolute PCA reconstruction error, times ``scale``."""

from dataclasses import dataclass

from dfmx.engine.scorer import ScoreOutput, Scorer


class MaxErrScorer(Scorer):
    @dataclass
    class Config:
        scale: float = 1.0

    produces_maps = False

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def score(self, features, pca):
        flat = features.flatten(1)
        err = (flat - pca.inverse_transform(pca.transform(flat))).abs()
        return ScoreOutput(scores=err.amax(dim=1) * self.scale, maps=None)
'''

_BROKEN = 'raise ImportError("dfmx_broken needs the module no_such_dependency")\n'
_FRE_CLONE = "from dfmx.scorers.fre import FREScorer as FREClone  # noqa: F401\n"


def write_plugin_package(root: Path, dist: str, module: str, entry: str, source: str) -> Path:
    """A one-module package registering ``entry`` (``name = "mod:attr"``) in dfmx.scorers."""
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / module / "__init__.py").write_text(textwrap.dedent(source))
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1.0"

        [project.entry-points."dfmx.scorers"]
        {entry}

        [tool.setuptools]
        packages = ["{module}"]
        """))
    return pkg


def pip_install_target(packages: Sequence[Path], target: Path) -> None:
    """``pip install --target`` (real pip, real dist-info), offline and without deps."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
         *map(str, packages)],
        check=True, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="session")
def plugin_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``good``: the ``maxerr`` scorer and a ``brokenscorer`` whose import fails;
    ``dup``: a second package registering ``fre``. Each a ``--target`` install folder."""
    root = tmp_path_factory.mktemp("plugins")
    maxerr = write_plugin_package(root, "dfmx-maxerr", "dfmx_maxerr",
                                  'maxerr = "dfmx_maxerr:MaxErrScorer"', _MAXERR)
    broken = write_plugin_package(root, "dfmx-broken", "dfmx_broken",
                                  'brokenscorer = "dfmx_broken:BrokenScorer"', _BROKEN)
    clone = write_plugin_package(root, "dfmx-fre-clone", "dfmx_fre_clone",
                                 'fre = "dfmx_fre_clone:FREClone"', _FRE_CLONE)
    sites = {"good": root / "site-good", "dup": root / "site-dup"}
    pip_install_target([maxerr, broken], sites["good"])
    pip_install_target([clone], sites["dup"])
    return sites


# ----------------------------------------------------------------- the session's app runs


@pytest.fixture(scope="session")
def cli_runs(
    cli: CliRunner, demo_dir: Path, plugin_sites: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, CliResult]:
    """Every ``python -m dfmx`` command of the CLI tests, run once (a few at a time)."""
    out = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("data")
    mvtec = make_mvtec_tree(demo_dir, data / "mvtec")
    folders = make_folder_tree(demo_dir, data / "folder")
    good, dup = (str(plugin_sites[k]) for k in ("good", "dup"))

    def run(name: str, *args: str, env: dict[str, str] | None = None,
            multirun: bool = False) -> Job:
        where = out / name
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        return Job([*(["-m"] if multirun else []), *args, f"{key}={where}"], env or {},
                   run_dir=where)

    tiny = ["batch_size=32", "overlays=0", "num_workers=0"]   # on the tiny data trees
    on_mvtec = ["data=mvtec", f"data.root={mvtec}", "data.category=tiny"]
    on_folder = ["data=folder", f"data.normal_dir={folders['normal']}",
                 f"data.abnormal_dir={folders['abnormal']}", f"data.mask_dir={folders['masks']}"]
    jobs = {
        # the slowest first, so the short ones fill in around them
        "default": run("default", "image_size=128", "batch_size=32", "overlays=2"),
        # four jobs on the plain-folder data: scorers x pooling sizes
        "sweep": run("sweep", "scorer=fre,nll", "pooling.kernel_size=2,4", *on_folder,
                     *RANDOM_RESNET, "image_size=128", *tiny, multirun=True),
        # two jobs on the MVTec-layout data: max / no pooling of two layers
        "layers": run("layers", *on_mvtec, *RANDOM_RESNET, "layer.names=[layer2,layer3]",
                      "pooling=max,none", "image_size=128", *tiny, multirun=True),
        "wide_nll": run("wide_nll", "backbone=wide_resnet50", "backbone.pretrained=false",
                        "scorer=nll", *on_mvtec, "image_size=64", *tiny),
        "maxerr": run("maxerr", "scorer=maxerr", "scorer.scale=2.5", *on_mvtec,
                      *RANDOM_RESNET, "image_size=64", *tiny,
                      env={"PYTHONPATH": os.pathsep.join([good, dup])}),
        "wide_no_weights": run("wide_no_weights", "backbone=wide_resnet50", *on_mvtec,
                               "image_size=64", *tiny),
        "mvtec_no_root": run("mvtec_no_root", "data=mvtec", *tiny),
        "cfg_knn": Job(["--cfg", "job", "scorer=knn", "scorer.n_neighbors=3"]),
        "bogus_scorer": run("bogus_scorer", "scorer=bogus"),
        "bad_key": run("bad_key", "pca_levle=0.9"),
        "broken_scorer": run("broken_scorer", "scorer=brokenscorer", env={"PYTHONPATH": good}),
        "duplicate_fre": run("duplicate_fre", "scorer=fre", env={"PYTHONPATH": dup}),
    }
    return cli.run_many(jobs)


# ----------------------------------------------------------------- checking helpers


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())
