"""A new SQLite MLflow store beside programs other than dfmx (``mlflow ui``, a script with
an ``MlflowClient``), which do not take dfmx's lock: two programs migrating one store at the
same moment both fail and leave it broken for good. Real stores, real processes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfmx.tracking.store import TrackingUnavailableError, _schema_state, open_store

#: Prints, once ``argv[2]`` exists, whether each look at the store ``argv[1]`` found an
#: experiment (MLflow makes the default one last in a new store).
WATCHER = """
import json, os, sqlite3, sys, time
path, stop = sys.argv[1:]
seen = []
while not os.path.exists(stop):
    if os.path.exists(path):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
                seen.append(bool(db.execute("SELECT 1 FROM experiments").fetchone()))
        except sqlite3.Error:
            seen.append(False)
    time.sleep(0.005)
print(json.dumps(seen))
"""

#: Another program opening (so creating) the store ``argv[1]`` with MLflow's own client.
OTHER_PROGRAM = """
import sys
from mlflow.tracking import MlflowClient
MlflowClient(sys.argv[1]).create_experiment("theirs")
"""


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_new_store_appears_whole(tmp_path: Path) -> None:
    path, stop = tmp_path / "mlflow.db", tmp_path / "stop"
    (tmp_path / ".mlflow.db.99999.new").write_bytes(b"half")  # a killed creator's file
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(path), str(stop)],
                               stdout=subprocess.PIPE, text=True)
    try:
        open_store(f"sqlite:///{path}", "dfmx")
        time.sleep(0.1)  # a few more looks at the finished store
    finally:
        stop.touch()
        seen = json.loads(watcher.communicate(timeout=30)[0])
    assert seen and all(seen), seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock", "stop"]


def test_a_store_another_program_is_making_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    other = subprocess.Popen([sys.executable, "-c", OTHER_PROGRAM, uri],
                             stderr=subprocess.PIPE, text=True)
    try:
        while not path.exists():
            assert other.poll() is None, other.communicate()[1]
            time.sleep(0.005)
        assert not _schema_state(path)[1], "the other program made the store too fast"
        client, experiment_id = open_store(uri, "dfmx")  # while its tables are being made
    finally:
        err = other.communicate(timeout=120)[1]
    assert other.returncode == 0, err
    assert {e.name for e in client.search_experiments()} == {"Default", "theirs", "dfmx"}
    assert client.get_experiment(experiment_id).name == "dfmx"
    assert not {t for t in _tables(path) if t.startswith("_alembic_tmp")}


def test_a_store_whose_tables_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    open_store(uri, "dfmx")
    with sqlite3.connect(path) as db:  # as two migrations at once leave a store
        db.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
        db.execute("DROP TABLE webhooks")
    other = tmp_path / "other.db"
    path.rename(other)  # a new name: MLflow's engines are per URI and this process has one
    uri = f"sqlite:///{other}"
    with pytest.raises(TrackingUnavailableError) as raised:
        open_store(uri, "dfmx")
    message = str(raised.value)
    assert message.startswith(f"MLflow could not create or upgrade the tables of the "
                              f"tracking store {uri} (CommandError: ")
    assert "f00dfeed" in message and "move it away" in message
    assert "\n" not in message
