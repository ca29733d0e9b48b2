"""The result of a dfmx command run in a subprocess, shared by every test folder that runs
the CLI (cli, reliability, tracking, launchers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
