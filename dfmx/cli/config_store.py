"""Turn installed plugins into Hydra config nodes, and register the root config's schema.

At start-up every entry point of every plugin kind is loaded (one at a time: a broken one
is reported and skipped) and its hyperparameter dataclass is stored in Hydra's ConfigStore
under the matching group, with an added ``name`` field holding the plugin's name. So
``scorer=NAME scorer.PARAM=VALUE`` works for any installed scorer with no YAML of its own.
"""

from __future__ import annotations

import dataclasses
import secrets
import typing
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from dfmx.experiment.job_config import CacheOptions, JobConfig, job_config_problems

#: The name of the root config's schema, the first entry of conf/config.yaml's defaults.
SCHEMA = "dfmx_schema"


#: The resolver that ``conf/config.yaml`` puts in ``hydra.run.dir`` and ``hydra.sweep.dir``.
UNIQUE_RESOLVER = "dfmx_unique"


def register_resolvers() -> None:
    """Register ``${dfmx_unique:}``: six random hex digits, drawn once per composed config.

    The value is cached in the config (as Hydra's ``${now:...}`` is), so a run's folder
    name is the same wherever it is read, and a sweep's launcher copies it into every job
    (also in other processes: this runs when :mod:`dfmx.cli.app` is imported). Two runs
    started in the same second get different folders.
    """
    if not OmegaConf.has_resolver(UNIQUE_RESOLVER):
        OmegaConf.register_new_resolver(UNIQUE_RESOLVER, lambda: secrets.token_hex(3),
                                        use_cache=True)


def register_schema(store: ConfigStore | None = None) -> None:
    """Store :class:`~dfmx.experiment.job_config.JobConfig` as ``dfmx_schema``, the typed
    base of ``conf/config.yaml``: Hydra checks the type of every job-level option."""
    (store or ConfigStore.instance()).store(name=SCHEMA, node=JobConfig)


class PluginConfigError(TypeError):
    """A plugin's configuration class breaks the plugin contract."""


def config_class(kind: str, name: str, plugin: Any) -> type:
    """The hyperparameter dataclass of a plugin: its ``Config`` attribute, or itself."""
    cls = getattr(plugin, "Config", plugin)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise PluginConfigError(
            f"the {kind} plugin {name!r} ({plugin!r}) has no dataclass config: give it a "
            "`Config` dataclass attribute (or register a dataclass itself)"
        )
    if any(f.name == "name" for f in dataclasses.fields(cls)):
        raise PluginConfigError(
            f"the {kind} plugin {name!r}: its config may not define a field called 'name' "
            "(dfmx adds it to record the plugin's name)"
        )
    return cls


def node_for(kind: str, name: str, plugin: Any) -> type:
    """A dataclass with the plugin's fields plus ``name`` (defaulting to the plugin name);
    a data source's node also gets ``val_fraction`` (the share of its training normals
    dfmx holds out for validation) unless the source defines it."""
    from dfmx.data.splits import DEFAULT_VAL_FRACTION

    base = config_class(kind, name, plugin)
    fields: list[Any] = [("name", str, dataclasses.field(default=name))]
    if kind == "data" and "val_fraction" not in {f.name for f in dataclasses.fields(base)}:
        fields.append(("val_fraction", float, dataclasses.field(default=DEFAULT_VAL_FRACTION)))
    return dataclasses.make_dataclass(f"{base.__name__}Node", fields, bases=(base,))


def register_plugins(store: ConfigStore | None = None) -> dict[str, list[str]]:
    """Store the root schema and a config node for every loadable plugin; returns
    ``{kind: [names]}``.

    The plugin nodes come from :func:`dfmx.cli.plugin_configs.plugin_nodes`: described in a
    file, so that plugins (and torch) are imported only when a job uses them.
    """
    from dfmx.cli.plugin_configs import plugin_nodes

    store = store or ConfigStore.instance()
    register_schema(store)
    stored: dict[str, list[str]] = {}
    for kind, nodes in plugin_nodes().items():
        stored[kind] = []
        for name, node in nodes.items():
            store.store(group=kind, name=name, node=node)
            stored[kind].append(name)
    return stored


def _kind(hint: Any) -> str:
    """What a schema field's type takes, in words (``Optional[int]`` -> a whole number or
    null)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    nullable = typing.get_origin(hint) is typing.Union and len(args) < len(typing.get_args(hint))
    if nullable and len(args) == 1:
        return f"{_kind(args[0])} or null"
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if set(args) == {int, float}:
        return "a number"
    if args:
        return " or ".join(words.get(a, a.__name__) for a in args)
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def job_value_problem(values: dict[str, list[Any]]) -> str | None:
    """One line naming every bad job-level value given on the command line, else ``None``.

    ``values`` maps dotted keys of :class:`JobConfig` (``batch_size``, ``cache.max_gb``)
    to their parsed values (several in a sweep); other keys are ignored. The types come
    from the schema, the ranges from :func:`~dfmx.experiment.job_config.job_config_problems`,
    so a command line gets the same words as a config handed to ``run_experiment``.
    """
    from omegaconf import OmegaConf, ValidationError

    defaults = dataclasses.asdict(JobConfig())
    hints = {"": typing.get_type_hints(JobConfig),
             "cache": typing.get_type_hints(CacheOptions)}
    problems: list[str] = []
    for key, options in values.items():
        parent, _, leaf = key.rpartition(".")
        if parent not in hints or leaf not in hints[parent] or hints[parent][leaf] is Any:
            continue
        for value in options:
            ranged = job_config_problems({**defaults, leaf: value}) if not parent else []
            if ranged:
                problems.extend(p for p in ranged if p not in problems)
                continue
            try:
                OmegaConf.update(OmegaConf.structured(JobConfig), key, value)
            except ValidationError:
                problems.append(f"{key} must be {_kind(hints[parent][leaf])}; got {value!r}")
    return "; ".join(problems) or None
