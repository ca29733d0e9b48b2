"""The garbage collector is off while a command imports, and on again for its job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_runner import command_env, run_probed


def test_a_command_imports_without_the_collector_and_runs_its_job_with_it(
        tmp_path: Path) -> None:
    # The job starts (the options are valid) and fails on its data, quickly.
    probe = run_probed(["tracking=none", "data=mvtec", f"data.root={tmp_path / 'missing'}",
                        "data.category=bottle"], tmp_path, command_env(tmp_path),
                       at_torch_import="gc.isenabled()",
                       at_exit="(gc.isenabled(), gc.get_freeze_count() > 0)")
    assert "MVTec AD root folder not found" in probe.output, probe
    # Off at the torch import; at the end on, the start-up objects frozen.
    assert "probe: [False] | (True, True)" in probe.stderr, probe


_UNITS = """
import gc
from dfmx import startup_gc
startup_gc.resume()  # no pause: nothing
assert gc.isenabled() and gc.get_freeze_count() == 0
startup_gc.pause()
assert not gc.isenabled()
startup_gc.resume()
assert gc.isenabled() and gc.get_freeze_count() > 0
gc.disable()  # the program's own choice
startup_gc.pause()
startup_gc.resume()
assert not gc.isenabled()
print("ok")
"""


def test_resume_undoes_only_a_pause() -> None:
    """In a process of its own: a freeze would keep this test process's objects."""
    result = subprocess.run([sys.executable, "-c", _UNITS], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
