"""The names of how a backbone runs: its precision, its optimisation and its device.

One list of each, read by the model record's checks
(:class:`dfmx.engine.model_config.ModelConfig`) and by the functions that resolve the
names (:func:`dfmx.features.precision.resolve_precision`,
:func:`dfmx.features.graph.resolve_optimize`,
:func:`dfmx.features.precision.resolve_device`). This module imports no torch: the
command line checks a job's options with it before any model is built.
"""

from __future__ import annotations

import re

__all__ = ["DEVICE_CHOICES", "DEVICE_KINDS", "OPTIMIZATIONS", "PRECISIONS", "PRECISION_ALIASES",
           "device_known", "optimize_key", "precision_key"]

#: The precisions: ``auto`` (bf16 only where the hardware has fast bf16), ``fp32``, ``bf16``.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: Other names accepted for a precision.
PRECISION_ALIASES: dict[str, str] = {"float32": "fp32", "bfloat16": "bf16"}
#: How the backbone's forward runs (see :mod:`dfmx.features.graph`).
OPTIMIZATIONS: tuple[str, ...] = ("auto", "none", "freeze", "compile")
#: The device kinds: ``auto`` (CUDA where present), or a kind with an optional ``:N`` index.
DEVICE_KINDS: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: The devices in words, for messages.
DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"

_DEVICE = re.compile(rf"({'|'.join(k for k in DEVICE_KINDS if k != 'auto')})(:\d+)?")


def precision_key(name: str) -> str | None:
    """The precision ``name`` stands for (one of :data:`PRECISIONS`, case and aliases
    folded), or ``None`` when it names none."""
    key = str(name).strip().lower()
    key = PRECISION_ALIASES.get(key, key)
    return key if key in PRECISIONS else None


def optimize_key(name: str) -> str | None:
    """The optimisation ``name`` stands for (one of :data:`OPTIMIZATIONS`, case folded),
    or ``None`` when it names none."""
    key = str(name).strip().lower()
    return key if key in OPTIMIZATIONS else None


def device_known(name: str) -> bool:
    """Whether ``name`` has the form of a device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``,
    ``mps`` (whether this machine has it is checked when the model is built)."""
    text = str(name).strip()
    return text.lower() == "auto" or _DEVICE.fullmatch(text) is not None
