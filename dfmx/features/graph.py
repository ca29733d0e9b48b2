"""How the backbone's forward runs: eager, a frozen TorchScript graph, or torch.compile.

``optimize`` names the mode:

* ``none``: eager PyTorch.
* ``freeze``: ``torch.jit.trace`` then ``torch.jit.freeze``. Freezing inlines the weights
  as constants, folds BatchNorm into the convolutions where it can, fuses convolution +
  add + ReLU into oneDNN post-ops and prepacks the weights once instead of reordering them
  on every call. On a CPU the frozen graph then runs with oneDNN Graph fusion
  (``torch.jit.enable_onednn_fusion``, switched on only around dfmx's own calls): it hands
  whole convolution + activation (+ add) partitions to oneDNN, which picks their kernels
  and layouts together, which makes the frozen graph faster in fp32 and bf16
  (``benchmarks/test_extraction_speed.py``; figures in ``docs/performance.md``). ResNets
  and EfficientNet-Lites give bit-identical features with and without it; nets with SiLU
  or squeeze-excitation differ by bf16 rounding (~1e-2 relative in bf16, ~1e-6 in fp32).
  The trace records the net's weights as constants through a thin wrapper instead of
  building a ScriptModule per submodule, which keeps tracing and freezing short. Features
  change only by rounding against
  eager: ResNets in bf16 not at all, EfficientNets by ~7e-3 relative in bf16 because the
  folded BatchNorm rounds differently (AUROC within 0.001,
  ``benchmarks/test_bf16_accuracy.py``), and fp32 by ~1e-7.
* ``compile``: ``torch.compile`` (Inductor, with weight freezing). It needs a C++ compiler
  and tens of seconds to compile (less when Inductor's on-disk cache already holds the
  graph). In ``benchmarks/test_extraction_speed.py`` it is slower than ``freeze`` with
  fusion on a CPU, so it is an option for long extractions on machines where it measures
  faster. Partial batches are padded to the batch size it was compiled for, so that the
  last batch of a split does not compile a second graph.
  A frozen CPU graph of weights read from a file is kept on disk
  (:mod:`dfmx.features.prepared`): a later process loads it instead of tracing, and
  needs no net for it.
* ``auto``: ``freeze`` on the CPU, ``none`` elsewhere (cuDNN's eager kernels are already
  fused enough, and a GPU is rarely the bottleneck at these batch sizes).

``torch.jit`` is deprecated in favour of ``torch.compile``: when tracing or freezing fails
(a model TorchScript cannot trace, or a torch without ``torch.jit``), the backbone runs
eagerly and a warning says why. The same holds for ``compile``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from dfmx.backbone_modes import OPTIMIZATIONS, optimize_key
from dfmx.errors import ConfigError
from dfmx.features.prepared import Graph, PreparedNet

Forward = Callable[[torch.Tensor], object]


class _Closure(nn.Module):
    """Calls ``net`` without owning it. Tracing this records ``net``'s weights as graph
    constants (what freezing does anyway) instead of building a ScriptModule for each of
    its submodules, which is most of a trace's time (EfficientNet-Lite0 has 183)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self._net = (net,)  # in a tuple: not registered as a submodule

    def forward(self, x: torch.Tensor) -> object:
        return self._net[0](x)


def _traceable(net: nn.Module) -> nn.Module:
    """What to trace: the closure, unless a weight needs gradients (the tracer refuses to
    make such a tensor a constant; the net itself is traced then)."""
    if any(p.requires_grad for p in net.parameters()):
        return net
    return _Closure(net)


@contextlib.contextmanager
def _onednn_fusion() -> Iterator[None]:
    """oneDNN Graph fusion of TorchScript graphs on for the block. torch's switch is
    process-wide: it is put back afterwards, so other TorchScript code keeps its setting."""
    get = getattr(torch.jit, "onednn_fusion_enabled", None)
    set_ = getattr(torch.jit, "enable_onednn_fusion", None)
    if get is None or set_ is None or get():
        yield
        return
    set_(True)
    try:
        yield
    finally:
        set_(False)


def resolve_optimize(name: str, device: str | torch.device = "cpu") -> str:
    """Resolve an ``optimize`` name to ``"none"``, ``"freeze"`` or ``"compile"``.

    Raises:
        ValueError: an unknown name; the message lists the choices.
    """
    key = optimize_key(name)
    if key is None:
        raise ConfigError(
            f"Unknown optimize mode {name!r}; choose one of {', '.join(OPTIMIZATIONS)}."
        )
    if key != "auto":
        return key
    return "freeze" if torch.device(device).type == "cpu" else "none"


class GraphRunner:
    """Runs ``net`` on a batch in the chosen mode, building graphs lazily per input shape.

    A frozen graph is keyed by the per-image shape ``(C, H, W)`` and dtype: the tracer
    records the batch size as a dynamic ``size()`` and convolution networks have no other
    batch dependence. If tracing warns that a value was baked in (``TracerWarning``), the
    batch size joins the key, so a graph is never reused where it could be wrong.

    A CPU graph is looked up in ``store`` (a :class:`~dfmx.features.prepared.PreparedNet`
    of the net's weights) before it is traced, and kept there once traced, so that a later
    process finds it without building the net.

    Args:
        net: the backbone, in eval mode, with ``requires_grad`` off; or a function that
            returns it, called when the net is first needed (not when every graph comes
            from ``store``).
        mode: ``"none"``, ``"freeze"`` or ``"compile"`` (see :func:`resolve_optimize`).
        autocast: the dtype to run under ``torch.autocast`` (on the input's device), or
            ``None`` for none.
        onednn_fusion: run frozen graphs on a CPU with oneDNN Graph fusion.
        store: where frozen CPU graphs of these weights are kept, or ``None``.
    """

    def __init__(self, net: nn.Module | Callable[[], nn.Module], mode: str,
                 autocast: torch.dtype | None = None, onednn_fusion: bool = True,
                 store: PreparedNet | None = None) -> None:
        if mode not in ("none", "freeze", "compile"):
            raise ConfigError(f"mode must be 'none', 'freeze' or 'compile', got {mode!r}")
        self._net = net
        self.mode = mode
        self.autocast = autocast
        self.onednn_fusion = onednn_fusion
        self.store = store
        self._graphs: dict[tuple, Graph] = {}
        self._compiled: Forward | None = None
        self._compiled_batch = 0

    @property
    def net(self) -> nn.Module:
        """The backbone (built now where ``net`` was given as a function)."""
        return self._net if isinstance(self._net, nn.Module) else self._net()

    def reset(self) -> None:
        """Forget built graphs (they hold the weights as constants), and the store (its
        graphs hold the old ones): call after the net's weights, device or dtype change."""
        self._graphs.clear()
        self._compiled = None
        self._compiled_batch = 0
        self.store = None

    def __getstate__(self) -> dict:
        """Pickle/deepcopy without the built graphs; they are rebuilt on first use."""
        state = dict(self.__dict__)
        state.update(_graphs={}, _compiled=None, _compiled_batch=0)
        return state

    @contextlib.contextmanager
    def _context(self, device: torch.device) -> Iterator[None]:
        with torch.inference_mode():
            if self.autocast is None:
                yield
            else:
                with torch.autocast(device_type=device.type, dtype=self.autocast):
                    yield

    def _fall_back(self, what: str, err: BaseException) -> None:
        warnings.warn(
            f"dfmx: {what} of the backbone failed ({type(err).__name__}: {err}); "
            "running it eagerly instead (optimize=none).",
            RuntimeWarning,
            stacklevel=3,
        )
        self.mode = "none"

    def _freeze(self, x: torch.Tensor) -> Graph | None:
        """A frozen graph for ``x``'s image shape and the batch size it is limited to.

        Traced on two of the images (the trace runs the net once, so a small batch keeps
        it short, and batch 1 is avoided because it is the one size where a squeeze could drop
        the batch dimension unnoticed); if the tracer warns that a value was baked in, it
        is traced again on all of ``x`` and kept for that batch size only.
        """
        tracer_warning = getattr(torch.jit, "TracerWarning", ())

        def trace(sample: torch.Tensor, caught: list) -> tuple[torch.jit.ScriptModule, bool]:
            caught.clear()
            traced = torch.jit.trace(_traceable(self.net), sample, check_trace=False,
                                    strict=False)
            return traced, any(issubclass(w.category, tracer_warning) for w in caught)

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # torch.jit's deprecation warnings too
                traced, batch_specific = trace(x[:2], caught)
                if batch_specific and x.shape[0] > 2:
                    traced, batch_specific = trace(x, caught)
                frozen = torch.jit.freeze(traced.eval())
        except Exception as err:  # any failure (untraceable model, no torch.jit): eager
            self._fall_back("tracing/freezing", err)
            return None
        return frozen, x.shape[0] if batch_specific else None

    def _run_compiled(self, x: torch.Tensor) -> object | None:
        """The compiled net on ``x`` in chunks of the compiled batch size, the last one
        padded with zeros (eval-mode CNNs treat images independently)."""
        if self._compiled is None:
            try:
                self._compiled = torch.compile(self.net, dynamic=False,
                                               options={"freezing": True})
                self._compiled_batch = x.shape[0]
                return self._compiled(x)
            except Exception as err:  # no C++ compiler, an unsupported op, ...: eager
                self._compiled = None
                self._fall_back("torch.compile", err)
                return None
        size, n = self._compiled_batch, x.shape[0]
        if n == size:
            return self._compiled(x)
        parts = []
        for start in range(0, n, size):
            chunk = x[start:start + size]
            real = chunk.shape[0]
            if real < size:
                pad = chunk.new_zeros((size - real, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad]).contiguous(memory_format=_format_of(x))
            parts.append(_head(self._compiled(chunk), real))
        if isinstance(parts[0], torch.Tensor):
            return torch.cat(parts)
        return [torch.cat(level) for level in zip(*parts, strict=True)]

    def __call__(self, x: torch.Tensor) -> object:
        """``net(x)`` in the runner's mode (under ``inference_mode`` and the autocast)."""
        with self._context(x.device):
            if self.mode == "compile":
                out = self._run_compiled(x)
                if out is not None:
                    return out
            if self.mode == "freeze":
                shape = (tuple(x.shape[1:]), x.dtype, x.device)
                graph = self._graphs.get(shape) or self._graphs.get((*shape, x.shape[0]))
                if graph is None:
                    graph = self._kept_or_new_graph(x)
                    if graph is not None:
                        key = (*shape, x.shape[0]) if graph[1] is not None else shape
                        self._graphs[key] = graph
                if graph is not None:
                    return self._run_frozen(graph[0], x)
            return self.net(x)

    def _kept_or_new_graph(self, x: torch.Tensor) -> Graph | None:
        """The store's graph for ``x`` (where it holds for ``x``'s batch size), else a new
        one, kept in the store."""
        if self.store is None or x.device.type != "cpu":
            return self._freeze(x)
        key = self.store.graph_key(x, self.autocast, _format_of(x))
        graph = self.store.load_graph(key)
        if graph is not None and graph[1] in (None, x.shape[0]):
            return graph
        graph = self._freeze(x)
        if graph is not None:
            self.store.save_graph(key, graph)
        return graph

    def _run_frozen(self, graph: Forward, x: torch.Tensor) -> object:
        """A frozen graph on ``x``, with oneDNN Graph fusion on a CPU. If a fused call
        fails, the graphs are rebuilt and run without fusion from then on (with a warning);
        if that fails too, the error was not fusion's and fusion stays on."""
        if not (self.onednn_fusion and x.device.type == "cpu"):
            return graph(x)
        try:
            with _onednn_fusion():
                return graph(x)
        except Exception as err:
            self._graphs.clear()
            self.onednn_fusion = False
            try:
                out = self(x)
            except Exception:
                self.onednn_fusion = True
                raise
            warnings.warn(
                f"dfmx: oneDNN Graph fusion of the frozen backbone failed ({type(err).__name__}: "
                f"{err}); running the frozen graph without it.",
                RuntimeWarning,
                stacklevel=3,
            )
            return out


def _head(out: object, n: int) -> object:
    """The first ``n`` items of a net's output: a tensor or a list/tuple of tensors."""
    if isinstance(out, torch.Tensor):
        return out[:n]
    return [t[:n] for t in out]


def _format_of(x: torch.Tensor) -> torch.memory_format:
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
