"""The described plugin configs: start-up without importing plugins, and never stale."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import pstats
from pathlib import Path
from typing import Any

import pytest
from cli_runner import command_env, run_cli, run_probed
from omegaconf import OmegaConf

from dfmx import registry
from dfmx.cli import plugin_configs
from dfmx.cli.config_store import node_for
from dfmx.cli.plugin_configs import (
    cache_file,
    decode_type,
    describe_node,
    encode_type,
    plugin_nodes,
    rebuild_node,
)


@pytest.mark.parametrize("tp", [int, float, bool, str, Any, list, dict, int | None,
                                list[str], tuple[int, ...], dict[str, float],
                                list[str] | None])
def test_types_survive_the_file(tp: Any) -> None:
    spec = encode_type(tp)
    assert spec is not None
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = decode_type(spec)
    assert OmegaConf.structured(dataclasses.make_dataclass("A", [("x", rebuilt)])) \
        .keys() == {"x"}


class _Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class _Inner:
    a: int = 1


@pytest.mark.parametrize("tp", [_Colour, _Inner, int | str, tuple[int, str]])
def test_types_the_file_cannot_hold_are_refused(tp: Any) -> None:
    assert encode_type(tp) is None


@dataclasses.dataclass
class _Options:
    k: int = 3
    ratio: float | None = None
    names: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])
    required: str = "???"
    table: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _NoDefault:
    k: int


def test_rebuilt_node_composes_like_the_original() -> None:
    for cls in (_Options, _NoDefault):
        fields = describe_node(cls)
        assert fields is not None
        rebuilt = rebuild_node(cls.__name__, json.loads(json.dumps(fields)))
        assert OmegaConf.to_yaml(OmegaConf.structured(rebuilt)) == \
            OmegaConf.to_yaml(OmegaConf.structured(cls))
        with pytest.raises(Exception, match="abc"):  # still typed
            OmegaConf.merge(OmegaConf.structured(rebuilt), {"k": "abc"})


def test_path_default_is_not_described() -> None:
    @dataclasses.dataclass
    class WithPath:
        where: Any = dataclasses.field(default_factory=lambda: Path("/x"))

    assert describe_node(WithPath) is None


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_every_installed_plugin_is_described_exactly(cache_dir: Path) -> None:
    nodes = plugin_nodes()
    data = json.loads(cache_file().read_text())
    for kind in registry.GROUPS:
        for name in registry.names(kind):
            assert f"{kind}:{name}" in data["entries"], (kind, name)
    again = plugin_nodes()  # from the file now
    for kind, by_name in again.items():
        for name, node in by_name.items():
            real = node_for(kind, name, registry.load(kind, name))
            assert OmegaConf.to_yaml(OmegaConf.structured(node)) == \
                OmegaConf.to_yaml(OmegaConf.structured(real)), (kind, name)
            assert node.__name__ == nodes[kind][name].__name__


def test_a_changed_source_file_is_imported_again(cache_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_nodes(["scorer"])
    path = cache_file()
    data = json.loads(path.read_text())
    entry = data["entries"]["scorer:fre"]
    entry["fields"] = [{"name": "name", "type": "str", "default": "stale"}]
    entry["sources"][0][1] -= 1  # an older modification time: the file changed since
    path.write_text(json.dumps(data))
    imported = []
    real_load = registry.load
    monkeypatch.setattr(plugin_configs.registry, "load",
                        lambda kind, name: imported.append(name) or real_load(kind, name))
    node = plugin_nodes(["scorer"])["scorer"]["fre"]
    assert imported == ["fre"]
    assert OmegaConf.structured(node).name == "fre"
    fresh = json.loads(path.read_text())["entries"]["scorer:fre"]
    src = fresh["sources"][0][0]
    assert fresh["sources"][0] == [src, os.stat(src).st_mtime_ns, os.stat(src).st_size]


def test_a_plugin_of_another_version_is_imported_again(cache_dir: Path) -> None:
    plugin_nodes(["pooling"])
    path = cache_file()
    data = json.loads(path.read_text())
    data["entries"]["pooling:avg"]["identity"]["dist"] = "dfmx 0.0.0"
    path.write_text(json.dumps(data))
    plugin_nodes(["pooling"])
    assert json.loads(path.read_text())["entries"]["pooling:avg"]["identity"]["dist"] \
        != "dfmx 0.0.0"


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "scorer=nll"],
                                  ["pca_levle=0.9"], ["scorer.n_neighbors=abc", "scorer=knn"],
                                  ["pca_level=1.5"],
                                  # job #0 is good: its plugins are not loaded before #1
                                  ["-m", "precision=fp32,fp16"]])
def test_quick_commands_do_not_import_torch(cache_dir: Path, args: list[str]) -> None:
    env = command_env(cache_dir)
    first = run_cli(["--help"], cache_dir, env, timeout=600)
    assert first.returncode == 0, first
    probe = run_probed(args, cache_dir, env)
    assert "probe: [] |" in probe.stderr, probe  # torch never imported
    assert not (cache_dir / "outputs").exists()


def test_the_tracking_process_starts_before_undescribed_plugins_are_imported(
        cache_dir: Path) -> None:
    """A first command (no described plugin configs yet) imports the plugins, and with
    them torch, to check its options: the tracking process is started before, so that its
    MLflow import runs beside theirs. Refused options leave no store behind all the same
    (the process, given no run, is stopped)."""
    assert not cache_file().exists()
    probe = run_probed(["pca_levle=0.9"], cache_dir, command_env(cache_dir),
                       at_torch_import="sys.modules['dfmx.tracking.run_process']._channel "
                                       "is not None")
    assert probe.returncode == 2, probe
    assert "probe: [True] |" in probe.stderr, probe  # the tracking process runs
    assert cache_file().exists()  # the plugins were imported, and are described now
    assert not (cache_dir / "mlflow.db").exists()


def test_a_profiler_still_writes_its_profile(cache_dir: Path) -> None:
    """The command ends with ``os._exit`` after its atexit handlers, except under a
    profiler or debugger, which write after the program returns."""
    env = command_env(cache_dir)
    profile = cache_dir / "help.prof"
    result = run_cli(["-o", str(profile), "-m", "dfmx", "--help"], cache_dir, env,
                     module="cProfile", timeout=600)
    assert result.returncode == 0, result
    assert "dfmx" in result.stdout
    stats = pstats.Stats(str(profile))
    assert any("dfmx/cli/app.py" in file for file, _, _ in stats.stats), "no dfmx frame"
