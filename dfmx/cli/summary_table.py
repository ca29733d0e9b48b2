"""The terminal summary of one run: an aligned two-column table of its description and metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["UNDEFINED", "summary_table"]

UNDEFINED = "n/a (undefined)"


def _format_value(key: str, value: Any) -> str:
    """One table cell: NaN → ``n/a (undefined)``, ``time_*`` in seconds, floats to 4 dp."""
    if value is None:
        return UNDEFINED
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            return UNDEFINED if math.isnan(f) else str(f)
        if key.startswith("time_") or (key.endswith("_s") and not key.endswith("per_s")):
            return f"{f:.3f} s"
        if key.endswith("per_s"):
            return f"{f:.1f} /s"
        if f.is_integer() and (key.startswith("n_") or key.endswith(("_dim", "_components"))):
            return str(int(f))
        if f != 0.0 and abs(f) < 1e-3:
            return f"{f:.4e}"
        return f"{f:.4f}"
    return str(value)


def summary_table(
    metrics: Mapping[str, float],
    extra: Mapping[str, str | float] | None = None,
    *,
    ascii_only: bool = False,
) -> str:
    """Render an aligned two-column text table: ``extra`` rows first, then ``metrics``.

    NaN shows as ``n/a (undefined)``; floats have 4 decimals; ``time_*`` keys are shown in
    seconds; keys ``n_*``, ``*_dim``, ``*_components`` holding whole numbers as integers.

    Args:
        metrics: metric name → value, shown in the given order.
        extra: run description (backbone, scorer, images/s, …), shown above the metrics.
        ascii_only: use ``+-|`` instead of box-drawing characters.

    Returns:
        The table as one string (no trailing newline).
    """
    sections: list[list[tuple[str, str]]] = []
    if extra:
        sections.append([(str(k), _format_value(str(k), v)) for k, v in extra.items()])
    sections.append([(str(k), _format_value(str(k), v)) for k, v in metrics.items()])
    rows = [r for s in sections for r in s]
    w_key = max([len("metric"), *(len(k) for k, _ in rows)])
    w_val = max([len("value"), *(len(v) for _, v in rows)])
    if ascii_only:
        h, v, top, mid, bot = "-", "|", ("+", "+", "+"), ("+", "+", "+"), ("+", "+", "+")
    else:
        h, v, top, mid, bot = "─", "│", ("┌", "┬", "┐"), ("├", "┼", "┤"), ("└", "┴", "┘")

    def rule(corners: tuple[str, str, str]) -> str:
        return f"{corners[0]}{h * (w_key + 2)}{corners[1]}{h * (w_val + 2)}{corners[2]}"

    def line(key: str, val: str) -> str:
        return f"{v} {key:<{w_key}} {v} {val:>{w_val}} {v}"

    out = [rule(top), line("metric", "value")]
    for section in sections:
        out.append(rule(mid))
        out.extend(line(k, val) for k, val in section)
    out.append(rule(bot))
    return "\n".join(out)

