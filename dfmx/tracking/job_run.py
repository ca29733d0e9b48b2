"""One dfmx job as one MLflow run (a child of the sweep's parent run in a multirun)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfmx.errors import traceback_text
from dfmx.path_text import path_text, text_safe
from dfmx.tracking import sweep_state
from dfmx.tracking.job_context import JobContext
from dfmx.tracking.params import MAX_TAG_LENGTH, choice_tags, flatten_params, origin_tags
from dfmx.tracking.redact import redact_text
from dfmx.tracking.settings import TrackingSettings
from dfmx.tracking.store import hide_printed_credentials, open_store, retry_locked

log = logging.getLogger(__name__)


def safe(text: str) -> str:
    """``text`` fit to record: secrets hidden, file names that are not UTF-8 escaped."""
    return text_safe(redact_text(str(text)))

#: Run-folder files logged as artifacts (``RunResult.files`` keys), in this order.
ARTIFACT_FILES = ("metrics", "predictions", "roc", "histogram", "overlays", "model")


#: Tag holding :func:`config_hash`, matched by ``resume=true``.
CONFIG_HASH_TAG = "dfmx.config_hash"
#: Options that say how or where a job runs (or how a sweep ranks it), not what it computes.
_RUN_ONLY_KEYS = ("resume", "debug", "tracking", "cache", "num_workers", "select_metric")


def config_hash(config: Mapping[str, Any]) -> str:
    """A fingerprint of what a job computes: its resolved config without run-only options."""
    kept = {k: v for k, v in config.items() if k not in _RUN_ONLY_KEYS}
    text = json.dumps(flatten_params(kept), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FinishedRun:
    """A finished MLflow run that ``resume=true`` skips to."""

    run_id: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class LoggedResult:
    """What :meth:`JobRun.log_result` reads of a job's ``RunResult``."""

    metrics: dict[str, float]
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Any) -> LoggedResult:
        files = getattr(result, "files", {}) or {}
        return cls(dict(result.metrics), {k: Path(v) for k, v in files.items()})


def failure_record(exc: BaseException) -> tuple[str, str, bool]:
    """What a run records of an error: its one-line description, its traceback text and
    whether it was an interrupt (the arguments of :meth:`JobRun.record_failure`)."""
    return f"{type(exc).__name__}: {exc}", traceback_text(exc), isinstance(exc, KeyboardInterrupt)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class JobRun:
    """The MLflow run of one job: params and tags at start, then results or the error.

    Use :meth:`start`, then :meth:`log_result` or :meth:`log_failure`.
    """

    def __init__(self, settings: TrackingSettings, context: JobContext) -> None:
        self.settings = settings
        self.context = context
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.model_uri: str | None = None
        self._client: Any = None
        self._experiment_id = ""
        self._parent_info: sweep_state.ParentInfo | None = None

    def _parent(self) -> sweep_state.ParentInfo | None:
        if not (self.context.multirun and self.context.sweep_dir):
            return None
        parent = sweep_state.read_parent(self.context.sweep_dir)
        if parent is None or parent.run_id is None:
            log.warning("no parent MLflow run for this sweep (is the dfmx sweep callback "
                        "registered in hydra.callbacks?); logging a standalone run")
            return None
        return parent

    def _connect(self) -> str:
        """Open the store (once); returns the experiment id."""
        if self._client is not None:
            return self._experiment_id
        parent = self._parent_info = self._parent()
        if parent is not None and parent.tracking_uri and parent.experiment_id:
            from mlflow.tracking import MlflowClient

            self.tracking_uri = parent.tracking_uri
            hide_printed_credentials(parent.tracking_uri)  # a launcher's worker process
            self._client = MlflowClient(tracking_uri=parent.tracking_uri)
            self._experiment_id = parent.experiment_id
        else:
            self.tracking_uri = self.settings.resolved_uri(self.context.cwd)
            self._client, self._experiment_id = open_store(
                self.tracking_uri, self.settings.experiment_name
            )
        return self._experiment_id

    def find_finished(self, config: Mapping[str, Any]) -> FinishedRun | None:
        """The newest ``FINISHED`` run of this experiment with the same resolved config
        (:func:`config_hash`), or ``None``: what ``resume=true`` skips."""
        experiment_id = self._connect()
        runs = retry_locked(
            self._client.search_runs, [experiment_id],
            filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{config_hash(config)}' "
                          "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if not runs:
            return None
        return FinishedRun(runs[0].info.run_id, dict(runs[0].data.metrics))

    def start(self, config: Mapping[str, Any]) -> str:
        """Create the run with the flattened config as params; returns the run id."""
        from mlflow.entities import Param

        experiment_id = self._connect()
        parent = self._parent_info
        tags = {**choice_tags(self.context.choices), **origin_tags(),
                "dfmx.output_dir": path_text(self.context.output_dir),
                CONFIG_HASH_TAG: config_hash(config)}
        if self.context.job_num is not None:
            tags["dfmx.job_num"] = str(self.context.job_num)
        if parent is not None:
            tags["mlflow.parentRunId"] = parent.run_id
        tags = {k: safe(v) for k, v in tags.items()}
        run = retry_locked(self._client.create_run, experiment_id, tags=tags,
                           run_name=safe(self.context.run_name))
        self.run_id = run.info.run_id
        params = [Param(k, text_safe(str(v))) for k, v in flatten_params(config).items()]
        for chunk in _chunks(params, 100):
            retry_locked(self._client.log_batch, self.run_id, params=list(chunk))
        return self.run_id

    def log_result(self, result: Any, config_yaml: str) -> None:
        """Log a ``RunResult``'s (or :class:`LoggedResult`'s) metrics, the resolved config,
        the run folder's files and the pyfunc model; end the run ``FINISHED``.

        The metrics go last, in one batch that holds them for the run and for its logged
        model (MLflow links a run's metrics logged earlier to a model it logs by reading
        each one's history back: three dozen queries per job). When something before them
        cannot be logged, the metrics are logged for the run alone before the error goes on.
        """
        from mlflow.entities import Metric

        result = result if isinstance(result, LoggedResult) else LoggedResult.of(result)
        client, run_id = self._client, self.run_id
        now = int(time.time() * 1000)

        def log_metrics(model_id: str | None) -> None:
            metrics = [Metric(k, float(v), now, 0, model_id=model_id)
                       for k, v in result.metrics.items() if v is not None]
            for chunk in _chunks(metrics, 1000):
                retry_locked(client.log_batch, run_id, metrics=list(chunk))

        model_id = None
        try:
            retry_locked(client.log_text, run_id, safe(config_yaml), "config.yaml")
            files = result.files
            if self.settings.log_artifacts:
                for key in ARTIFACT_FILES:
                    path = files.get(key)
                    if path is None or not Path(path).exists():
                        continue
                    if Path(path).is_dir():
                        retry_locked(client.log_artifacts, run_id, str(path), Path(path).name)
                    else:
                        retry_locked(client.log_artifact, run_id, str(path))
            model_dir = files.get("model")
            if self.settings.log_model and model_dir is not None and Path(model_dir).is_dir():
                from dfmx.tracking.pyfunc import log_pyfunc_model

                self.model_uri, model_id = retry_locked(log_pyfunc_model, model_dir, run_id,
                                                        self.tracking_uri)
                retry_locked(client.set_tag, run_id, "dfmx.model_uri", self.model_uri)
        except Exception:
            with contextlib.suppress(Exception):
                log_metrics(None)
            raise
        log_metrics(model_id)
        retry_locked(client.set_terminated, run_id, "FINISHED")

    def log_failure(self, exc: BaseException) -> None:
        """Tag the run with the error, attach the traceback as ``error.txt``, end it
        ``FAILED`` (``KILLED`` for an interrupt). Never raises."""
        self.record_failure(*failure_record(exc))

    def record_failure(self, line: str, text: str, killed: bool) -> None:
        """:meth:`log_failure` of an error given as its one-line description, its
        traceback text and whether it was an interrupt. Never raises."""
        if self.run_id is None:
            return
        try:
            self._connect()
            client = self._client
            line = (safe(line).splitlines() or [""])[0][:MAX_TAG_LENGTH]
            try:
                retry_locked(client.set_tag, self.run_id, "error", line)
                retry_locked(client.log_text, self.run_id, safe(text), "error.txt")
            finally:  # ended even where its artifacts cannot be written
                retry_locked(client.set_terminated, self.run_id,
                             "KILLED" if killed else "FAILED")
        except Exception as log_exc:  # the original error matters more
            log.warning("could not record the failure in MLflow: %s", log_exc)
