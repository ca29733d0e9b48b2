"""The garbage collector is off while a command imports, and on again for its job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_runner import command_env, run_cli

#: ``python -m dfmx ARGS`` that says whether the collector was on when the command began
#: importing torch, and at its end whether it was on and had frozen the start-up objects.
_PROBE = """
import atexit, gc, importlib.abc, runpy, sys
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(gc.isenabled())
sys.meta_path.insert(0, Watch())
sys.argv = ["dfmx", *sys.argv[1:]]
atexit.register(lambda: print("collector at the torch import:", seen, "at the end:",
                              gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr))
runpy.run_module("dfmx", run_name="__main__")
"""


def test_a_command_imports_without_the_collector_and_runs_its_job_with_it(
        tmp_path: Path) -> None:
    (tmp_path / "gc_probe.py").write_text(_PROBE)
    # The job starts (the options are valid) and fails on its data, quickly.
    probe = run_cli(["tracking=none", "data=mvtec", f"data.root={tmp_path / 'missing'}",
                     "data.category=bottle"], tmp_path, command_env(tmp_path),
                    module="gc_probe", timeout=600)
    assert "MVTec AD root folder not found" in probe.output, probe
    assert "collector at the torch import: [False] at the end: True True" in probe.stderr, \
        probe


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
