"""The layer order of the design guide holds: no module of dfmx imports a higher layer.

Layers, bottom up: foundations (the top-level modules: registry, memo, atomic, errors,
cache_dir) < data < features < metrics < engine < scorers < experiment < tracking < cli.
Every import counts, also one inside a function or under ``TYPE_CHECKING``: a lazy import
up a layer is still a dependency up a layer. The package's ``__init__`` (the public API,
which names classes of every layer) and ``__main__`` (the command line) stand above all.

The Hydra sweeper plugin ``hydra_plugins/dfmx_optuna_sweeper`` sits outside the package, a
thin adapter: it imports the standard library, Hydra, OmegaConf, Optuna and itself only.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import dfmx

LAYERS = ("foundations", "data", "features", "metrics", "engine", "scorers", "experiment",
          "tracking", "cli")
#: Modules above every layer: the public API facade and the ``python -m`` entry point.
TOP = ("__init__", "__main__")


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join([package, *parts])


def layer_of(module: str, package: str) -> int | None:
    """The layer index of ``module`` (a dotted name), ``None`` outside ``package`` or for
    the modules above every layer."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    if len(parts) == 1 or parts[1] in TOP:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else 0


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, imported module)`` of every import in ``tree``; relative ones resolved;
    ``from a import b`` counts as ``a.b`` (``b`` may be a module)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names]
    return found


def layer_violations(root: Path, package: str) -> list[str]:
    """``file:line: a (layer) imports b (layer)`` for every import up a layer under
    ``root``, the folder of ``package``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root, package)
        own = layer_of(module, package)
        if own is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in _imports(tree, module, path.name == "__init__.py"):
            other = layer_of(imported, package)
            if other is not None and other > own:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {module} "
                                f"({LAYERS[own]}) imports {imported} ({LAYERS[other]})")
    return problems


def test_no_module_of_dfmx_imports_a_higher_layer() -> None:
    root = Path(dfmx.__file__).parent
    assert layer_violations(root, "dfmx") == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("bad_import", [
    "from pkg.cli import app\n",
    "import pkg.tracking.callback\n",
    "def later():\n    from pkg.experiment.run import go\n",
    "from ..scorers import fre\n",
])
def test_the_check_catches_an_import_up_a_layer(tmp_path: Path, bad_import: str) -> None:
    """A deliberately bad package: its engine imports upward (top-level, lazily, relatively)."""
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": "from pkg.cli import app\n",  # the facade may import anything
        "registry.py": "",
        "data/__init__.py": "from pkg import registry\n",
        "engine/__init__.py": "",
        "engine/model.py": "from pkg.data import x\nfrom . import other\n" + bad_import,
        "scorers/__init__.py": "",
        "scorers/fre.py": "from pkg.engine.model import M\n",
        "experiment/run.py": "",
        "tracking/callback.py": "",
        "cli/app.py": "from pkg.tracking import callback\n",
    })
    problems = layer_violations(root, "pkg")
    assert len(problems) == 1, problems
    assert re.match(r"pkg/engine/model.py:[34]: pkg.engine.model \(engine\) imports", problems[0])


def test_the_check_passes_a_package_in_order(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    _write(root, {"__init__.py": "", "memo.py": "", "data/a.py": "from pkg import memo\n",
                  "cli/app.py": "from pkg.data import a\nfrom pkg.engine import b\n"})
    assert layer_violations(root, "pkg") == []


#: What the Optuna sweeper adapter may import (besides the standard library and itself).
ADAPTER_ALLOWED = ("hydra", "omegaconf", "optuna")
ADAPTER = Path(__file__).resolve().parents[1] / "hydra_plugins" / "dfmx_optuna_sweeper"


def foreign_imports(root: Path, package: str, allowed: tuple[str, ...]) -> list[str]:
    """``file:line: imported`` for every import under ``root`` (the folder of the dotted
    ``package``) of a module that is neither in the standard library, nor under one of
    ``allowed`` top-level names, nor in ``package`` itself."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root, package)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in _imports(tree, module, path.name == "__init__.py"):
            top = imported.split(".")[0]
            if (top in sys.stdlib_module_names or top in allowed or top == "__future__"
                    or imported.startswith(f"{package}.")):
                continue
            problems.append(f"{path.name}:{line}: {imported}")
    return problems


def test_the_optuna_sweeper_is_a_thin_adapter() -> None:
    assert sorted(p.name for p in ADAPTER.glob("*.py"))  # the check sees the files
    assert foreign_imports(ADAPTER, "hydra_plugins.dfmx_optuna_sweeper", ADAPTER_ALLOWED) == []


def test_the_adapter_check_catches_a_dfmx_import(tmp_path: Path) -> None:
    root = tmp_path / "adapter"
    _write(root, {"__init__.py": "", "a.py": "import json\nfrom hydra.core import plugins\n"
                  "from . import b\n", "b.py": "def f():\n    from dfmx.tracking import x\n"})
    assert foreign_imports(root, "pkg.adapter", ADAPTER_ALLOWED) == \
        ["b.py:2: dfmx.tracking.x"]
