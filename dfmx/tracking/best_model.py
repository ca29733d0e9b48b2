"""``python -m dfmx.tracking.best_model``: the pyfunc model URI of a sweep's best job.

    mlflow models serve -m "$(python -m dfmx.tracking.best_model)" --env-manager local

The sweep is the newest parent run (tag ``dfmx.sweep=parent``) of the experiment, or the
parent named by ``--parent``; its best job is the run tagged ``dfmx.best_run_id`` when the
sweep ended; the answer is that run's ``dfmx.model_uri``. The store is
``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.
"""

from __future__ import annotations

import argparse
import os
import sys

from dfmx.tracking.settings import sqlite_path

__all__ = ["NoBestModel", "best_model_uri", "main"]


class NoBestModel(LookupError):
    """No finished sweep with a best job and a logged model; the message says which."""


def best_model_uri(tracking_uri: str, experiment: str = "dfmx",
                   parent_run_id: str | None = None) -> str:
    """The ``models:/...`` URI of the best job of a sweep (see the module docstring).

    Raises:
        NoBestModel: no such experiment or sweep, or its best job logged no model.
    """
    from mlflow.tracking import MlflowClient

    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():  # opening it would create it
        raise NoBestModel(f"no MLflow store at {database}")
    client = MlflowClient(tracking_uri)
    if parent_run_id is None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise NoBestModel(f"no experiment {experiment!r} in {tracking_uri}")
        parents = client.search_runs([found.experiment_id], "tags.`dfmx.sweep` = 'parent'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise NoBestModel(f"no sweep in experiment {experiment!r} of {tracking_uri}")
        parent = parents[0]
    else:
        from mlflow.exceptions import MlflowException

        try:
            parent = client.get_run(parent_run_id)
        except MlflowException:
            raise NoBestModel(f"no run {parent_run_id!r} in {tracking_uri}") from None
    best_id = parent.data.tags.get("dfmx.best_run_id")
    if not best_id:
        raise NoBestModel(f"sweep {parent.info.run_id} has no best job (not finished, or "
                          "every job failed)")
    uri = client.get_run(best_id).data.tags.get("dfmx.model_uri")
    if not uri:
        raise NoBestModel(f"the best job's run {best_id} logged no model "
                          "(tracking.log_model=false)")
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dfmx.tracking.best_model",
        description="Print the pyfunc model URI of the best job of the newest dfmx sweep.")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI or "
                             "sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="dfmx", help="experiment name (dfmx)")
    parser.add_argument("--parent", default=None, help="a sweep's parent run id")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    try:
        print(best_model_uri(uri, args.experiment, args.parent))
    except NoBestModel as exc:
        print(f"dfmx: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
