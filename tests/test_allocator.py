"""The commands' allocator setting: freed memory is reused instead of faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

#: Allocates, frees and allocates again 64 MiB (numpy fills every page); prints the page
#: faults of the second allocation. With ``keep`` it first calls ``keep_freed_memory``.
_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from dfmx.allocator import keep_freed_memory
    print(keep_freed_memory())
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(16 << 20, dtype=np.float32)
del a
before = faults()
b = np.ones(16 << 20, dtype=np.float32)
print(faults() - before)
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc")


def _probe(mode: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    result = subprocess.run([sys.executable, "-c", _PROBE, mode], env={**environ, **env},
                            capture_output=True, text=True, timeout=300, check=True)
    return result.stdout.split()


@glibc
def test_freed_memory_is_reused_without_page_faults() -> None:
    (default_faults,) = _probe("default")
    done, kept_faults = _probe("keep")
    assert done == "True"
    assert int(default_faults) > 0  # a fresh mapping, faulted in again
    assert int(kept_faults) * 10 <= int(default_faults)  # the freed block, reused


@glibc
@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_user_s_own_allocator_settings_are_left_alone(env: dict[str, str]) -> None:
    done, _ = _probe("keep", **env)
    assert done == "False"
