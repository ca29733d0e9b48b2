"""``ModelConfig``: the one description of a :class:`~dfmx.engine.torch_model.DFMModel`.

Every option of a model has one name, one default and one check here. ``DFMModel`` keeps
anomalib's parameter names at its signature (``pooling_kernel_size``, ``n_comps``) and
turns them into this record; the CLI job, saved models and ``Dfm`` build models from it.
A record is plain data: :meth:`ModelConfig.to_dict` gives a JSON-able dict and
:meth:`ModelConfig.from_dict` reads one back, naming the field of any bad value.

A new model option is one field here (name, default) plus its rule in
:meth:`ModelConfig._problems`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dfmx.backbone_modes import (
    DEVICE_CHOICES,
    OPTIMIZATIONS,
    PRECISIONS,
    device_known,
    optimize_key,
    precision_key,
)
from dfmx.errors import ConfigError

__all__ = ["AUTO_REDUCTION", "COMBINES", "REDUCTIONS", "ModelConfig", "ModelConfigError"]

#: The values of ``ModelConfig.combine``.
COMBINES = ("concat", "ensemble")
#: The values of ``ModelConfig.reduction``.
REDUCTIONS = ("sum", "max", "topk")
#: The job-level reduction (not a record value) that
#: :func:`dfmx.engine.plugins.resolve_reduction` turns into ``"topk"`` for a scorer
#: with maps and ``"sum"`` for an image-only one.
AUTO_REDUCTION = "auto"


class ModelConfigError(ConfigError):
    """A model option with a bad value. ``field`` is the option's name in the record,
    ``rule`` what it takes, ``value`` what it got."""

    def __init__(self, field: str, rule: str, value: Any, reason: str | None = None) -> None:
        self.field, self.rule, self.value, self.reason = field, rule, value, reason
        super().__init__(self.message())

    def message(self, name: str | None = None) -> str:
        """The one-line message, naming the option ``name`` (default: the record's field).

        ``reason``, when given, replaces "must be RULE; got VALUE" (a plugin's own words).
        """
        if self.reason is not None:
            return f"{name or self.field}: {self.reason}"
        return f"{name or self.field} must be {self.rule}; got {self.value!r}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)


@dataclass(frozen=True)
class ModelConfig:
    """What defines a :class:`DFMModel` (not its fitted state).

    Attributes:
        backbone: a timm CNN name or alias (``resnet50``, ``efficientnet_lite0``...).
        layers: one or more feature layers by timm module name (``("layer3",)``).
        pre_trained: load pretrained weights; ``False`` gives a random backbone.
        weights: an explicit weights file (``None``: resolve by name).
        pooling: the pooling plugin's name (``"avg"``, ``"max"``, ``"none"``).
        pooling_params: the pooling plugin's ``Config`` fields (e.g. ``kernel_size``);
            fields left out take the plugin's defaults.
        n_comps: PCA variance ratio in ``(0, 1)`` or an int number of components.
        score_type: the scorer plugin's name (``"fre"``, ``"nll"``...).
        scorer_params: the scorer plugin's ``Config`` fields.
        precision: ``"auto"`` (bf16 only where the hardware has fast bf16), ``"fp32"``,
            ``"bf16"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        optimize: how the backbone runs: ``"auto"``, ``"none"``, ``"freeze"``,
            ``"compile"`` (see :mod:`dfmx.features.graph`).
        combine: how several layers make one model: ``"concat"`` (one PCA and scorer
            on the layers' concatenated maps) or ``"ensemble"`` (one PCA and scorer per
            layer, scores standardised and summed; see :mod:`dfmx.engine.ensemble`).
        reduction: how a map becomes an image score: ``"sum"`` (the scorer's own score),
            ``"max"`` or ``"topk"`` (the mean of the top ``reduction_topk`` share of the
            feature-grid map); scorers without maps take ``"sum"`` only.
        reduction_topk: the share in ``(0, 1]`` of map cells ``"topk"`` averages.
    """

    backbone: str
    layers: tuple[str, ...]
    pre_trained: bool = True
    weights: str | None = None
    pooling: str = "avg"
    pooling_params: Mapping[str, Any] = field(default_factory=dict)
    n_comps: float | int = 0.97
    score_type: str = "fre"
    scorer_params: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "auto"
    device: str = "cpu"
    optimize: str = "auto"
    combine: str = "concat"
    reduction: str = "sum"
    reduction_topk: float = 0.05

    def __post_init__(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, str) else self.layers
        if isinstance(layers, (list, tuple)):
            object.__setattr__(self, "layers", tuple(layers))
        for name in ("pooling_params", "scorer_params"):
            value = getattr(self, name)
            if _is_str_map(value):
                object.__setattr__(self, name, dict(value))
        weights = self.weights
        if weights is not None and not isinstance(weights, str) and hasattr(weights, "__fspath__"):
            object.__setattr__(self, "weights", str(weights))
        problem = next(self._problems(), None)
        if problem is not None:
            raise problem

    def _problems(self):
        """The rule of each field, in field order."""
        yield from self._choice_problems()
        for name in ("backbone", "pooling", "score_type"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                yield ModelConfigError(name, "a non-empty string", value)
        if not isinstance(self.precision, str) or precision_key(self.precision) is None:
            yield ModelConfigError("precision", f"one of {', '.join(PRECISIONS)}",
                                   self.precision)
        if not isinstance(self.device, str) or not device_known(self.device):
            yield ModelConfigError("device", DEVICE_CHOICES, self.device)
        if not isinstance(self.optimize, str) or optimize_key(self.optimize) is None:
            yield ModelConfigError("optimize", f"one of {', '.join(OPTIMIZATIONS)}",
                                   self.optimize)
        if not (isinstance(self.layers, tuple) and self.layers
                and all(isinstance(v, str) and v for v in self.layers)):
            yield ModelConfigError("layers", "one or more layer names", self.layers)
        if not isinstance(self.pre_trained, bool):
            yield ModelConfigError("pre_trained", "true or false", self.pre_trained)
        if self.weights is not None and not isinstance(self.weights, str):
            yield ModelConfigError("weights", "a file path or null", self.weights)
        for name in ("pooling_params", "scorer_params"):
            if not _is_str_map(getattr(self, name)):
                yield ModelConfigError(name, "a mapping of option names to values",
                                       getattr(self, name))
        n = self.n_comps
        if not ((_is_int(n) and n >= 1)
                or (isinstance(n, float) and math.isfinite(n) and 0.0 < n < 1.0)):
            yield ModelConfigError(
                "n_comps", "a variance ratio in (0, 1), e.g. 0.97, or a whole number of "
                "components >= 1", n)

    def _choice_problems(self):
        if not isinstance(self.combine, str) or self.combine not in COMBINES:
            yield ModelConfigError("combine", f"one of {', '.join(COMBINES)}", self.combine)
        if not isinstance(self.reduction, str) or self.reduction not in REDUCTIONS:
            yield ModelConfigError("reduction", f"one of {', '.join(REDUCTIONS)}",
                                   self.reduction)
        k = self.reduction_topk
        if isinstance(k, bool) or not isinstance(k, (int, float)) \
                or not (math.isfinite(k) and 0.0 < k <= 1.0):
            yield ModelConfigError("reduction_topk", "a share of the map in (0, 1], e.g. 0.05", k)

    # ------------------------------------------------------------------ as data
    def to_dict(self) -> dict[str, Any]:
        """The record as a plain JSON-able dict (``layers`` as a list)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["layers"] = list(self.layers)
        out["pooling_params"] = dict(self.pooling_params)
        out["scorer_params"] = dict(self.scorer_params)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """The record ``data`` describes (as :meth:`to_dict` writes it).

        Raises:
            ModelConfigError: ``data`` is not a mapping, lacks a required field, has a
                field this record does not know, or a bad value (the message names it).
        """
        if not isinstance(data, Mapping):
            raise ModelConfigError("the model description", "a mapping of fields", data)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ModelConfigError(
                f"field {unknown[0]!r}", f"one of the model's options ({', '.join(names)})",
                data[unknown[0]])
        for f in dataclasses.fields(cls):
            if f.name not in data and f.default is dataclasses.MISSING \
                    and f.default_factory is dataclasses.MISSING:
                raise ModelConfigError(f.name, "given (it has no default)", None)
        return cls(**dict(data))

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` (validated like a new record)."""
        return dataclasses.replace(self, **changes)
