"""Safe use of a SQLite MLflow store by parallel jobs.

Two things go wrong when many processes open a fresh SQLite store at once: several run the
schema migrations together, and writers meet ``database is locked``. So the schema is
initialised (and the experiment created) under a file lock next to the database, and every
write is retried with exponential backoff while the database is locked.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from filelock import FileLock

from dfmx.errors import ConfigError, UserError
from dfmx.tracking.settings import sqlite_path

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOCKED_MESSAGES = ("database is locked", "database table is locked", "database schema is locked")


def is_locked_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is SQLite's lock contention."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if any(message in text for message in _LOCKED_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def retry_locked(
    fn: Callable[..., T],
    *args: Any,
    attempts: int = 10,
    base_delay: float = 0.1,
    max_delay: float = 5.0,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)``, retrying with jittered backoff on ``database is locked``.

    Other errors, and the last locked error after ``attempts`` tries, propagate.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts or not is_locked_error(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.debug("MLflow store locked (try %d/%d); retrying in %.2f s", attempt, attempts,
                      delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def store_lock(uri: str, timeout: float = 300.0) -> Iterator[None]:
    """Hold a file lock beside a SQLite database (no-op for other stores)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        yield


class TrackingUnavailableError(UserError, ConnectionError):
    """The tracking server cannot be reached."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For an ``http(s)://`` tracking URI, fail fast (before any expensive work) with one
    clear message when the server does not answer its ``/health`` endpoint.

    Local stores (``sqlite:``, files) are always reachable. Credentials in the URI are
    never echoed.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            if reply.status == 200:
                return
            problem = f"it answered HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        problem = f"it answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        problem = f"{getattr(exc, 'reason', exc)}"
    raise TrackingUnavailableError(
        f"the MLflow tracking server {shown} is not reachable ({problem}). Start it, point "
        "tracking.tracking_uri (or MLFLOW_TRACKING_URI) at a running one, or run with "
        "tracking=none"
    )


def open_store(uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """A client for ``uri`` and the id of ``experiment_name`` (created when missing).

    For SQLite the first connection creates or migrates the schema; doing it under
    :func:`store_lock` means only one process ever migrates. A deleted experiment of that
    name is restored.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    check_reachable(uri)
    with store_lock(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
        except UnsupportedModelRegistryStoreURIException as exc:  # no store for the scheme
            scheme = urllib.parse.urlsplit(uri).scheme
            raise ConfigError(
                f"MLflow has no tracking store for the URI scheme {scheme!r} (from "
                "tracking.tracking_uri or MLFLOW_TRACKING_URI); use sqlite:///PATH.db, a "
                "folder, http(s)://HOST:PORT for a server, or tracking=none"
            ) from exc
        experiment = retry_locked(client.get_experiment_by_name, experiment_name)
        if experiment is None:
            try:
                return client, retry_locked(client.create_experiment, experiment_name)
            except MlflowException as exc:  # created meanwhile by another process (server)
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise
                experiment = retry_locked(client.get_experiment_by_name, experiment_name)
                assert experiment is not None
        if experiment.lifecycle_stage == "deleted":
            retry_locked(client.restore_experiment, experiment.experiment_id)
        return client, experiment.experiment_id
