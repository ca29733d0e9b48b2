"""Running dfmx commands in subprocesses, for every test folder that tests the real CLI
(``cli``, ``reliability``, ``tracking``, ``launchers``).

A command is ``python -m <module> ARGS`` (``dfmx`` or ``dfmx.cli.predict``) with a
prepared environment (:func:`command_env`). :class:`CliRunner` runs one command
(:meth:`CliRunner.run`) or many, a few at a time (:meth:`CliRunner.start_many`, whose
futures a test can wait on one by one, and :meth:`CliRunner.run_many`); :func:`run_cli`
runs one command without a runner. Each finished command is a :class:`CliResult`, whose
``str()`` shows the command, exit status and output tails, for assertion messages.
:func:`warm_cache` gives a test a cache folder of its own that already holds what a first
command keeps, as users have after their first run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

#: The folder of this interpreter's scripts (``mlflow``, ``ray``, ``dfmx``).
BIN = Path(sys.executable).parent
#: Small, fast job settings for tests whose subject is not the job itself (2 CPU cores).
FAST = ["image_size=128", "batch_size=32", "precision=auto", "overlays=0", "num_workers=0"]
#: Variables of the test process that would change what a command does.
UNSET = ("DFMX_ALLOW_DOWNLOAD", "MLFLOW_TRACKING_URI", "PYTHONPATH")


@dataclass
class CliResult:
    """A finished command: its arguments, exit status and output."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0
    run_dir: Path | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:  # shown by failing asserts
        return (
            f"$ {' '.join(self.args)}\nexit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout (tail)\n{self.stdout[-4000:]}\n--- stderr (tail)\n{self.stderr[-4000:]}"
        )


@dataclass
class Job:
    """A command to run: ``python -m <module> <args>`` (or, given ``script``, this
    environment's console script of that name, e.g. ``dfmx-predict``), with extra
    environment variables, an optional working folder (else the runner's) and the run
    folder its test reads."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    module: str = "dfmx"
    run_dir: Path | None = None
    cwd: Path | None = None
    script: str | None = None


def command_env(cache_dir: Path | str, unset: Sequence[str] = (), **values: str) -> dict[str, str]:
    """The test process's environment for a command: ``DFMX_CACHE_DIR=cache_dir`` (where the
    demo data is generated once), this interpreter's scripts first on ``PATH``, no
    :data:`UNSET` variables nor those in ``unset``, then ``values`` set."""
    env = dict(os.environ)
    for key in (*UNSET, *unset):
        env.pop(key, None)
    env["DFMX_CACHE_DIR"] = str(cache_dir)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(values)
    return env


#: What a first command keeps in its cache folder that later commands of any test reuse:
#: the plugins' config descriptions, the default backbone's kept graphs, the demo data.
WARM_ENTRIES = ("plugin-configs-*.json", "backbones", "demo-v1")
#: Image sizes whose kept graphs the warm cache holds (``FAST``'s and the reliability
#: tests' 64 px).
WARM_IMAGE_SIZES = (64, 128)
_warm_template: Path | None = None
_warm_lock = threading.Lock()


def warm_cache(folder: Path) -> Path:
    """``folder`` as a dfmx cache folder of the test's own that already holds
    :data:`WARM_ENTRIES`, copied from a template that one real command fills once per test
    process (about 13 s on 2 cores); returns ``folder``. A folder that exists is left as it is.

    For tests whose subject is not a command's first-use work (describing the plugins'
    configs, building and tracing the backbone, generating the demo data): those pay it
    in every test otherwise (2.5-6 s a command). Tests of that work use an empty folder."""
    with _warm_lock:  # tests start commands from threads too
        if not folder.exists():
            shutil.copytree(_template(), folder)
    return folder


def _template() -> Path:
    """The warm cache's template, made at the first call (under ``_warm_lock``)."""
    global _warm_template
    if _warm_template is None:
        root = Path(tempfile.mkdtemp(prefix="dfmx-warm-cache-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        sizes = ",".join(str(size) for size in WARM_IMAGE_SIZES)
        result = run_cli(["-m", f"image_size={sizes}", "batch_size=32", "overlays=0",
                          "save_model=false", "tracking=none",
                          f"hydra.sweep.dir={root / 'sweep'}"],
                         root, command_env(root / "cache"), timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"the warm cache's command failed:\n{result}")
        template = root / "template"
        template.mkdir()
        for pattern in WARM_ENTRIES:
            for entry in (root / "cache").glob(pattern):
                if entry.is_dir():
                    shutil.copytree(entry, template / entry.name)
                else:
                    shutil.copy2(entry, template / entry.name)
        _warm_template = template
    return _warm_template


class RunningCli:
    """A started command; :meth:`wait` collects its result."""

    def __init__(self, argv: list[str], cwd: Path, env: Mapping[str, str],
                 run_dir: Path | None = None, merge_stderr: bool = False) -> None:
        self.argv = argv
        self.run_dir = run_dir
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        )

    def poll(self) -> int | None:
        """The exit status, or None while the command runs."""
        return self.process.poll()

    def wait(self, timeout: float) -> CliResult:
        """Wait up to ``timeout`` seconds; a command still running then is killed and its
        result says so (exit status -9 on POSIX)."""
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            stderr = f"{stderr or ''}\n[killed by the test after {timeout:.0f} s]"
        return CliResult(self.argv, self.process.returncode, stdout or "", stderr or "",
                         time.monotonic() - self.started, self.run_dir)


class CliRunner:
    """Runs dfmx commands with one environment and working folder.

    ``common`` arguments are added to every ``python -m dfmx`` command; ``parallel``
    commands run at once in :meth:`start_many`; ``timeout`` (seconds) bounds each.
    """

    def __init__(self, env: Mapping[str, str], cwd: Path, *, common: Sequence[str] = (),
                 parallel: int = 2, timeout: float = 300) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.common = list(common)
        self.parallel = parallel
        self.timeout = timeout
        self._pools: list[ThreadPoolExecutor] = []

    def argv(self, job: Job) -> list[str]:
        if job.script is not None:
            return [str(BIN / job.script), *job.args]
        extra = self.common if job.module == "dfmx" else []
        return [sys.executable, "-m", job.module, *job.args, *extra]

    def start(self, job: Job, merge_stderr: bool = False) -> RunningCli:
        """Start ``job`` and return at once."""
        return RunningCli(self.argv(job), job.cwd or self.cwd, {**self.env, **job.env},
                          job.run_dir, merge_stderr)

    def run_job(self, job: Job, timeout: float | None = None) -> CliResult:
        return self.start(job).wait(timeout or self.timeout)

    def run(self, *args: str, module: str = "dfmx", env: Mapping[str, str] | None = None,
            run_dir: Path | None = None, timeout: float | None = None) -> CliResult:
        """Run ``python -m <module> ARGS`` to its end."""
        return self.run_job(Job(list(args), dict(env or {}), module, run_dir), timeout)

    def start_many(self, jobs: Mapping[str, Job]) -> dict[str, Future[CliResult]]:
        """Start ``jobs`` in their order, :attr:`parallel` at a time; ``{name: future}``.
        :meth:`close` cancels those not started yet."""
        pool = ThreadPoolExecutor(max_workers=self.parallel)
        self._pools.append(pool)
        return {name: pool.submit(self.run_job, job) for name, job in jobs.items()}

    def run_many(self, jobs: Mapping[str, Job]) -> dict[str, CliResult]:
        """Run ``jobs`` (:meth:`start_many`) and wait for all; ``{name: result}``."""
        futures = self.start_many(jobs)
        return {name: future.result() for name, future in futures.items()}

    def close(self) -> None:
        """Wait for the running commands; drop those not started."""
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()


def run_cli(args: Sequence[str], cwd: Path, env: Mapping[str, str], *, module: str = "dfmx",
            timeout: float = 300) -> CliResult:
    """``python -m <module> ARGS`` in ``cwd`` with ``env``, run to its end."""
    return CliRunner(env, cwd, timeout=timeout).run(*args, module=module)


#: ``python -m dfmx ARGS`` looked into: it evaluates one expression when the command
#: begins importing torch and another at its end (after the atexit handlers the command
#: ends with ``os._exit``), and prints ``probe: [<first>] | <second>`` to stderr;
#: ``probe: [] | ...`` when torch was never imported. ``gc`` and ``sys`` are at hand.
_PROBE = """
import atexit, gc, importlib.abc, runpy, sys
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append({at_torch_import})
sys.meta_path.insert(0, Watch())
sys.argv = ["dfmx", *sys.argv[1:]]
atexit.register(lambda: print("probe:", seen, "|", {at_exit}, file=sys.stderr))
runpy.run_module("dfmx", run_name="__main__")
"""


def run_probed(args: Sequence[str], cwd: Path, env: Mapping[str, str], *,
               at_torch_import: str = "True", at_exit: str = "None",
               timeout: float = 600) -> CliResult:
    """``python -m dfmx ARGS`` in ``cwd`` through :data:`_PROBE` (a module written
    there, which ``python -m`` finds first), run to its end."""
    (Path(cwd) / "dfmx_probe.py").write_text(
        _PROBE.format(at_torch_import=at_torch_import, at_exit=at_exit))
    return run_cli(args, cwd, env, module="dfmx_probe", timeout=timeout)


def assert_clean_failure(result: CliResult, *needles: str) -> None:
    """A non-zero exit with no traceback, and every needle in the output."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.output, result
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in the output of\n{result}"
