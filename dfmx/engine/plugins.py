"""The model's plugins by name: building a scorer or a pooling from its options, and
checking those options (and the image-score reduction they allow) before any work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dfmx import registry
from dfmx.engine.model_config import AUTO_REDUCTION, ModelConfig, ModelConfigError
from dfmx.engine.scorer import Scorer
from dfmx.errors import ConfigError


def _build_plugin(kind: str, label: str, name: str, params: dict[str, Any] | None) -> Any:
    """Instantiate the ``kind`` plugin ``name`` with ``params`` (its Config fields); every
    problem is a :class:`~dfmx.errors.ConfigError` naming the plugin as ``label``."""
    try:
        cls = registry.load(kind, name)
    except registry.UnknownPluginError as exc:
        raise ConfigError(f"unknown {label}: {exc}") from exc
    params = dict(params or {})
    allowed = _config_fields(cls)
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(
            f"{kind} {name!r} has no parameter(s) {sorted(unknown)}; "
            f"its parameters are {sorted(allowed) or 'none'}"
        )
    try:
        return cls(**params)
    except ValueError as exc:  # the plugin contract: a bad hyperparameter is a ValueError
        raise ConfigError(f"{kind} {name!r}: {exc}") from exc


def build_scorer(score_type: str, params: dict[str, Any] | None = None) -> Scorer:
    """Instantiate the scorer plugin ``score_type`` with ``params`` (its Config fields)."""
    return _build_plugin("scorer", "score_type", score_type, params)


def build_pooling(name: str, params: dict[str, Any] | None = None) -> Any:
    """Instantiate the pooling plugin ``name`` with ``params`` (its whole Config)."""
    return _build_plugin("pooling", "pooling", name, params)


def _config_fields(cls: Any) -> set[str]:
    return set(getattr(getattr(cls, "Config", None), "__dataclass_fields__", {}))


def pooling_fields(name: str) -> set[str]:
    """The option names of the pooling plugin ``name`` (none for an unknown name)."""
    try:
        return _config_fields(registry.load("pooling", name))
    except registry.UnknownPluginError:
        return set()  # build_pooling names the unknown pooling


def check_plugin_options(config: ModelConfig) -> None:
    """Build the pooling and the scorer ``config`` names (cheap: no backbone, no data), so
    that their options are refused before any work.

    Raises:
        ModelConfigError: naming ``pooling_params`` or ``scorer_params``, with the
            plugin's own words.
    """
    built = {}
    for name, build, plugin, params in (
            ("pooling_params", build_pooling, config.pooling, config.pooling_params),
            ("scorer_params", build_scorer, config.score_type, config.scorer_params)):
        try:
            built[name] = build(plugin, dict(params))
        except (ValueError, TypeError) as exc:
            # The plugin's own words, without the builder's "pooling 'avg': " prefix.
            own = exc.__cause__ if isinstance(exc.__cause__, (ValueError, TypeError)) else exc
            raise ModelConfigError(name, f"options that {plugin!r} takes", dict(params),
                                   reason=str(own)) from None
    check_reduction(config, built["scorer_params"])


def resolve_reduction(reduction: str, score_type: str,
                      scorer_params: Mapping[str, Any] | None = None) -> str:
    """``"auto"`` (a job-level choice, not a record value) as ``"topk"`` for a scorer that
    gives maps and ``"sum"`` for an image-only one; any other value unchanged."""
    if reduction != AUTO_REDUCTION:
        return reduction
    try:
        maps = build_scorer(score_type, dict(scorer_params or {})).produces_maps
    except (ValueError, TypeError):
        return "sum"  # the record's check names the bad scorer
    return "topk" if maps else "sum"


def check_reduction(config: ModelConfig, scorer: Scorer) -> None:
    """Refuse a reduction other than ``"sum"`` for a scorer that gives no maps.

    Raises:
        ModelConfigError: naming ``reduction``.
    """
    if config.reduction != "sum" and not scorer.produces_maps:
        raise ModelConfigError(
            "reduction", "sum", config.reduction,
            reason=f"scorer {config.score_type!r} gives image scores only, no maps to reduce: "
                   f"it takes reduction=sum only; got {config.reduction!r}")
