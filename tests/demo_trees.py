"""Small data sets cut from the generated demo data, for CLI jobs that must be quick."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path


def _copy(files: Sequence[Path], dest: Path, rename: str = "{stem}{suffix}") -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(files):
        target = dest / rename.format(stem=src.stem, suffix=src.suffix, i=i)
        shutil.copyfile(src, target)
        out.append(target)
    return out


def make_mvtec_tree(demo: Path, root: Path, category: str = "tiny") -> Path:
    """A tiny MVTec-layout data set: 6 train, 3 good + 3 scratch test images with masks."""
    cat = root / category
    _copy(sorted((demo / "train" / "good").glob("*.png"))[:6], cat / "train" / "good")
    _copy(sorted((demo / "test" / "good").glob("*.png"))[:3], cat / "test" / "good")
    scratches = sorted((demo / "test" / "scratch").glob("*.png"))[:3]
    _copy(scratches, cat / "test" / "scratch")
    _copy([demo / "ground_truth" / "scratch" / f"{p.stem}_mask.png" for p in scratches],
          cat / "ground_truth" / "scratch")
    return root


def make_folder_tree(demo: Path, root: Path) -> dict[str, Path]:
    """Plain folders: 8 normals, 3 anomalies, masks named ``<stem>_mask.png`` and ``<stem>.png``."""
    dirs = {k: root / k for k in ("normal", "abnormal", "masks")}
    _copy(sorted((demo / "train" / "good").glob("*.png"))[:8], dirs["normal"])
    holes = sorted((demo / "test" / "hole").glob("*.png"))[:3]
    _copy(holes, dirs["abnormal"], rename="hole{stem}{suffix}")
    masks = [demo / "ground_truth" / "hole" / f"{p.stem}_mask.png" for p in holes]
    _copy(masks[:2], dirs["masks"], rename="hole{stem}{suffix}")      # hole000_mask.png
    shutil.copyfile(masks[2], dirs["masks"] / f"hole{holes[2].stem}.png")  # hole002.png
    return dirs


def tiny_folder_data(demo_root: Path, dest: Path) -> list[str]:
    """A few demo images as a ``data=folder`` set (8 train, 3 good + 4 defective test);
    returns the overrides that select it."""
    category = demo_root / "demo"
    parts = {
        "normal": sorted((category / "train" / "good").glob("*.png"))[:8],
        "test_normal": sorted((category / "test" / "good").glob("*.png"))[:3],
        "abnormal": sorted(p for p in (category / "test").glob("*/*.png")
                           if p.parent.name != "good")[:4],
    }
    for name, files in parts.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / name / f"{f.parent.name}_{f.name}")
    return ["data=folder", f"data.normal_dir={dest / 'normal'}",
            f"data.test_normal_dir={dest / 'test_normal'}",
            f"data.abnormal_dir={dest / 'abnormal'}"]
