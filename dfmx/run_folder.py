"""One process per run folder: a lock file that the operating system releases at exit.

Run and sweep folders are named by the time of day plus a random suffix
(``${dfmx_unique:}``, see :func:`dfmx.cli.config_store.register_resolvers`), so runs started
in the same second get folders of their own. A folder the user names (``hydra.run.dir=``,
``hydra.sweep.dir=``) is claimed before Hydra writes into it: a second run given the folder
of a run that is still going is refused with one line instead of overwriting its model,
metrics and ``.hydra`` files; a folder holding the results of an earlier run is used with a
warning (the new run's files replace those it writes, the others stay). The claim is an
exclusive ``flock`` on ``<folder>/.dfmx.lock``, held until the process ends (also when it
is killed), so a folder left by a finished or killed run can be used again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from pathlib import Path

from dfmx.errors import UserError
from dfmx.system_errors import OutputWriteError, write_error

#: The lock file in a claimed folder.
LOCK_FILE = ".dfmx.lock"

#: Files of a finished run whose presence says a folder holds earlier results.
EARLIER_RESULTS = ("metrics.json", "predictions.csv", "model", "sweep_table.csv")

_held: dict[Path, int] = {}


class RunFolderInUseError(UserError):
    """Another running dfmx process writes into the folder."""


def claim(folder: Path, option: str) -> Path:
    """Create ``folder`` (parents too) and hold its lock for the life of this process.

    Args:
        folder: the run or sweep folder, absolute.
        option: the option that names it (``hydra.run.dir``), for the messages.

    Raises:
        RunFolderInUseError: another live process holds the folder.
        OutputWriteError: the folder cannot be created or written (read-only file system,
            no permission, a path through a file, a full disk).
    """
    folder = Path(folder)
    if folder in _held:
        return folder
    way_out = f"set {option}=<a folder you can write to>, or run from such a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_error(exc, f"the run folder {folder}", way_out) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputWriteError(f"cannot lock the run folder {folder} ({exc.strerror}); "
                                   f"{way_out}") from exc
        raise RunFolderInUseError(
            f"{option}={folder} is in use by another dfmx run ({holder}); give each run "
            f"its own folder (leave {option} unset and every run gets a new one)") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise write_error(exc, f"the run folder {folder}", way_out) from exc
    _held[folder] = fd  # kept open: the lock lasts until this process ends
    earlier = [name for name in EARLIER_RESULTS if (folder / name).exists()]
    if earlier:
        print(f"dfmx: warning: {option}={folder} holds the results of an earlier run "
              f"({', '.join(earlier)}); this run replaces the files it writes, and the "
              "others stay beside them", file=sys.stderr, flush=True)
    return folder
