"""The embedded demo data set: determinism, layout, masks, cache and concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfmx.data import demo
from dfmx.data.demo import (
    DEMO_CATEGORY,
    DEMO_COUNTS,
    DEMO_DEFECTS,
    DEMO_VERSION,
    MARKER_NAME,
    demo_root,
    generate_demo,
    render_demo_image,
)


def _tree(root: Path) -> dict[str, bytes]:
    """Relative path → bytes of every file under ``root``."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_generation_is_deterministic(demo_dir: Path, tmp_path: Path) -> None:
    generate_demo(tmp_path)
    first = _tree(demo_dir / DEMO_CATEGORY)
    second = _tree(tmp_path / DEMO_CATEGORY)
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)


def test_render_is_deterministic_and_varied() -> None:
    a, _ = render_demo_image("train", "good", 3)
    b, _ = render_demo_image("train", "good", 3)
    c, _ = render_demo_image("train", "good", 4)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == (256, 256, 3)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5  # images differ from each other


def test_render_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="split"):
        render_demo_image("val", "good", 0)
    with pytest.raises(ValueError, match="defect_type"):
        render_demo_image("test", "crack", 0)


def test_layout_and_counts(demo_dir: Path) -> None:
    assert demo_dir.name == f"demo-v{DEMO_VERSION}"
    assert (demo_dir / MARKER_NAME).is_file()
    category = demo_dir / DEMO_CATEGORY
    for (split, defect_type), count in DEMO_COUNTS.items():
        names = sorted(p.name for p in (category / split / defect_type).iterdir())
        assert names == [f"{i:03d}.png" for i in range(count)]
    assert sorted(p.name for p in (category / "test").iterdir()) == sorted(["good", *DEMO_DEFECTS])
    assert sorted(p.name for p in (category / "ground_truth").iterdir()) == sorted(DEMO_DEFECTS)
    total = sum(p.stat().st_size for p in demo_dir.rglob("*") if p.is_file())
    assert total < 20 * 2**20


def test_images_and_masks_aligned(demo_dir: Path) -> None:
    category = demo_dir / DEMO_CATEGORY
    with Image.open(category / "train" / "good" / "000.png") as img:
        assert img.mode == "RGB" and img.size == (256, 256)
    for defect_type in DEMO_DEFECTS:
        for image_path in sorted((category / "test" / defect_type).iterdir()):
            mask_path = category / "ground_truth" / defect_type / f"{image_path.stem}_mask.png"
            with Image.open(image_path) as img, Image.open(mask_path) as mask:
                assert mask.mode == "L" and mask.size == img.size
                values = np.asarray(mask)
                image = np.asarray(img, dtype=np.float64)
            assert set(np.unique(values).tolist()) == {0, 255}
            defect = values > 0
            assert 20 <= defect.sum() < 0.25 * defect.size
            assert image.shape == (*values.shape, 3)


def test_mask_marks_changed_pixels() -> None:
    """Re-render without the defect painter: the change lies (almost) inside the mask."""
    for defect_type in DEMO_DEFECTS:
        for index in range(3):
            pixels, mask = render_demo_image("test", defect_type, index)
            rng = np.random.default_rng(
                [demo._SEED, demo._SPLIT_CODES["test"], demo._TYPE_CODES[defect_type], index]
            )
            clean = demo._render_fabric(rng, 256)
            change = np.abs(pixels / 255.0 - np.clip(clean, 0, 1)).max(axis=2)
            assert mask is not None and mask.any()
            assert (change > 0.05)[mask].mean() > 0.95  # the masked region really changed
            # Outside, only the anti-aliased fringe changes noticeably.
            assert ((change > 0.12) & ~mask).sum() <= 0.25 * mask.sum()


def _fake_generate(calls: list[Path]):
    def fake(root: str | Path) -> Path:
        calls.append(Path(root))
        out = Path(root) / DEMO_CATEGORY
        out.mkdir(parents=True)
        (out / "fake.txt").write_text("x")
        return out

    return fake


def test_demo_root_uses_env_and_reuses_complete_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(demo, "generate_demo", _fake_generate(calls))
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path))
    root = demo_root()
    assert root == tmp_path / f"demo-v{DEMO_VERSION}"
    assert (root / DEMO_CATEGORY / "fake.txt").is_file()
    assert demo_root() == root and demo_root(tmp_path) == root
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary leftovers


def test_incomplete_folder_is_replaced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(demo, "generate_demo", _fake_generate(calls))
    half = tmp_path / f"demo-v{DEMO_VERSION}" / DEMO_CATEGORY / "train" / "good"
    half.mkdir(parents=True)
    (half / "000.png").write_bytes(b"half written")
    root = demo_root(tmp_path)
    assert len(calls) == 1
    assert (root / MARKER_NAME).is_file()
    assert not (root / DEMO_CATEGORY / "train").exists()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


def test_failed_generation_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(root: str | Path) -> Path:
        (Path(root) / DEMO_CATEGORY).mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "generate_demo", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        demo_root(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_generation(demo_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from dfmx.data.demo import demo_root\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists():\n"
        "    time.sleep(0.01)\n"
        "print(demo_root(sys.argv[1]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cache), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert Path(out.strip()) == cache / f"demo-v{DEMO_VERSION}"
    assert [p.name for p in cache.iterdir()] == [f"demo-v{DEMO_VERSION}"]
    assert _tree(cache / f"demo-v{DEMO_VERSION}") == _tree(demo_dir)
