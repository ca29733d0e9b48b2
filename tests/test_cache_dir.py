"""Tests of dfmx's cache folder setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfmx.cache_dir import default_cache_dir


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.setenv("DFMX_CACHE_DIR", "")
    assert default_cache_dir() == Path.home() / ".cache" / "dfmx"
    monkeypatch.delenv("DFMX_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "dfmx"
