"""Safe use of a SQLite MLflow store by parallel jobs.

Two things go wrong when many processes open a fresh SQLite store at once: several run the
schema migrations together, and writers meet ``database is locked``. So the experiment is
opened (and created) under a file lock next to the database, and every write is retried
with exponential backoff while the database is locked.

The lock holds off dfmx's processes only; any other program (``mlflow ui``, a script with
an ``MlflowClient``) that opens the path while its tables are being made migrates it too,
and both migrations fail and leave the file broken for good. So a new store is never made
in place: its schema is built in a file beside it and hard-linked to the name once
complete, and a program that opens the name sees no file or a whole store. A store that
another program is making in place when dfmx opens it is waited for until it is whole.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
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


def _create_sqlite_store(path: Path) -> None:
    """Make a new SQLite store at ``path`` whole: its schema is built in a file beside it,
    then linked to ``path``. A link refuses an existing name: a store another program
    started meanwhile is left to it (:func:`_await_store`). Called under
    :func:`store_lock`, so a partial file found beside ``path`` is a killed creator's."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.new"):
        stale.unlink(missing_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        store = SqlAlchemyStore(f"sqlite:///{partial}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()
        try:
            os.link(partial, path)
            return
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(partial, path)
                return
    finally:
        partial.unlink(missing_ok=True)
    _await_store(path)


def _schema_state(path: Path) -> tuple[str | None, bool]:
    """The schema version of the SQLite store ``path`` (``None`` before MLflow stamped one)
    and whether it holds an experiment: MLflow makes the default one last in a new store,
    so ``True`` once the store is whole, at any schema version."""
    import sqlite3

    version = experiment = None
    with contextlib.suppress(sqlite3.Error), contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)) as db:
        version = db.execute("SELECT version_num FROM alembic_version").fetchone()
        experiment = db.execute("SELECT 1 FROM experiments LIMIT 1").fetchone()
    return (version[0] if version else None), experiment is not None


def _await_store(path: Path, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Wait while another program makes the tables of the SQLite store ``path``: opening
    it before they are complete would migrate it a second time. A store that is not whole
    and does not change for ``quiet`` s is left to MLflow (an empty file, an interrupted
    creation: MLflow completes or refuses it)."""
    state = _schema_state(path)
    if state[1]:
        return
    log.info("the MLflow store %s is being created by another program; waiting for it", path)
    changed = time.monotonic()
    end = changed + timeout
    while not state[1] and time.monotonic() - changed < quiet and time.monotonic() < end:
        time.sleep(0.1)
        now = _schema_state(path)
        if now != state:
            state, changed = now, time.monotonic()


def _in_migration(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while MLflow created or migrated a store's tables."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in ("_initialize_tables", "_upgrade_db") and (
                "mlflow" in code.co_filename):
            return True
        tb = tb.tb_next
    return False


class TrackingUnavailableError(UserError, ConnectionError):
    """The tracking server cannot be reached."""


#: MLflow's retries of a failing HTTP request (7 by default, with backoff: minutes) and
#: its per-request timeout (120 s), bounded for dfmx's jobs unless the user set them.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_WAYS_OUT = ("Start it, point tracking.tracking_uri (or MLFLOW_TRACKING_URI) at a running "
             "one, or run with tracking=none")


def _get(url: str, auth: str | None, timeout: float) -> int:
    """HTTP status of ``GET url`` (errors' statuses too); raises ``OSError`` when there is
    no answer."""
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def hide_printed_credentials(uri: str) -> None:
    """When ``uri`` carries credentials (``http://user:token@host``), stop MLflow from
    printing run links built from it (``View run ... at: http://user:token@...``, written
    to stdout as each run ends, past the log redaction)."""
    if "@" in urllib.parse.urlsplit(uri).netloc:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def check_reachable(uri: str, timeout: float = 5.0, experiment_name: str = "dfmx") -> None:
    """For an ``http(s)://`` tracking URI, fail fast (before any expensive work) with one
    clear message when the server does not answer its ``/health`` endpoint, refuses the
    credentials, or fails its API (one ``experiments/get-by-name`` call, no retries).

    Credentials in the URI (``http://user:token@host``, as MLflow accepts them) are sent
    as HTTP basic authentication, as MLflow sends them, and never echoed (nor printed by
    MLflow: :func:`hide_printed_credentials`). Local stores
    (``sqlite:``) pass. Also sets :data:`HTTP_RETRY_DEFAULTS` (where unset), so a server
    that fails later costs seconds, not minutes.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    hide_printed_credentials(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    shown = f"{parts.scheme}://{netloc}"
    auth = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        token = f"{user}:{urllib.parse.unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(token).decode()
    query = urllib.parse.urlencode({"experiment_name": experiment_name})
    try:
        health = _get(f"{base}/health", auth, timeout)
        api = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", auth, timeout)
    except (urllib.error.URLError, OSError) as exc:
        problem = f"{getattr(exc, 'reason', exc)}"
        raise TrackingUnavailableError(
            f"the MLflow tracking server {shown} is not reachable ({problem}). {_WAYS_OUT}"
        ) from None
    if health in (401, 403) or api in (401, 403):
        given = "the credentials in the URI" if auth else "no credentials"
        raise TrackingUnavailableError(
            f"the MLflow tracking server {shown} refused {given} (HTTP "
            f"{api if api in (401, 403) else health}). Put valid ones in the URI "
            "(http://USER:TOKEN@HOST:PORT) or in MLFLOW_TRACKING_USERNAME / "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), or run with tracking=none"
        )
    if health != 200:
        raise TrackingUnavailableError(
            f"the MLflow tracking server {shown} is not reachable (it answered HTTP "
            f"{health}). {_WAYS_OUT}"
        )
    if api not in (200, 404):  # 404: no such experiment yet, created later
        raise TrackingUnavailableError(
            f"the MLflow tracking server {shown} answers /health but its API fails (HTTP "
            f"{api}); see the server's log, or run with tracking=none"
        )


_USE = ("use sqlite:///PATH.db for a local store, http(s)://HOST:PORT for a server, or "
        "tracking=none")


def _store_refused(uri: str, exc: BaseException) -> str:
    """One line for MLflow refusing to open the store ``uri`` (credentials hidden)."""
    from dfmx.tracking.redact import redact_text

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a folder (or a Windows drive)
        return (f"the tracking URI {redact_text(uri)} is a folder, and MLflow no longer "
                f"opens folder (file) stores by default; {_USE}")
    return (f"MLflow could not open the tracking store {redact_text(uri)}: "
            f"{redact_text(first)[:300]}; {_USE}")


def _driver_missing(uri: str, exc: ImportError) -> str:
    """One line for a database URI whose driver module is not installed."""
    from dfmx.tracking.redact import redact_text

    module = (exc.name or str(exc)).split(".")[0]
    return (f"MLflow could not open the tracking store {redact_text(uri)}: its database "
            f"driver {module!r} is not installed. Install it in this environment (pip "
            f"install {module}), or {_USE}")


def _store_failed(uri: str, exc: BaseException) -> str:
    """One line for any other failure to open the store ``uri`` (credentials hidden)."""
    from dfmx.tracking.redact import redact_text

    first = (str(exc).strip().splitlines() or [""])[0]
    if _in_migration(exc):
        return (f"MLflow could not create or upgrade the tables of the tracking store "
                f"{redact_text(uri)} ({type(exc).__name__}: {redact_text(first)[:300]}). "
                "Two programs doing that to a store at the same moment both fail and leave "
                "it broken: if no other program is using it, move it away (or try 'mlflow "
                f"db upgrade {redact_text(uri)}') and run again, or run with tracking=none")
    return (f"MLflow could not open the tracking store {redact_text(uri)} "
            f"({type(exc).__name__}: {redact_text(first)[:300]}). Check that the database "
            f"is running and the URI (host, port, user, password) is right, or run with "
            "tracking=none")


def open_store(uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """A client for ``uri`` and the id of ``experiment_name`` (created when missing).

    A new SQLite store is made whole beside its name and then linked to it, under
    :func:`store_lock`: no process, dfmx's or another program's, meets it half made. A
    deleted experiment of that name is restored.

    A store that cannot be opened is one line, with the URI's credentials hidden:
    :class:`~dfmx.errors.ConfigError` for a URI MLflow has no store for, a folder, or a
    database whose driver is not installed (``postgresql://`` without ``psycopg``);
    :class:`TrackingUnavailableError` when opening fails otherwise (the database refuses
    the connection or the login).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    check_reachable(uri, experiment_name=experiment_name)
    path = sqlite_path(uri)
    with store_lock(uri):
        try:
            if path is not None:
                if path.exists():
                    _await_store(path)
                else:
                    _create_sqlite_store(path)
            client = MlflowClient(tracking_uri=uri)
            experiment = retry_locked(client.get_experiment_by_name, experiment_name)
        except UnsupportedModelRegistryStoreURIException as exc:  # no store for the scheme
            scheme = urllib.parse.urlsplit(uri).scheme
            raise ConfigError(
                f"MLflow has no tracking store for the URI scheme {scheme!r} (from "
                f"tracking.tracking_uri or MLFLOW_TRACKING_URI); {_USE}"
            ) from exc
        except MlflowException as exc:  # e.g. a folder: MLflow's file store is refused
            raise ConfigError(_store_refused(uri, exc)) from None
        except ImportError as exc:  # the database driver of the URI is not installed
            raise ConfigError(_driver_missing(uri, exc)) from None
        except Exception as exc:  # the database refused the connection, the login, ...
            raise TrackingUnavailableError(_store_failed(uri, exc)) from exc
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
