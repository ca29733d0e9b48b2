"""Hydra sweep overrides as an Optuna search space.

=====================================  ==========================================
override                               Optuna distribution
=====================================  ==========================================
``k=a,b,c`` / ``k=choice(a,b,c)``      categorical over the values as written
``k=range(2,9,2)`` (integers)          integer 2..8, step 2
``k=range(0.1,0.5,0.1)`` (floats)      categorical over the range's values
``k=interval(0.8,0.99)``               float in [0.8, 0.99]
``k=tag(log,interval(1e-4,1))``        float, sampled on a log scale
``k=tag(int,interval(1,8))``           integer in [1, 8] (``tag(int,log,...)`` too)
``k=value``                            not searched: every trial gets it
=====================================  ==========================================

Categorical values are kept as the override text (``[blocks.3,blocks.4]``, ``fre``), so a
trial's override is exactly what the user wrote.
"""


import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)

INTERVAL_TAGS = frozenset({"log", "int"})


class SearchSpaceError(ValueError):
    """An override that cannot be searched (an unknown tag, an empty range)."""


@dataclass
class SearchSpace:
    """The searched keys with their Optuna distributions, and the fixed overrides.

    Attributes:
        distributions: ``{override key: optuna distribution}``.
        fixed: overrides every trial gets unchanged (``key=value``).
    """

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    @classmethod
    def from_overrides(cls, overrides: Sequence[Override]) -> "SearchSpace":
        """Build from parsed overrides; a later override of a key replaces an earlier one
        (the command line after ``hydra.sweeper.params``)."""
        distributions: dict[str, Any] = {}
        fixed: dict[str, str] = {}
        for override in overrides:
            key = override.get_key_element()
            distributions.pop(key, None)
            fixed.pop(key, None)
            if override.is_sweep_override():
                distributions[key] = distribution(override)
            else:
                fixed[key] = f"{key}={override.get_value_element_as_str()}"
        return cls(distributions, list(fixed.values()))

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then ``key=value`` per searched key."""
        chosen = [f"{key}={_text(params[key])}" for key in self.distributions]
        return [*self.fixed, *chosen]


def _text(value: Any) -> str:
    """A sampled value as override text (categorical values are override text already)."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override (its value a ``ChoiceSweep``,
    ``RangeSweep`` or ``IntervalSweep``)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    key, sweep = override.get_key_element(), override.value()

    if isinstance(sweep, IntervalSweep):
        unknown = set(sweep.tags) - INTERVAL_TAGS
        if unknown:
            raise SearchSpaceError(
                f"{key}: unknown tag {sorted(unknown)[0]!r} on interval(); the tags are "
                f"'log' and 'int', e.g. tag(log,interval(1e-4,1))")
        low, high = float(sweep.start), float(sweep.end)
        log = "log" in sweep.tags
        if not low <= high or (log and low <= 0):
            raise SearchSpaceError(f"{key}: interval({low:g},{high:g}) is empty"
                                   + (" or not positive (log scale)" if log else ""))
        if "int" in sweep.tags:
            lo, hi = math.ceil(low), math.floor(high)
            if lo > hi:
                raise SearchSpaceError(f"{key}: interval({low:g},{high:g}) holds no integer")
            return IntDistribution(lo, hi, log=log)
        return FloatDistribution(low, high, log=log)
    if sweep.tags:
        raise SearchSpaceError(f"{key}: tags apply to interval() only, not to "
                               f"{type(sweep).__name__}")
    if isinstance(sweep, RangeSweep):
        values = [sweep.start, sweep.stop, sweep.step]
        if all(isinstance(v, int) for v in values) and sweep.step > 0:
            high = sweep.start + (sweep.stop - sweep.start - 1) // sweep.step * sweep.step
            if high < sweep.start:
                raise SearchSpaceError(f"{key}: range({sweep.start},{sweep.stop}) is empty")
            return IntDistribution(sweep.start, high, step=sweep.step)
    if isinstance(sweep, (ChoiceSweep, RangeSweep)):
        choices = list(override.sweep_string_iterator())
        if not choices:
            raise SearchSpaceError(f"{key}: no values to choose from")
        return CategoricalDistribution(list(dict.fromkeys(choices)))
    raise SearchSpaceError(f"{key}: cannot search {type(sweep).__name__}")

