"""MLflow tracking for dfmx jobs and Hydra sweeps.

* :mod:`dfmx.tracking.settings` — the ``tracking`` config group as a dataclass, and which
  tracking URI wins (explicit option > ``MLFLOW_TRACKING_URI`` > ``sqlite:///mlflow.db``).
* :mod:`dfmx.tracking.store` — SQLite safety: one schema initialisation under a file lock,
  retries with backoff on ``database is locked``.
* :mod:`dfmx.tracking.params` — the flattened config as MLflow params, tags.
* :mod:`dfmx.tracking.job_context` — what a job knows of Hydra (sweep dir, overrides).
* :mod:`dfmx.tracking.job_run` — one job as one MLflow run (child run in a sweep).
* :mod:`dfmx.tracking.sweep_state` — files in the sweep folder that tie jobs to the sweep.
* :mod:`dfmx.tracking.sweep_table` — the per-job table and the one rule that ranks jobs.
* :mod:`dfmx.tracking.sweep_plot` — the sweep picture (every job's metrics at a glance).
* :mod:`dfmx.tracking.callback` — the Hydra callback owning a sweep's parent run.
* :mod:`dfmx.tracking.pyfunc` — the fitted model as an MLflow pyfunc model.

Nothing here imports MLflow at module import time except :mod:`dfmx.tracking.pyfunc`, so
``tracking=none`` jobs do not pay for it.
"""
