"""Installed plugins' config nodes, described in a file so that start-up imports no plugin.

Hydra needs every plugin's hyperparameter dataclass in its ConfigStore before it composes
anything, and importing a plugin module usually imports torch (seconds). So the fields of
each plugin's config node (name, type, default) are written to a JSON file in the dfmx
cache folder (``$DFMX_CACHE_DIR``, else ``~/.cache/dfmx``; one file per Python
environment), and a dataclass with the same fields is rebuilt from it. An entry is used
only while its entry point (target, package, version) and the source files its config
comes from (size and modification time) are unchanged; otherwise the plugin is imported,
exactly as with no file, and the entry rewritten. A config whose types or defaults JSON
cannot describe (an enum, a nested dataclass, a path default) is imported every time, as
is a plugin that fails to load (it is warned about every time). The plugin itself is
imported when a job uses it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import sys
import types
import typing
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from dfmx import registry
from dfmx.cache_dir import read_record, write_record
from dfmx.cli.config_store import PluginConfigError, node_for

#: Bumped when the file's layout changes.
FORMAT = 1
_CACHE_ENV_VAR = "DFMX_CACHE_DIR"

_SCALARS: dict[str, Any] = {
    "int": int, "float": float, "bool": bool, "str": str, "bytes": bytes, "Any": Any,
    "list": list, "dict": dict, "tuple": tuple,
}


def cache_file() -> Path:
    """The JSON file of this Python environment (``sys.prefix``, Python version)."""
    root = os.environ.get(_CACHE_ENV_VAR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "dfmx"
    env = f"{sys.prefix}|{sys.version_info[0]}.{sys.version_info[1]}"
    return base / f"plugin-configs-{hashlib.sha256(env.encode()).hexdigest()[:12]}.json"


# ----------------------------------------------------------------------------- types
def encode_type(tp: Any) -> Any:
    """A JSON description of a field type, or ``None`` when it has none here."""
    for key, value in _SCALARS.items():
        if tp is value:
            return key
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            inner = encode_type(rest[0])
            return None if inner is None else {"optional": inner}
        return None
    if origin is list and len(args) == 1:
        inner = encode_type(args[0])
        return None if inner is None else {"list": inner}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = encode_type(args[0])
        return None if inner is None else {"tuple": inner}
    if origin is dict and len(args) == 2:
        key, value = encode_type(args[0]), encode_type(args[1])
        return None if key is None or value is None else {"dict": [key, value]}
    return None


def decode_type(spec: Any) -> Any:
    """The type :func:`encode_type` described."""
    if isinstance(spec, str):
        return _SCALARS[spec]
    (kind, inner), = spec.items()
    if kind == "optional":
        return typing.Optional[decode_type(inner)]  # noqa: UP045 - built at run time
    if kind == "list":
        return list[decode_type(inner)]  # type: ignore[misc]
    if kind == "tuple":
        return tuple[decode_type(inner), ...]  # type: ignore[misc]
    if kind == "dict":
        return dict[decode_type(inner[0]), decode_type(inner[1])]  # type: ignore[misc]
    raise ValueError(f"unknown type description {spec!r}")


def _plain(value: Any) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def describe_node(node: type) -> list[dict[str, Any]] | None:
    """The fields of a config dataclass as JSON (name, type, default), or ``None``."""
    try:
        hints = typing.get_type_hints(node)
    except Exception:
        return None
    fields = []
    for f in dataclasses.fields(node):
        spec = encode_type(hints.get(f.name))
        if spec is None:
            return None
        entry: dict[str, Any] = {"name": f.name, "type": spec}
        if f.default is not dataclasses.MISSING:
            entry["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            entry["default"] = f.default_factory()
        if "default" in entry and not _plain(entry["default"]):
            return None
        fields.append(entry)
    return fields


def rebuild_node(class_name: str, fields: list[dict[str, Any]]) -> type:
    """A dataclass with the fields :func:`describe_node` gave (no default: ``MISSING``)."""
    spec = []
    for f in fields:
        default = f.get("default", MISSING)
        if isinstance(default, (list, dict)):
            attr = dataclasses.field(default_factory=lambda v=default: copy.deepcopy(v))
        else:
            attr = dataclasses.field(default=default)
        spec.append((f["name"], decode_type(f["type"]), attr))
    return dataclasses.make_dataclass(class_name, spec)


# --------------------------------------------------------------------------- sources
def _stamp(path: str) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [path, st.st_mtime_ns, st.st_size]


def _source_files(plugin: Any, node: type) -> list[str] | None:
    """The files defining the plugin object and every class its config is made of."""
    modules = {getattr(plugin, "__module__", None)}
    modules.update(cls.__module__ for cls in node.__mro__ if cls is not object)
    files = set()
    for name in modules:
        if name is None or name == "types":  # make_dataclass's own module
            continue
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path:
            return None
        files.add(path)
    return sorted(files)


def _identity(eps: list[EntryPoint]) -> dict[str, str] | None:
    """What names an entry point's target; ``None`` when several distributions disagree
    (the registry's duplicate error then comes from loading)."""
    if len({ep.value for ep in eps}) != 1:
        return None
    dist = getattr(eps[0], "dist", None)
    return {"value": eps[0].value,
            "dist": f"{dist.name} {dist.version}" if dist is not None else ""}


def _valid(entry: Any, identity: dict[str, str]) -> bool:
    if not isinstance(entry, dict) or entry.get("identity") != identity:
        return False
    sources = entry.get("sources")
    return isinstance(sources, list) and bool(sources) and all(
        isinstance(s, list) and s and _stamp(s[0]) == s for s in sources)


# ---------------------------------------------------------------------------- nodes
def _imported_node(kind: str, name: str) -> tuple[type, dict[str, Any] | None] | None:
    """Import the plugin: its node and cache entry (``None``: not describable), or
    ``None`` after a warning when it cannot be used."""
    try:
        plugin = registry.load(kind, name)
        node = node_for(kind, name, plugin)
    except (registry.PluginError, PluginConfigError) as exc:
        warnings.warn(f"skipping a plugin: {exc}", RuntimeWarning, stacklevel=4)
        return None
    fields = describe_node(node)
    files = _source_files(plugin, node)
    if fields is None or files is None:
        return node, None
    rebuilt = rebuild_node(node.__name__, fields)
    if OmegaConf.to_yaml(OmegaConf.structured(rebuilt)) != OmegaConf.to_yaml(
            OmegaConf.structured(node)):
        return node, None
    stamps = [_stamp(f) for f in files]
    if any(s is None for s in stamps):
        return node, None
    return node, {"class": node.__name__, "fields": fields, "sources": stamps}


def plugin_nodes(
    kinds: typing.Iterable[str] = tuple(registry.GROUPS),
) -> dict[str, dict[str, type]]:
    """``{kind: {name: node dataclass}}`` for every usable installed plugin.

    Described plugins are rebuilt from :func:`cache_file` without importing them; the
    others are imported (a broken one is skipped with a ``RuntimeWarning`` naming it).
    """
    path = cache_file()
    data = read_record(path, FORMAT) or {}
    entries: dict[str, Any] = data.get("entries", {})
    changed = False
    nodes: dict[str, dict[str, type]] = {}
    for kind in kinds:
        found = registry.installed(kind)
        nodes[kind] = {}
        for name in sorted(found):
            key = f"{kind}:{name}"
            identity = _identity(found[name])
            entry = entries.get(key)
            if identity is not None and _valid(entry, identity):
                nodes[kind][name] = rebuild_node(entry["class"], entry["fields"])
                continue
            imported = _imported_node(kind, name)
            if entries.pop(key, None) is not None:
                changed = True
            if imported is None:
                continue
            nodes[kind][name], described = imported
            if described is not None and identity is not None:
                entries[key] = {"identity": identity, **described}
                changed = True
    if changed:
        write_record(path, {"entries": entries}, FORMAT)
    return nodes
