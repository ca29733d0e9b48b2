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
from collections.abc import Hashable

import torch
from torch import Tensor

from dfmx.memo import Memo

__all__ = ["get", "key", "put", "share_fits"]

#: A fitted state: buffer name -> tensor, plus ``n_samples_`` (an int).
State = dict[str, "Tensor | int"]

_FITS: Memo[State] | None = None


def _bytes(state: State) -> int:
    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, Tensor))


def share_fits(max_bytes: int) -> None:
    """Keep fitted PCA states up to ``max_bytes`` in all (0 turns sharing off and
    forgets every kept state); the states kept so far stay while the budget is the same."""
    global _FITS
    if max_bytes <= 0:
        _FITS = None
    elif _FITS is None or _FITS.size != max_bytes:
        _FITS = Memo(int(max_bytes), weigh=_bytes)


def key(x: Tensor, n_components: float | int) -> Hashable | None:
    """The key of fitting ``n_components`` on ``x``; ``None`` when sharing is off or
    ``x`` is not in CPU memory (hashing it would mean a copy from the device)."""
    if _FITS is None or x.device.type != "cpu":
        return None
    data = x.detach().contiguous()
    digest = hashlib.sha256(memoryview(data.view(torch.uint8).numpy())).hexdigest()
    return (digest, str(data.dtype), tuple(data.shape), type(n_components).__name__,
            n_components)


def _copy(state: State) -> State:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}


def get(fit_key: Hashable) -> State | None:
    """A copy of the state kept under ``fit_key``, or ``None``."""
    kept = _FITS.peek(fit_key) if _FITS is not None else None
    return None if kept is None else _copy(kept)


def put(fit_key: Hashable, state: State) -> None:
    """Keep a copy of ``state`` under ``fit_key`` (not when it alone exceeds the budget)."""
    memo = _FITS
    if memo is not None and _bytes(state) <= memo.size:
        memo.put(fit_key, _copy(state))
