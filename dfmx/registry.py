"""Plugin discovery through Python entry points.

Every swappable part is looked up by name in an entry-point group (``dfmx.scorers``,
``dfmx.backbones``, ...). dfmx registers its own built-ins through the same groups in its
``pyproject.toml``, so built-in and third-party code take one path. Entry points are loaded
lazily, one at a time: a broken plugin is named when it is asked for (or skipped with a
warning when listing everything) and never breaks the others.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from dfmx.errors import UserError

GROUPS = {
    "backbone": "dfmx.backbones",
    "layer": "dfmx.layers",
    "pooling": "dfmx.poolings",
    "scorer": "dfmx.scorers",
    "data": "dfmx.datasets",
}


class PluginError(UserError, RuntimeError):
    """A plugin could not be loaded, or two plugins claim the same name."""


class UnknownPluginError(UserError, ValueError):
    """No plugin of that name is installed."""


def _group(kind: str) -> str:
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(GROUPS)}")
    return GROUPS[kind]


@cache
def _installed() -> Any:
    """Every installed distribution's entry points, read once for all groups (each read
    opens every distribution's metadata, tens of ms) until :func:`clear_cache`."""
    return entry_points()


@cache
def installed(kind: str) -> dict[str, list[EntryPoint]]:
    """The entry points of ``kind``'s group by name (more than one where several
    distributions claim a name), nothing imported."""
    found: dict[str, list[EntryPoint]] = {}
    for ep in _installed().select(group=_group(kind)):
        found.setdefault(ep.name, []).append(ep)
    return found


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" from package {dist.name} {dist.version}" if dist is not None else ""
    return f"'{ep.name}' = '{ep.value}'{where}"


def plugin_params(node: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a resolved config node (``{"name": ..., **options}``) into the plugin's name
    and its options."""
    params = dict(node)
    return str(params.pop("name")), params


def names(kind: str) -> list[str]:
    """Names of the installed plugins of ``kind``, sorted (nothing is imported)."""
    return sorted(installed(kind))


def load(kind: str, name: str) -> Any:
    """The object the entry point ``name`` of ``kind`` refers to.

    Raises:
        UnknownPluginError: no such plugin; the message lists the installed ones.
        PluginError: two distributions register the name, or importing it failed.
    """
    return _load(kind, name)


@cache
def _load(kind: str, name: str) -> Any:
    eps = installed(kind)
    if name not in eps:
        available = sorted(eps)
        close = difflib.get_close_matches(name, available, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownPluginError(
            f"unknown {kind} {name!r}.{hint} Available {kind}s: {', '.join(available) or 'none'}"
            f" (entry-point group {_group(kind)})"
        )
    candidates = eps[name]
    if len({ep.value for ep in candidates}) > 1:
        raise PluginError(
            f"{kind} name {name!r} is registered more than once: "
            + "; ".join(_origin(ep) for ep in candidates)
            + ". Uninstall one of these packages."
        )
    ep = candidates[0]
    try:
        return ep.load()
    except Exception as exc:  # any import-time failure of third-party code
        raise PluginError(
            f"the {kind} plugin {_origin(ep)} failed to load: {type(exc).__name__}: {exc}"
        ) from exc


def load_all(kind: str) -> dict[str, Any]:
    """Every loadable plugin of ``kind``; broken or duplicate ones are skipped with a warning."""
    loaded = {}
    for name in names(kind):
        try:
            loaded[name] = load(kind, name)
        except PluginError as exc:
            warnings.warn(f"skipping a plugin: {exc}", RuntimeWarning, stacklevel=2)
    return loaded


def clear_cache() -> None:
    """Forget the installed and loaded plugins (after installing or removing a plugin
    in-process)."""
    installed.cache_clear()
    _installed.cache_clear()
    _load.cache_clear()


def provider(kind: str, name: str) -> str | None:
    """``"<distribution> <version>"`` of the installed package that registers ``name`` in
    ``kind``'s group (e.g. ``"dfmx-knn 0.1.0"``), or ``None`` when no single package does.
    Nothing is imported."""
    dists = {(ep.dist.name, ep.dist.version)
             for ep in installed(kind).get(name, []) if getattr(ep, "dist", None)}
    if len(dists) != 1:
        return None
    dist, version = dists.pop()
    return f"{dist} {version}"
