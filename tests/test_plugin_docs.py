"""``docs/plugins.md`` runs: its Python snippets, in order, as one script.

Each snippet keeps its line numbers in the page, so a failure's traceback points at the
line of the doc to fix.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_snippets(text: str) -> str:
    """The ```` ```python ```` blocks of a Markdown page as one script, every code line at
    its line number in the page (the rest blank)."""
    lines = [""] * (text.count("\n") + 1)
    for block in _BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1))
        for i, line in enumerate(block.group(1).splitlines()):
            lines[first + i] = line
    return "\n".join(lines)


def test_snippets_are_found() -> None:
    page = "text\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = x\n```\n"
    script = python_snippets(page)
    assert script.splitlines()[2] == "x = 1" and script.splitlines()[9] == "y = x"
    assert "ls" not in script


def test_plugin_docs_run(dfmx_cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """Every snippet of docs/plugins.md runs, asserts included (the demo data of the
    session's cache, the offline EfficientNet-Lite0)."""
    monkeypatch.setenv("DFMX_CACHE_DIR", str(dfmx_cache_dir))
    script = python_snippets(DOC.read_text(encoding="utf-8"))
    assert script.count("class MahalanobisScorer(Scorer)") == 1
    module = types.ModuleType("plugins_doc")  # a real module, as a pasted script would be
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(script, str(DOC), "exec", dont_inherit=True), module.__dict__)
    assert "Mahalanobis image AUROC on the demo data" in capsys.readouterr().out
