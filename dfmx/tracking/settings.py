"""The ``tracking`` config group as a dataclass, and the choice of tracking URI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: MLflow's own environment variable; it overrides :data:`DEFAULT_TRACKING_URI`.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: The embedded store: a SQLite file in the working directory.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_SQLITE_PREFIX = "sqlite:///"


@dataclass(frozen=True)
class TrackingSettings:
    """What to record for a job (``conf/tracking/*.yaml``).

    Attributes:
        enabled: ``False`` for ``tracking=none``.
        tracking_uri: explicit MLflow tracking URI; ``None`` uses ``MLFLOW_TRACKING_URI``
            or, without it, ``sqlite:///mlflow.db`` in the working directory.
        experiment_name: MLflow experiment the runs go to (created when missing).
        log_model: log the fitted model as an MLflow pyfunc model.
        log_artifacts: log the run folder's files (metrics, predictions, plots, model).
    """

    enabled: bool = True
    tracking_uri: str | None = None
    experiment_name: str = "dfmx"
    log_model: bool = True
    log_artifacts: bool = True

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> TrackingSettings:
        """Settings from the resolved ``tracking`` node (``None`` or ``name: none``: off)."""
        if not node or str(node.get("name", "mlflow")) == "none":
            return cls(enabled=False)
        return cls(
            enabled=True,
            tracking_uri=node.get("tracking_uri") or None,
            experiment_name=str(node.get("experiment_name") or "dfmx"),
            log_model=bool(node.get("log_model", True)),
            log_artifacts=bool(node.get("log_artifacts", True)),
        )

    def resolved_uri(self, cwd: str | Path | None = None) -> str:
        """The tracking URI to use (see :func:`resolve_tracking_uri`)."""
        return resolve_tracking_uri(self.tracking_uri, cwd=cwd)


def resolve_tracking_uri(
    explicit: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> str:
    """The tracking URI: ``explicit`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///mlflow.db``.

    A relative SQLite path is made absolute against ``cwd`` (default: the working
    directory), so jobs running elsewhere (Ray workers, SLURM nodes) use the same file.
    """
    environ = os.environ if environ is None else environ
    uri = explicit or environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI
    return absolute_sqlite_uri(uri, cwd)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other stores / in-memory)."""
    if not uri.startswith(_SQLITE_PREFIX):
        return None
    rest = uri[len(_SQLITE_PREFIX):].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def absolute_sqlite_uri(uri: str, cwd: str | Path | None = None) -> str:
    """``uri`` with a relative SQLite database path made absolute against ``cwd``."""
    path = sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    absolute = (Path(cwd) if cwd is not None else Path.cwd()).resolve() / path
    return f"sqlite:///{absolute}" + (f"?{query}" if query else "")
