"""``dfmx.registry``: entry-point lookup, unknown names, broken and duplicate plugins.

Extra "installed" distributions are dist-info folders written into a temporary folder put
on ``sys.path`` (what ``importlib.metadata`` reads); the CLI tests install real packages
with pip.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from dfmx import registry
from dfmx.scorers.fre import FREScorer
from dfmx.scorers.nll import NLLScorer


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``install(dist, {name: value}, modules={module: source})`` into a path entry."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear_cache()
    added_modules: list[str] = []

    def install(dist: str, entries: dict[str, str], group: str = "dfmx.scorers",
                modules: dict[str, str] | None = None) -> None:
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
        for module, source in (modules or {}).items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            added_modules.append(module)

    yield install
    registry.clear_cache()
    for module in added_modules:
        sys.modules.pop(module, None)


def test_builtins_are_found_through_entry_points() -> None:
    assert {"fre", "nll"} <= set(registry.names("scorer"))
    assert registry.names("scorer") == sorted(registry.names("scorer"))
    assert registry.load("scorer", "fre") is FREScorer
    assert registry.load("scorer", "nll") is NLLScorer
    for kind, builtin in [("backbone", "efficientnet_lite0"), ("layer", "default"),
                          ("pooling", "avg"), ("data", "demo")]:
        assert builtin in registry.names(kind), kind


def test_unknown_name_lists_available_and_suggests_close_matches() -> None:
    with pytest.raises(registry.UnknownPluginError) as info:
        registry.load("scorer", "frre")
    message = str(info.value)
    assert "unknown scorer 'frre'. Did you mean 'fre'?" in message
    assert "Available scorers: " + ", ".join(registry.names("scorer")) in message
    assert "(entry-point group dfmx.scorers)" in message
    with pytest.raises(registry.UnknownPluginError) as info:
        registry.load("pooling", "zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "avg, max, none" in str(info.value)


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match="unknown plugin kind 'scorers'; kinds are backbone, "):
        registry.names("scorers")


def test_an_installed_plugin_is_found_and_cached(site) -> None:
    site("dfmx-extra", {"extra": "dfmx_test_extra:Extra"},
         modules={"dfmx_test_extra": "class Extra:\n    pass\n"})
    assert "extra" in registry.names("scorer")
    first = registry.load("scorer", "extra")
    assert first.__name__ == "Extra"
    assert registry.load("scorer", "extra") is first
    assert "extra" in registry.load_all("scorer")


def test_broken_plugin_is_named_when_asked_for_and_skipped_when_listing(site) -> None:
    site("dfmx-broken", {"broken": "dfmx_test_broken:Scorer"},
         modules={"dfmx_test_broken": "raise ImportError('needs no_such_dependency')\n"})
    with pytest.raises(registry.PluginError) as info:
        registry.load("scorer", "broken")
    assert str(info.value) == (
        "the scorer plugin 'broken' = 'dfmx_test_broken:Scorer' from package dfmx-broken 1.0 "
        "failed to load: ImportError: needs no_such_dependency"
    )
    with pytest.warns(RuntimeWarning, match="skipping a plugin: .*'broken'.*dfmx-broken"):
        loaded = registry.load_all("scorer")
    assert "broken" not in loaded
    assert loaded["fre"] is FREScorer  # the others keep working


def test_attribute_missing_in_plugin_module_is_a_plugin_error(site) -> None:
    site("dfmx-typo", {"typo": "dfmx_test_typo:Scorrer"},
         modules={"dfmx_test_typo": "class Scorer:\n    pass\n"})
    with pytest.raises(registry.PluginError, match=r"'typo'.*dfmx-typo.*AttributeError"):
        registry.load("scorer", "typo")


def test_same_name_from_two_packages_is_refused_naming_both(site) -> None:
    site("dfmx-fre-clone", {"fre": "dfmx_test_clone:FREScorer"},
         modules={"dfmx_test_clone": "from dfmx.scorers.fre import FREScorer\n"})
    with pytest.raises(registry.PluginError) as info:
        registry.load("scorer", "fre")
    message = str(info.value)
    assert "scorer name 'fre' is registered more than once" in message
    assert "'fre' = 'dfmx_test_clone:FREScorer' from package dfmx-fre-clone 1.0" in message
    assert "'fre' = 'dfmx.scorers.fre:FREScorer' from package dfmx " in message
    assert message.endswith("Uninstall one of these packages.")
    with pytest.warns(RuntimeWarning, match="registered more than once"):
        assert "fre" not in registry.load_all("scorer")
    assert registry.load("scorer", "nll") is NLLScorer


def test_same_name_with_the_same_target_is_not_a_conflict(site) -> None:
    # e.g. a second copy of one package: both entry points load the same object
    site("dfmx-fre-alias", {"fre": "dfmx.scorers.fre:FREScorer"})
    assert registry.load("scorer", "fre") is FREScorer


def test_clear_cache_forgets_removed_plugins(site, monkeypatch: pytest.MonkeyPatch) -> None:
    site("dfmx-gone", {"gone": "dfmx_test_gone:Gone"},
         modules={"dfmx_test_gone": "class Gone:\n    pass\n"})
    assert registry.load("scorer", "gone").__name__ == "Gone"
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "dfmx_test" not in p
                                      and not Path(p, "dfmx_gone-1.0.dist-info").exists()])
    assert registry.load("scorer", "gone").__name__ == "Gone"  # still cached
    registry.clear_cache()
    with pytest.raises(registry.UnknownPluginError, match="unknown scorer 'gone'"):
        registry.load("scorer", "gone")
