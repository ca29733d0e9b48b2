"""Tests of the atomic-write helper: all or nothing, no leftovers, the umask's file mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dfmx.atomic import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_whole_files_and_leaves_nothing_beside_them(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01", fsync=True)
    with atomic_open(tmp_path / "c.csv", newline="") as fh:
        fh.write("x\r\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.csv").read_bytes() == b"x\r\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.bin", "c.csv", "sub"]


@pytest.mark.parametrize("writer", ["open", "path"])
def test_a_failing_write_keeps_the_old_file_and_removes_its_temporary(
        tmp_path: Path, writer: str) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        if writer == "open":
            with atomic_open(target) as fh:
                fh.write("half")
                raise RuntimeError("disk on fire")
        else:
            with atomic_path(target) as tmp:
                tmp.write_text("half")
                raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_mode_follows_the_umask_like_a_plain_open(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "atomic.txt", "x")
        with atomic_path(tmp_path / "by_path.png") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "plain.txt") == 0o640
    assert _mode(tmp_path / "atomic.txt") == 0o640
    assert _mode(tmp_path / "by_path.png") == 0o640


def test_a_writer_that_makes_its_own_private_file_still_gets_the_umask_mode(
        tmp_path: Path) -> None:
    """safetensors.save_file replaces the temporary file with a 0600 one of its own."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "t.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "t.safetensors") == 0o644


def test_a_process_with_umask_022_writes_0644_files(tmp_path: Path) -> None:
    code = ("import os, sys; os.umask(0o022); from dfmx.atomic import atomic_write_text; "
            "atomic_write_text(sys.argv[1], 'x')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.txt")], check=True,
                   timeout=120)
    assert _mode(tmp_path / "f.txt") == 0o644


def test_mode_gives_the_file_those_bits_whatever_the_umask(tmp_path: Path) -> None:
    seen = []
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "text.yaml", "x", mode=0o640)
        atomic_write_bytes(tmp_path / "private.bin", b"x", mode=0o600)
        with atomic_open(tmp_path / "open.txt", file_mode=0o604) as fh:
            fh.write("x")
        with atomic_path(tmp_path / "by_path.txt", mode=0o660) as tmp:
            seen.append(_mode(tmp))  # set before anything is written
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert seen == [0o660]
    assert _mode(tmp_path / "text.yaml") == 0o640
    assert _mode(tmp_path / "private.bin") == 0o600
    assert _mode(tmp_path / "open.txt") == 0o604
    assert _mode(tmp_path / "by_path.txt") == 0o660
    assert (tmp_path / "text.yaml").read_text() == "x"
