"""PCA fits shared between the jobs of a sweep (off until :func:`share_fits` turns it on).

Jobs of a sweep that differ only in what follows the PCA (the scorer and its options)
fit the same PCA on the same features again. With sharing on, :meth:`PCA.fit
<dfmx.engine.pca.PCA.fit>` keeps what it fitted by the content of its input (a SHA-256
digest of the bytes, with their dtype and shape) and ``n_components``, within a byte
budget, least recently used dropped first. A fit is a function of exactly those, so a
changed input is a miss, never a stale hit. Kept and handed-out states are copies: a
model that changes its buffers in place (``load_state_dict``) changes nobody else's.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable

import torch
from torch import Tensor

__all__ = ["get", "key", "put", "share_fits"]

#: A fitted state: buffer name -> tensor, plus ``n_samples_`` (an int).
State = dict[str, "Tensor | int"]


class _Store:
    def __init__(self) -> None:
        self.max_bytes = 0
        self.bytes = 0
        self.states: OrderedDict[Hashable, tuple[State, int]] = OrderedDict()
        self.lock = threading.Lock()


_STORE = _Store()


def share_fits(max_bytes: int) -> None:
    """Keep fitted PCA states up to ``max_bytes`` in all (0 turns sharing off and
    forgets every kept state)."""
    with _STORE.lock:
        _STORE.max_bytes = max(int(max_bytes), 0)
        _evict(_STORE.max_bytes)


def _evict(limit: int) -> None:
    while _STORE.states and _STORE.bytes > limit:
        _, (_, size) = _STORE.states.popitem(last=False)
        _STORE.bytes -= size


def key(x: Tensor, n_components: float | int) -> Hashable | None:
    """The key of fitting ``n_components`` on ``x``; ``None`` when sharing is off or
    ``x`` is not in CPU memory (hashing it would mean a copy from the device)."""
    if _STORE.max_bytes == 0 or x.device.type != "cpu":
        return None
    data = x.detach().contiguous()
    digest = hashlib.sha256(memoryview(data.view(torch.uint8).numpy())).hexdigest()
    return (digest, str(data.dtype), tuple(data.shape), type(n_components).__name__,
            n_components)


def _copy(state: State) -> State:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}


def get(fit_key: Hashable) -> State | None:
    """A copy of the state kept under ``fit_key``, or ``None``."""
    with _STORE.lock:
        found = _STORE.states.get(fit_key)
        if found is None:
            return None
        _STORE.states.move_to_end(fit_key)
        state = found[0]
    return _copy(state)


def put(fit_key: Hashable, state: State) -> None:
    """Keep a copy of ``state`` under ``fit_key`` (not when it alone exceeds the budget)."""
    size = sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, Tensor))
    if size > _STORE.max_bytes:
        return
    kept = _copy(state)
    with _STORE.lock:
        if fit_key in _STORE.states:
            _STORE.bytes -= _STORE.states.pop(fit_key)[1]
        _STORE.states[fit_key] = (kept, size)
        _STORE.bytes += size
        _evict(_STORE.max_bytes)
