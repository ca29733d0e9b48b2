"""Shared fixtures for the feature-extraction tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point the Hugging Face and torch hub caches at empty temporary folders, no downloads."""
    hf_home = tmp_path / "hf_home"
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.delenv("DFMX_ALLOW_DOWNLOAD", raising=False)
    return {"hf_hub": hf_home / "hub", "torch_hub": torch_home / "hub"}


@pytest.fixture
def images() -> torch.Tensor:
    """A small batch of RGB images in [0, 1], shape (2, 3, 64, 64)."""
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
