"""The Optuna sweeper's pieces without a sweep: Hydra's override grammar as an Optuna
search space, a job's return value as a trial value, the storage path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.core.utils import JobReturn, JobStatus  # noqa: E402
from hydra.types import HydraContext  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

# Hydra's plugin scan re-executes these modules in place (``load_module``), which makes new
# error classes: the tests look them up on the modules when they run, not at import.
from hydra_plugins.dfmx_optuna_sweeper import search_space  # noqa: E402
from hydra_plugins.dfmx_optuna_sweeper import sweeper as sweeper_module  # noqa: E402
from hydra_plugins.dfmx_optuna_sweeper.search_space import SearchSpace  # noqa: E402
from hydra_plugins.dfmx_optuna_sweeper.sweeper import (  # noqa: E402
    OptunaSweeper,
    absolute_storage,
    trial_value,
)


def space(*lines: str) -> SearchSpace:
    return SearchSpace.from_overrides(OverridesParser.create().parse_overrides(list(lines)))


@pytest.mark.parametrize(("line", "expected"), [
    ("scorer=fre,nll", CategoricalDistribution(["fre", "nll"])),
    ("scorer=choice(fre,nll,fre)", CategoricalDistribution(["fre", "nll"])),
    ("pooling.kernel_size=choice(2,4)", CategoricalDistribution(["2", "4"])),
    ("layer.names=choice([blocks.3],[blocks.3,blocks.4])",
     CategoricalDistribution(["[blocks.3]", "[blocks.3,blocks.4]"])),
    ("pooling.kernel_size=range(1,9,2)", IntDistribution(1, 7, step=2)),
    ("pooling.kernel_size=range(2,8,2)", IntDistribution(2, 6, step=2)),
    ("x=range(0.5,1.0,0.25)", CategoricalDistribution(["0.5", "0.75"])),
    ("pca_level=interval(0.8,0.99)", FloatDistribution(0.8, 0.99)),
    ("lr=tag(log,interval(1e-4,1))", FloatDistribution(1e-4, 1.0, log=True)),
    ("k=tag(int,interval(1.5,8))", IntDistribution(2, 8)),
    ("k=tag(int,log,interval(1,64))", IntDistribution(1, 64, log=True)),
])
def test_each_sweep_form_has_its_distribution(line: str, expected: object) -> None:
    key = line.partition("=")[0]
    assert space(line).distributions == {key: expected}


def test_trial_overrides_are_the_fixed_ones_then_the_chosen_values() -> None:
    s = space("image_size=128", "layer.names=choice([blocks.3],[blocks.4])",
              "pca_level=interval(0.8,0.99)", "pooling.kernel_size=range(2,5,2)")
    assert s.fixed == ["image_size=128"]
    params = {"layer.names": "[blocks.4]", "pca_level": 0.9, "pooling.kernel_size": 4}
    assert s.overrides(params) == ["image_size=128", "layer.names=[blocks.4]",
                                   "pca_level=0.9", "pooling.kernel_size=4"]


def test_a_later_override_of_a_key_replaces_the_earlier_one() -> None:
    """``hydra.sweeper.params`` come first; the command line wins."""
    s = space("scorer=choice(fre,nll)", "pca_level=0.9", "scorer=fre",
              "pca_level=interval(0.5,0.9)")
    assert s.fixed == ["scorer=fre"]
    assert s.distributions == {"pca_level": FloatDistribution(0.5, 0.9)}


@pytest.mark.parametrize(("line", "message"), [
    ("pca_level=tag(foo,interval(0.8,0.9))", "unknown tag 'foo'"),
    ("pca_level=interval(0.9,0.8)", "is empty"),
    ("lr=tag(log,interval(0,1))", "not positive"),
    ("k=tag(int,interval(1.2,1.8))", "holds no integer"),
    ("scorer=tag(log,choice(fre,nll))", "tags apply to interval() only"),
    ("k=range(5,5)", "range(5,5) is empty"),
])
def test_unusable_sweeps_are_named(line: str, message: str) -> None:
    pattern = message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(search_space.SearchSpaceError, match=pattern):
        space(line)


def _job(status: JobStatus, value: object) -> JobReturn:
    job = JobReturn(overrides=["a=1"], status=status)
    job.return_value = value
    return job


@pytest.mark.parametrize(("job", "value", "why"), [
    (_job(JobStatus.COMPLETED, 0.75), 0.75, None),
    (_job(JobStatus.COMPLETED, 1), 1.0, None),
    (_job(JobStatus.COMPLETED, None), None, "returned no value"),
    (_job(JobStatus.COMPLETED, float("nan")), None, "returned nan"),
    (_job(JobStatus.COMPLETED, "high"), None, "returned str, not a number"),
    (_job(JobStatus.FAILED, RuntimeError("pooling too big\nmore")), None,
     "RuntimeError: pooling too big"),
])
def test_a_job_return_becomes_a_value_or_a_reason(job: JobReturn, value: float | None,
                                                  why: str | None) -> None:
    got, reason = trial_value(job)
    assert got == value
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason and "\n" not in reason


def test_a_relative_sqlite_storage_is_taken_against_the_start_folder(tmp_path: Path) -> None:
    assert absolute_storage("sqlite:///optuna.db", str(tmp_path)) == \
        f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    for unchanged in ("sqlite:////abs/optuna.db", "sqlite:///:memory:",
                      "postgresql://host/db", None):
        assert absolute_storage(unchanged, str(tmp_path)) == unchanged


def sweeper(**options: object) -> OptunaSweeper:
    defaults = dict(direction="maximize", n_trials=4, n_jobs=2, sampler="tpe", seed=0,
                    n_startup_trials=10, storage=None, study_name="dfmx", params=None)
    made = OptunaSweeper(**{**defaults, **options})
    made.hydra_context = HydraContext(config_loader=None, callbacks=None)
    return made


def test_params_from_a_config_join_the_command_line() -> None:
    """``hydra.sweeper.params`` may arrive nested (``pooling: {kernel_size: ...}``); a key
    also on the command line takes the command line's value."""
    made = sweeper(params={"pca_level": "interval(0.8,0.9)",
                           "pooling": {"kernel_size": "choice(2,4)"}})
    s = made._search_space(["pca_level=0.85", "scorer=choice(fre,nll)"])
    assert s.fixed == ["pca_level=0.85"]
    assert s.distributions == {"pooling.kernel_size": CategoricalDistribution(["2", "4"]),
                               "scorer": CategoricalDistribution(["fre", "nll"])}


@pytest.mark.parametrize(("options", "message"), [
    ({"direction": "up"}, "direction='up': use maximize or minimize"),
    ({"sampler": "cmaes"}, "sampler='cmaes': use tpe or random"),
    ({"n_trials": 0}, "n_trials=0: must be at least 1"),
    ({"n_jobs": 0}, "n_jobs=0: must be at least 1"),
])
def test_unusable_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(sweeper_module.OptunaSweeperError, match=re.escape(message)):
        sweeper(**options)


def test_nothing_to_search_is_an_error() -> None:
    with pytest.raises(search_space.SearchSpaceError, match="nothing to search"):
        sweeper()._search_space(["image_size=128"])


def test_a_stored_study_keeps_its_direction(tmp_path: Path) -> None:
    """Optuna loads a stored study as it is: asking it for the other direction is an
    error, not a study that silently maximises what was to be minimised."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = OmegaConf.create({"hydra": {"runtime": {"cwd": str(tmp_path)}}})
    made = {d: sweeper(storage=storage, direction=d) for d in ("maximize", "minimize")}
    for one in made.values():
        one.config = config
    assert made["maximize"]._study(optuna).direction.name == "MAXIMIZE"
    assert made["maximize"]._study(optuna).direction.name == "MAXIMIZE"  # loaded again
    with pytest.raises(sweeper_module.OptunaSweeperError, match=re.escape(
            "is set to maximize, not hydra.sweeper.direction=minimize")):
        made["minimize"]._study(optuna)
