"""Turn installed plugins into Hydra config nodes.

At start-up every entry point of every plugin kind is loaded (one at a time: a broken one
is reported and skipped) and its hyperparameter dataclass is stored in Hydra's ConfigStore
under the matching group, with an added ``name`` field holding the plugin's name. So
``scorer=NAME scorer.PARAM=VALUE`` works for any installed scorer with no YAML of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore


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
    """A dataclass with the plugin's fields plus ``name`` (defaulting to the plugin name)."""
    base = config_class(kind, name, plugin)
    return dataclasses.make_dataclass(
        f"{base.__name__}Node",
        [("name", str, dataclasses.field(default=name))],
        bases=(base,),
    )


def register_plugins(store: ConfigStore | None = None) -> dict[str, list[str]]:
    """Store a config node for every loadable plugin; returns ``{kind: [names]}``.

    The nodes come from :func:`dfmx.cli.plugin_configs.plugin_nodes`: described in a file,
    so that plugins (and torch) are imported only when a job uses them.
    """
    from dfmx.cli.plugin_configs import plugin_nodes

    store = store or ConfigStore.instance()
    stored: dict[str, list[str]] = {}
    for kind, nodes in plugin_nodes().items():
        stored[kind] = []
        for name, node in nodes.items():
            store.store(group=kind, name=name, node=node)
            stored[kind].append(name)
    return stored


def plugin_params(node: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a resolved config node into the plugin name and its hyperparameters."""
    params = dict(node)
    return params.pop("name"), params
