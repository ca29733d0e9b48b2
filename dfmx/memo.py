"""Small per-process memos for what the jobs of a sweep would otherwise redo.

A sweep run in one process repeats work whose inputs do not change between its jobs: the
test masks, their PRO regions, the backbone's timm skeleton, the images the overlays show,
the PCA fits (:mod:`dfmx.engine.fit_sharing`, by bytes). Each such place keeps a
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
    """The last values by key, up to ``size`` in all, least recently used dropped first;
    thread-safe.

    Each value counts 1 towards ``size``, or ``weigh(value)`` (bytes, say) where given; a
    value heavier than ``size`` alone is not kept. ``make`` runs outside the lock: two
    threads missing the same key at once both make the value, and the later one is kept.
    Callers that hand values out to be changed must copy them (the memo gives the same
    object to every hit).
    """

    def __init__(self, size: int, weigh: Callable[[V], int] | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._weigh = weigh
        self._values: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value for ``key``, made with ``make()`` (and kept) on a miss."""
        found = self.peek(key)
        if found is not None:
            return found
        value = make()
        self.put(key, value)
        return value

    def peek(self, key: Hashable) -> V | None:
        """The value kept for ``key`` (now the most recently used), or ``None`` (values
        are never ``None``)."""
        with self._lock:
            if key not in self._values:
                return None
            self._values.move_to_end(key)
            return self._values[key][0]

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value`` for ``key``, dropping the least recently used beyond ``size``."""
        weight = 1 if self._weigh is None else self._weigh(value)
        if weight > self.size:
            return
        with self._lock:
            if key in self._values:
                self._weight -= self._values.pop(key)[1]
            self._values[key] = (value, weight)
            self._weight += weight
            while self._weight > self.size:
                _, (_, dropped) = self._values.popitem(last=False)
                self._weight -= dropped

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._weight = 0

    def __len__(self) -> int:
        return len(self._values)
