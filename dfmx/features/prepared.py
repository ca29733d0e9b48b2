"""Prepared backbones: what building a pretrained backbone taught one process, kept for the
next, so that a command whose backbone was built before runs it without importing timm
(about 2 s of a 2-core machine's critical path) or building the net.

Kept under ``$DFMX_CACHE_DIR/backbones/``:

* ``timm-<version>/<timm name>.json``, a :class:`Description`: the backbone's feature
  levels (module name, position, channels, stride) and its input normalisation, as timm
  gives them;
* one folder for each truncated net and its weights (timm name, output levels, the
  weights' source and the identity of its file, torch and timm versions, the code that
  builds and traces nets; see :meth:`PreparedNet.find`): ``weights.json`` (the source
  and the SHA-256 of the net's state dict) and the net's frozen TorchScript graphs,
  ``graph-<key>.pt`` with ``graph-<key>.json`` (the graph file's SHA-256 and the batch
  size it is limited to, if any), one for each image shape, dtype, precision and memory
  layout the net ran on.

Only nets whose weights come from a file (an explicit one or a weights package's) are
prepared: the file's size, times and inode say when the weights changed. Random weights
and timm's own caches are built every time. A file that is missing, unreadable or not what
its record says is a miss: the net is built and the file written again. Files are written
whole (:mod:`dfmx.atomic`), and a graph's record after its file, so a process sees a
record and its graph or a miss; a cache folder that cannot be written costs speed only.
The graphs take at most :data:`KEPT_GRAPH_BYTES`, the least recently used removed first.
Removing the folder is always safe. The graphs are TorchScript programs that dfmx runs:
like the rest of the cache folder, it is the user's own, not a folder to share.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfmx.atomic import atomic_write_bytes
from dfmx.cache_dir import default_cache_dir, evict_least_recent, read_record, write_record

FORMAT = 1

__all__ = ["Description", "PreparedNet", "read_description", "timm_version",
           "write_description"]


def _root() -> Path:
    return default_cache_dir() / "backbones"


@functools.cache
def _code_sha256() -> str:
    """What the kept nets and graphs were made by: the modules that build, load and trace
    them (a change to any of them makes new entries)."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("backbones.py", "graph.py", "weights.py", "prepared.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


@functools.cache
def timm_version() -> str:
    """timm's installed version, read without importing timm."""
    return importlib.metadata.version("timm")


def _key(parts: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Description:
    """What timm says of a backbone, whatever its weights and output levels."""

    layers: tuple[tuple[str, int, int, int], ...]
    """``(module name, feature_info position, channels, stride)``, shallow to deep."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


def _description_path(timm_name: str) -> Path | None:
    """Where the description of ``timm_name`` is kept; ``None`` for a name that is not a
    plain file name (such a model is described anew each time)."""
    if "/" in timm_name or timm_name.startswith("."):
        return None
    return _root() / f"timm-{timm_version()}" / f"{timm_name}.json"


def read_description(timm_name: str) -> Description | None:
    """The kept description of ``timm_name`` for the installed timm, else ``None``."""
    path = _description_path(timm_name)
    data = read_record(path, FORMAT) if path is not None else None
    if data is None:
        return None
    try:
        return Description(
            layers=tuple((str(m), int(i), int(c), int(r)) for m, i, c, r in data["layers"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data["interpolation"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_description(timm_name: str, description: Description) -> None:
    """Keep ``description`` for the next process (nothing if the cache cannot be written)."""
    path = _description_path(timm_name)
    if path is not None:
        write_record(path, {"layers": [list(row) for row in description.layers],
                            "mean": list(description.mean), "std": list(description.std),
                            "interpolation": description.interpolation}, FORMAT)


#: The most bytes of graphs kept under the cache folder, the least recently used removed
#: first: each holds its net's weights (EfficientNet-Lite0 to ``blocks.4`` 2.8 MB,
#: Wide-ResNet-50 to ``layer3`` about 100 MB), one for each image shape and precision.
KEPT_GRAPH_BYTES = 2 << 30

#: A frozen graph and the batch size it is limited to (``None``: any).
Graph = tuple[Callable[[torch.Tensor], object], int | None]


class PreparedNet:
    """The kept record of one truncated net with weights from a file, and its graphs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        record = read_record(folder / "weights.json", FORMAT) or {}
        #: The weights' source (as ``load_pretrained`` names it) and the SHA-256 of the
        #: net's state dict, once a process has built the net; else ``None``.
        self.weights_source: str | None = record.get("source")
        self.fingerprint: str | None = record.get("fingerprint")

    @classmethod
    def find(cls, timm_name: str, out_indices: Sequence[int],
             weights: tuple[str, Path] | None) -> PreparedNet | None:
        """The entry of ``timm_name`` with outputs ``out_indices`` and ``weights``
        (``(source, file)``: see :func:`dfmx.features.weights.weights_file_source`);
        ``None`` where the weights have no file or the file cannot be read."""
        if weights is None:
            return None
        source, path = weights
        try:
            st = path.stat()
        except OSError:
            return None
        key = _key([FORMAT, _code_sha256(), torch.__version__, timm_version(), timm_name,
                    list(out_indices), source, str(path), st.st_size, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_ino])
        return cls(_root() / key)

    def record(self, source: str, fingerprint: str) -> None:
        """Keep the weights' source and fingerprint of the net just built."""
        self.weights_source, self.fingerprint = source, fingerprint
        write_record(self.folder / "weights.json",
                     {"source": source, "fingerprint": fingerprint}, FORMAT)

    @staticmethod
    def graph_key(x: torch.Tensor, autocast: torch.dtype | None,
                  memory_format: torch.memory_format) -> str:
        """The key of the graph that runs on ``x``'s images."""
        return _key([list(x.shape[1:]), str(x.dtype), str(autocast), str(memory_format),
                     x.device.type])

    def load_graph(self, key: str) -> Graph | None:
        """The kept graph under ``key``, or ``None`` (also for a damaged one)."""
        record = read_record(self.folder / f"graph-{key}.json", FORMAT)
        path = self.folder / f"graph-{key}.pt"
        if record is None or self.fingerprint is None:
            return None
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != record.get("sha256"):
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
                graph = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception:  # a damaged or unreadable file is a miss
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the last to go
        batch = record.get("batch_size")
        return graph, int(batch) if batch is not None else None

    def save_graph(self, key: str, graph: Graph) -> None:
        """Keep ``graph`` (a frozen ``ScriptModule`` and its batch size limit)."""
        module, batch = graph
        if self.fingerprint is None:
            return
        path, buffer = self.folder / f"graph-{key}.pt", io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.save(module, buffer)
            atomic_write_bytes(path, buffer.getvalue())
        except Exception:  # a full disk, a graph TorchScript cannot save: not kept
            return
        write_record(self.folder / f"graph-{key}.json",
                     {"sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                      "batch_size": batch}, FORMAT)
        evict_least_recent(self.folder.parent.glob("*/graph-*.pt"), KEPT_GRAPH_BYTES,
                           keep={path}, record_of=lambda graph: graph.with_suffix(".json"))
