"""The structured config of ``hydra/sweeper=optuna`` (ConfigStore group ``hydra/sweeper``)."""


from dataclasses import dataclass, field
from typing import Dict, Optional  # noqa: UP035 - OmegaConf reads these annotations

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    """Options of the Optuna sweeper (``hydra.sweeper.*``).

    Attributes:
        direction: ``maximize`` (the job's return value is a score, higher is better) or
            ``minimize``.
        n_trials: the number of finished trials the study should hold; a study loaded
            from ``storage`` with ``k`` finished trials runs ``n_trials - k`` more.
        n_jobs: trials launched at once, as one batch of the configured launcher.
        sampler: ``tpe`` (Optuna's TPESampler) or ``random``.
        seed: the sampler's seed (``null``: not seeded).
        n_startup_trials: TPE's random trials before it models the space.
        storage: an Optuna storage URL (``sqlite:///optuna.db``; relative SQLite paths are
            taken against the directory the app started in); ``null`` keeps the study in
            memory.
        study_name: the study's name in ``storage``; the same name resumes the study.
        params: the search space, ``{key: override value}`` in Hydra's override grammar
            (``choice(...)``, ``range(...)``, ``interval(...)``, ``tag(log, ...)``,
            ``tag(int, ...)``); plain values are passed to every trial unchanged.
    """

    _target_: str = "hydra_plugins.dfmx_optuna_sweeper.sweeper.OptunaSweeper"
    direction: str = "maximize"
    n_trials: int = 20
    n_jobs: int = 1
    sampler: str = "tpe"
    seed: Optional[int] = 0  # noqa: UP045
    n_startup_trials: int = 10
    storage: Optional[str] = None  # noqa: UP045
    study_name: str = "dfmx"
    params: Dict[str, str] = field(default_factory=dict)  # noqa: UP006


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf,
                             provider="dfmx")
