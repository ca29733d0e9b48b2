"""The file checks' results kept for later processes (``dfmx.data.kept_checks``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfmx.data import Sample, kept_checks, validate_samples

#: Run in a fresh interpreter: checks the samples of ``argv[1]`` (a JSON list of paths)
#: and prints the results and how many files PIL opened.
CHECK_SCRIPT = """
import json, sys
from pathlib import Path
from PIL import Image
from dfmx.data import Sample, validate_samples
opened = []
real_open = Image.open
Image.open = lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k)
good, skipped = validate_samples(
    [Sample(Path(p), 0, "good") for p in json.loads(sys.argv[1])])
print(json.dumps({"good": [str(s.path) for s in good],
                  "skipped": [[str(s.path), s.reason] for s in skipped], "opened": opened}))
"""


def _png(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    paths = [_png(folder / f"{i}.png", i) for i in range(3)]
    broken = folder / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:60])
    return [*paths, broken]


def _forget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing remembered in memory: this process as a new one would be."""
    monkeypatch.setattr(kept_checks, "_folders", {})


@pytest.fixture
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cache folder of the test's."""
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "cache"))


def _check(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> tuple[list, list[str]]:
    """``validate_samples`` as a new process runs it: the skipped files and the files
    PIL opened."""
    _forget(monkeypatch)
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open",
                        lambda p, *a, **k: opened.append(Path(p).name) or real_open(p, *a, **k))
    _, skipped = validate_samples([Sample(p, 0, "good") for p in paths])
    return [(s.path.name, s.reason) for s in skipped], sorted(opened)


def test_a_later_process_checks_no_file_again(images: list[Path], tmp_path: Path) -> None:
    env = {**os.environ, "DFMX_CACHE_DIR": str(tmp_path / "cache")}
    argv = [sys.executable, "-c", CHECK_SCRIPT, json.dumps([str(p) for p in images])]
    first, second = (json.loads(subprocess.run(argv, env=env, capture_output=True, text=True,
                                               check=True, timeout=300).stdout)
                     for _ in range(2))
    assert len(first["opened"]) == len(images)
    assert second["opened"] == []
    assert second["good"] == first["good"] == [str(p) for p in images[:3]]
    assert second["skipped"] == first["skipped"]
    assert first["skipped"][0][1].startswith("corrupt image")


def test_files_changed_since_are_checked_again(images: list[Path], own_cache: None,
                                                monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    skipped, opened = _check(images, monkeypatch)
    assert len(opened) == len(images) and len(skipped) == 1
    # Rewritten in place with its size and times put back: the status-change time differs.
    first, second, _, broken = images
    bad = broken.read_bytes()
    st = first.stat()
    first.write_bytes(bad.ljust(st.st_size, b"\0"))
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert first.stat().st_size == st.st_size
    # Replaced by renaming another file of the same size and times over it: a new inode.
    st = second.stat()
    other = tmp_path / "other.png"
    other.write_bytes(bad.ljust(st.st_size, b"\0"))
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    other.replace(second)
    # Fixed: a valid image now.
    _png(broken, 9)
    skipped, opened = _check(images, monkeypatch)
    assert opened == sorted(["0.png", "1.png", "broken.png"])
    assert [name for name, _ in skipped] == ["0.png", "1.png"]
    assert _check(images, monkeypatch) == (skipped, [])


def test_damaged_or_foreign_records_are_misses(images: list[Path], own_cache: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    expected, _ = _check(images, monkeypatch)
    records = sorted((Path(os.environ["DFMX_CACHE_DIR"]) / "checked-files").glob("*.json"))
    assert len(records) == 1
    records[0].write_text("{not json")
    assert _check(images, monkeypatch) == (expected, sorted(p.name for p in images))
    # A record naming another folder (a hash collision, a copied cache) is not used.
    data = json.loads(records[0].read_text())
    data["folder"] = "/elsewhere"
    records[0].write_text(json.dumps(data))
    assert _check(images, monkeypatch) == (expected, sorted(p.name for p in images))
    # Checks with decode=True are kept apart from checks without.
    _, opened = _check(images, monkeypatch)
    assert opened == []
    _forget(monkeypatch)
    validate_samples([Sample(p, 0, "good") for p in images], decode=True)
    assert len(list(records[0].parent.glob("*.json"))) == 2


def test_an_unwritable_cache_folder_costs_only_the_checks(images: list[Path],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DFMX_CACHE_DIR", str(blocker))
    first = _check(images, monkeypatch)
    assert _check(images, monkeypatch) == first and len(first[1]) == len(images)


def test_kept_records_are_bounded_least_recently_used_first(
        tmp_path: Path, own_cache: None, monkeypatch: pytest.MonkeyPatch) -> None:
    folders = []
    for i in range(3):
        folder = tmp_path / f"set{i}"
        folder.mkdir()
        folders.append([_png(folder / f"{j}.png", j) for j in range(4)])
    _check(folders[0], monkeypatch)
    root = Path(os.environ["DFMX_CACHE_DIR"]) / "checked-files"
    (record,) = root.glob("*.json")
    monkeypatch.setattr(kept_checks, "KEPT_RECORD_BYTES", record.stat().st_size * 5 // 2)
    os.utime(record, ns=(1, 1))  # long unused ...
    _check(folders[1], monkeypatch)
    assert _check(folders[0], monkeypatch)[1] == []  # ... until read: used now
    _check(folders[2], monkeypatch)  # a third record: the least recently used goes
    assert len(list(root.glob("*.json"))) == 2
    assert _check(folders[0], monkeypatch)[1] == []
    assert _check(folders[2], monkeypatch)[1] == []
    assert len(_check(folders[1], monkeypatch)[1]) == 4
