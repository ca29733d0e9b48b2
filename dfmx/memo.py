"""Small per-process memos for what the jobs of a sweep would otherwise redo.

A sweep run in one process repeats work whose inputs do not change between its jobs: the
test masks, their PRO regions, the backbone's timm skeleton. Each such place keeps a
:class:`Memo` of its last few results; the key must hold everything the result depends on
(file identity, content hash, ...), so a changed input is a miss, never a stale hit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

V = TypeVar("V")


class Memo(Generic[V]):
    """The last ``size`` values by key, least recently used dropped first; thread-safe.

    ``make`` runs outside the lock: two threads missing the same key at once both make
    the value, and the later one is kept. Callers that hand values out to be changed must
    copy them (the memo gives the same object to every hit).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value for ``key``, made with ``make()`` on a miss."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)
