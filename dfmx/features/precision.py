"""Where and in what precision the backbone runs: the device, and ``fp32`` or ``bf16``
autocast, each chosen by hand or ``auto``.

``auto`` picks bf16 only where the hardware has fast bf16 matrix units: CUDA devices that
support bf16, and x86 CPUs with AMX (``amx_bf16``) or ``avx512_bf16``. Everywhere else it is
fp32, because emulated bf16 is slower than fp32 and less accurate.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from dfmx.backbone_modes import DEVICE_CHOICES, PRECISIONS, precision_key
from dfmx.errors import ConfigError

_CPU_BF16_FLAGS: frozenset[str] = frozenset({"amx_bf16", "avx512_bf16"})


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where the file does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix/vector instructions (AMX or AVX512-BF16).

    Asks torch first (``torch.cpu._is_amx_tile_supported`` / ``_is_avx512_bf16_supported``,
    private but present since torch 2.3), then falls back to the ``/proc/cpuinfo`` flags.
    ``torch.backends.cpu.get_cpu_capability()`` is not enough on its own: it reports
    ``"AVX512"`` on AMX machines too.
    """
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is None:
            continue
        try:
            if fn():
                return True
        except RuntimeError:  # pragma: no cover - defensive: probe unsupported on this build
            continue
    return bool(_cpuinfo_flags() & _CPU_BF16_FLAGS)


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """The device ``device`` names, checked to exist; ``"auto"`` is CUDA where present.

    Raises:
        ValueError: an unknown device name, or a CUDA/MPS device this machine or this
            torch build does not have (the message says which and what to use instead).
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(
            f"Unknown device {device!r}; use {DEVICE_CHOICES} ({err})."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"device={device} was asked for, but torch sees no CUDA device (torch "
                f"{torch.__version__}, {build}); use device=cpu, or device=auto to take a "
                "GPU only where there is one."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), numbered from 0.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device} was asked for, but MPS is not available here; "
                         "use device=cpu or device=auto.")
    return dev


def resolve_precision(name: str, device: str | torch.device = "cpu") -> str:
    """Resolve a precision name to ``"fp32"`` or ``"bf16"``.

    Args:
        name: ``"auto"``, ``"fp32"`` or ``"bf16"`` (``"float32"``/``"bfloat16"`` also accepted).
        device: the device the backbone runs on; only used by ``"auto"``.

    Returns:
        ``"fp32"`` or ``"bf16"``.

    Raises:
        ValueError: for an unknown name; the message lists the choices.
    """
    key = precision_key(name)
    if key is None:
        raise ConfigError(f"Unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}.")
    if key != "auto":
        return key
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def uses_channels_last(precision: str, device: str | torch.device = "cpu") -> bool:
    """Whether the backbone should run in ``channels_last`` memory format.

    bf16 always does (oneDNN/cuDNN bf16 kernels want NHWC). fp32 does too: channels_last
    is the faster layout for Wide-ResNet-50 and for the depthwise-heavy EfficientNet-Lite0
    alike, so no per-family exception is made
    (``benchmarks/test_extraction_speed.py::test_layout_and_weight_variants`` measures it;
    figures in ``docs/performance.md``). cuDNN also prefers NHWC for convolutions.
    """
    del precision, device  # the same answer for every precision and device
    return True
