"""How the backbone runs: frozen TorchScript graphs, torch.compile and the eager fallback."""

from __future__ import annotations

import contextlib
import copy
import pickle

import pytest
import torch
from torch import nn

from dfmx.features import FeatureExtractor
from dfmx.features.graph import GraphRunner, resolve_optimize


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_resolve_optimize() -> None:
    assert resolve_optimize("auto", "cpu") == "freeze"
    assert resolve_optimize("auto", "cuda") == "none"
    assert resolve_optimize(" Compile ", "cpu") == "compile"
    with pytest.raises(ValueError, match="choose one of auto, none, freeze, compile"):
        resolve_optimize("fast")


def _pair(backbone: str, layer: str, precision: str, optimize: str):
    fx = FeatureExtractor(backbone, layer, pre_trained=False, precision=precision,
                          optimize=optimize)
    eager = FeatureExtractor(backbone, layer, pre_trained=False, precision=precision,
                             optimize="none")
    eager.load_state_dict(fx.state_dict())
    return fx, eager


@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-5), ("bf16", 1e-2)])
def test_frozen_graph_matches_eager_and_serves_every_batch_size(precision, tol) -> None:
    fx, eager = _pair("resnet18", "layer3", precision, "freeze")
    assert fx.optimize == "freeze"
    x = torch.rand(7, 3, 64, 64)
    for n in (4, 7, 1):
        assert _rel(fx(x[:n])["layer3"], eager(x[:n])["layer3"]) < tol
    assert len(fx._runner._graphs) == 1  # traced once, reused for every batch size
    fx(torch.rand(2, 3, 96, 96))
    assert len(fx._runner._graphs) == 2  # a new image size gets its own graph


def test_frozen_efficientnet_matches_eager() -> None:
    """BatchNorm folding changes rounding only: fp32 to 1e-5, bf16 to a few 1e-3."""
    x = torch.rand(3, 3, 64, 64)
    for precision, tol in (("fp32", 1e-5), ("bf16", 2e-2)):
        fx, eager = _pair("efficientnet_lite0", "blocks.4", precision, "freeze")
        assert _rel(fx(x)["blocks.4"], eager(x)["blocks.4"]) < tol


def test_graphs_are_rebuilt_when_weights_change() -> None:
    fx = FeatureExtractor("resnet18", "layer3", pre_trained=False)
    assert fx.optimize == "freeze"  # auto on the CPU
    x = torch.rand(2, 3, 64, 64)
    fx(x)
    assert fx._runner._graphs
    other = FeatureExtractor("resnet18", "layer3", pre_trained=False, optimize="none")
    torch.manual_seed(1)
    for p in other.parameters():
        p.data.normal_()
    fx.load_state_dict(other.state_dict())
    assert not fx._runner._graphs
    assert _rel(fx(x)["layer3"], other(x)["layer3"]) < 1e-5
    fx(x)
    fx.to(torch.device("cpu"))
    assert not fx._runner._graphs


def test_copies_drop_built_graphs_and_still_work() -> None:
    fx, eager = _pair("resnet18", "layer3", "fp32", "freeze")
    x = torch.rand(2, 3, 64, 64)
    fx(x)
    for clone in (copy.deepcopy(fx), pickle.loads(pickle.dumps(fx))):
        assert not clone._runner._graphs
        assert _rel(clone(x)["layer3"], eager(x)["layer3"]) < 1e-5


class _Untraceable(nn.Module):
    """Returns a non-tensor, which ``torch.jit.trace`` refuses."""

    def forward(self, x: torch.Tensor):
        return [x * 2, "not a tensor"]


def test_untraceable_net_falls_back_to_eager_with_a_warning() -> None:
    runner = GraphRunner(_Untraceable().eval(), "freeze")
    with pytest.warns(RuntimeWarning, match="tracing/freezing of the backbone failed"):
        out = runner(torch.ones(2, 3))
    assert runner.mode == "none"
    assert torch.equal(out[0], torch.full((2, 3), 2.0))


def _fusion_groups() -> int:
    """oneDNN Graph partitions in the graph this thread ran last (nested blocks included)."""
    return len(torch.jit.last_executed_optimized_graph().findAllNodes("prim::oneDNNFusionGroup"))


def _has_onednn_graph() -> bool:
    """Whether this torch build has oneDNN Graph (x86-64 Linux builds do; without it the
    switch is a no-op that stays off)."""
    if not hasattr(torch.jit, "enable_onednn_fusion"):
        return False
    torch.jit.enable_onednn_fusion(True)
    try:
        return torch.jit.onednn_fusion_enabled()
    finally:
        torch.jit.enable_onednn_fusion(False)


@pytest.mark.skipif(not _has_onednn_graph(), reason="this torch build has no oneDNN Graph")
def test_cpu_graphs_run_with_onednn_fusion_and_restore_the_switch() -> None:
    """oneDNN Graph fusion takes over the convolutions from the second call of a shape on
    (the first one profiles), with the same features; torch's process-wide switch is
    back off afterwards."""
    fx, eager = _pair("resnet18", "layer3", "fp32", "freeze")
    x = torch.rand(4, 3, 64, 64)
    for _ in range(3):
        assert _rel(fx(x)["layer3"], eager(x)["layer3"]) < 1e-5
    assert _fusion_groups() > 0
    assert not torch.jit.onednn_fusion_enabled()
    unfused = GraphRunner(fx._runner.net, "freeze", onednn_fusion=False)
    for _ in range(3):
        unfused(x)
    assert _fusion_groups() == 0


def test_failed_fusion_reruns_the_graph_without_it(monkeypatch) -> None:
    import dfmx.features.graph as graph_module

    @contextlib.contextmanager
    def broken():
        raise RuntimeError("no partition for this op")
        yield

    fx, eager = _pair("resnet18", "layer3", "fp32", "freeze")
    monkeypatch.setattr(graph_module, "_onednn_fusion", broken)
    x = torch.rand(2, 3, 64, 64)
    with pytest.warns(RuntimeWarning, match="oneDNN Graph fusion .* failed .*no partition"):
        out = fx(x)["layer3"]
    assert _rel(out, eager(x)["layer3"]) < 1e-5
    assert fx._runner.onednn_fusion is False and fx._runner.mode == "freeze"
    assert fx._runner._graphs  # rebuilt, and used from now on without the broken switch
    assert _rel(fx(x)["layer3"], eager(x)["layer3"]) < 1e-5


class _BatchBaked(nn.Module):
    """Reads the batch size as a Python number: the tracer bakes it in and warns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(torch.tensor(x.shape[0]))


def test_batch_baked_graphs_are_retraced_on_the_whole_batch_and_kept_per_size() -> None:
    """Graphs are first traced on two images; where the tracer warns, the whole batch is
    traced instead and the graph only serves that batch size."""
    runner = GraphRunner(_BatchBaked().eval(), "freeze")
    x = torch.ones(8, 3)
    for n in (8, 3, 8, 2):
        assert torch.equal(runner(x[:n]), torch.full((n, 3), float(n))), n
    assert sorted(key[-1] for key in runner._graphs) == [2, 3, 8]
    plain = GraphRunner(nn.Sequential(nn.Linear(3, 3)).eval(), "freeze")
    plain(x)
    assert len(plain._graphs) == 1  # no warning: one graph for every batch size


def test_compiled_net_pads_partial_batches_and_chunks_large_ones() -> None:
    """torch.compile (Inductor, a real C++ build) compiles once for the first batch size."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, stride=2)).eval().requires_grad_(False)
    eager = GraphRunner(net, "none")
    runner = GraphRunner(net, "compile")
    x = torch.rand(11, 3, 16, 16)
    expected = eager(x[:4])
    assert runner(x[:4]).shape == (4, 4, 7, 7)
    assert runner.mode == "compile" and runner._compiled_batch == 4
    for n in (4, 3, 11):  # equal, padded, and chunked 4 + 4 + 3 (padded)
        out = runner(x[:n])
        assert out.shape == (n, 4, 7, 7)
        assert _rel(out, eager(x[:n])) < 1e-5
    assert _rel(runner(x[:4]), expected) < 1e-5


def test_cpu_batches_run_in_micro_batches() -> None:
    fx = FeatureExtractor("resnet18", ["layer2", "layer3"], pre_trained=False)
    assert fx.micro_batch == 8
    sizes: list[int] = []
    runner = fx._runner

    def spy(x: torch.Tensor):
        sizes.append(x.shape[0])
        return runner(x)

    fx._runner = spy
    x = torch.rand(19, 3, 64, 64)
    out = fx(x)
    assert sizes == [8, 8, 3]
    fx.micro_batch = 64
    whole = fx(x)
    assert sizes[3:] == [19]
    for name in ("layer2", "layer3"):
        assert out[name].shape == whole[name].shape and out[name].is_contiguous()
        assert _rel(out[name], whole[name]) < 1e-5

