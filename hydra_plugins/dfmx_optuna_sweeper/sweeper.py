"""The Optuna sweeper: asks Optuna for trials, runs them through Hydra's launcher, tells
Optuna each job's return value.

Trials run in batches of ``n_jobs`` through whatever launcher is configured (basic, joblib,
Ray, SLURM), so Hydra callbacks (dfmx's MLflow parent run and sweep table) see an ordinary
sweep. A batch's job numbers are its trial numbers. A job that raises, returns nothing
(``None``) or returns a value that is not a finite number is a failed trial; the study
goes on. With an RDB ``storage`` the study persists: running the same command again loads
it by ``study_name`` and runs the trials still missing to ``n_trials``.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.dfmx_optuna_sweeper.search_space import SearchSpace, SearchSpaceError

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("tpe", "random")
#: Written to the sweep folder when the study ends: best value, params, trial counts.
RESULT_FILE = "optuna_study.yaml"


class OptunaSweeperError(ValueError):
    """A sweeper option that cannot be used (shown as one line by Hydra)."""


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise OptunaSweeperError(
            "Optuna is not installed: pip install 'dfmx[optuna]'") from exc
    return optuna


def trial_value(result: JobReturn) -> tuple[float | None, str | None]:
    """``(value, None)`` for a job that returned a finite number, else ``(None, why)``."""
    try:
        value = result.return_value
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    if value is None:
        return None, "the job returned no value (it failed or has no selection metric)"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"the job returned {type(value).__name__}, not a number"
    if not math.isfinite(number):
        return None, f"the job returned {number}"
    return number, None


def absolute_storage(storage: str | None, cwd: str | None) -> str | None:
    """``storage`` with a relative SQLite path made absolute against ``cwd``."""
    prefix = "sqlite:///"
    if storage is None or not storage.startswith(prefix) or cwd is None:
        return storage
    path = storage[len(prefix):]
    if not path or path == ":memory:" or Path(path).is_absolute():
        return storage
    return prefix + str(Path(cwd).resolve() / path)


class OptunaSweeper(Sweeper):
    """A Hydra sweeper over Optuna's ask-and-tell interface (options:
    :class:`~hydra_plugins.dfmx_optuna_sweeper.config.OptunaSweeperConf`)."""

    def __init__(self, direction: str, n_trials: int, n_jobs: int, sampler: str,
                 seed: int | None, n_startup_trials: int, storage: str | None,
                 study_name: str, params: dict[str, str] | None = None) -> None:
        if direction not in DIRECTIONS:
            raise OptunaSweeperError(f"hydra.sweeper.direction={direction!r}: use "
                                     f"{' or '.join(DIRECTIONS)}")
        if sampler not in SAMPLERS:
            raise OptunaSweeperError(f"hydra.sweeper.sampler={sampler!r}: use "
                                     f"{' or '.join(SAMPLERS)}")
        for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if value < 1:
                raise OptunaSweeperError(f"hydra.sweeper.{name}={value}: must be at least 1")
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.storage = storage
        self.study_name = study_name
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _search_space(self, arguments: list[str]) -> SearchSpace:
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lines = [f"{key}={value}" for key, value in _flat(self.params).items()]
        space = SearchSpace.from_overrides(parser.parse_overrides([*lines, *arguments]))
        if not space.distributions:
            raise SearchSpaceError(
                "nothing to search: give at least one sweep override, e.g. "
                "'scorer=choice(fre,nll)' or 'pca_level=interval(0.8,0.99)'")
        return space

    def _study(self, optuna: Any) -> Any:
        assert self.config is not None
        if self.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(seed=self.seed,
                                                 n_startup_trials=self.n_startup_trials)
        else:
            sampler = optuna.samplers.RandomSampler(seed=self.seed)
        cwd = OmegaConf.select(self.config, "hydra.runtime.cwd", default=None)
        storage = absolute_storage(self.storage, cwd)
        try:
            study = optuna.create_study(storage=storage, study_name=self.study_name,
                                        direction=self.direction, sampler=sampler,
                                        load_if_exists=True)
        except Exception as exc:  # a bad URL, an unreachable database
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise OptunaSweeperError(
                f"cannot open Optuna study {self.study_name!r} in storage "
                f"{self.storage!r}: {reason}") from exc
        stored = study.direction.name.lower()
        if stored != self.direction:  # Optuna loads a stored study as it is, silently
            raise OptunaSweeperError(
                f"Optuna study {self.study_name!r} in storage {self.storage!r} is set to "
                f"{stored}, not hydra.sweeper.direction={self.direction}: give another "
                f"study_name or the same direction")
        return study

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        """Run the study to ``n_trials`` finished trials; the launched jobs' returns.

        A bad search space, a missing Optuna or an unusable storage ends the process with
        one line on stderr and exit status 1, before any job runs.
        """
        assert self.config is not None and self.launcher is not None
        try:
            optuna = _import_optuna()
            space = self._search_space(list(arguments))
            study = self._study(optuna)
        except (OptunaSweeperError, SearchSpaceError) as exc:
            sys.exit(f"hydra/sweeper=optuna: {exc}")
        return self._optimize(study, space)

    def _optimize(self, study: Any, space: SearchSpace) -> list[JobReturn]:
        assert self.config is not None
        from optuna.trial import TrialState

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=finished))
        if done:
            log.info("Optuna study %r: %d of %d trials finished before; running %d more",
                     self.study_name, done, self.n_trials, max(self.n_trials - done, 0))
        returns: list[JobReturn] = []
        while done < self.n_trials:
            trials = [study.ask(space.distributions)
                      for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [space.overrides(t.params) for t in trials]
            try:
                self.validate_batch_is_legal(batch)
            except Exception:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, overrides, result in zip(trials, batch, results, strict=True):
                trial.set_user_attr("overrides", " ".join(overrides))
                if result.working_dir is not None:
                    trial.set_user_attr("output_dir", str(result.working_dir))
                value, why = trial_value(result)
                if value is None:
                    log.warning("trial %d failed: %s", trial.number, why)
                    trial.set_user_attr("error", str(why)[:500])
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
            returns.extend(results)
            done += len(trials)
        self._write_result(study, sweep_dir)
        return returns

    def _write_result(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
                  for state in (TrialState.COMPLETE, TrialState.FAIL)}
        result: dict[str, Any] = {"study_name": self.study_name, "direction": self.direction,
                                  "n_trials": counts}
        if counts["complete"]:
            best = study.best_trial
            result.update(best_trial=best.number, best_value=best.value,
                          best_params=dict(best.params))
            log.info("Optuna study %r: best trial #%d, value %.4f: %s", self.study_name,
                     best.number, best.value,
                     " ".join(f"{k}={v}" for k, v in best.params.items()))
        OmegaConf.save(OmegaConf.create(result), sweep_dir / RESULT_FILE)


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": "x"}}`` → ``{"a.b": "x"}`` (dotted keys may arrive nested)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
