"""The on-disk raw-feature cache: keys, hits, corruption, parallel writers, eviction, runs."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import dfmx.data.batches as batches_module
from dfmx.data.batches import image_batches
from dfmx.experiment import run as run_module
from dfmx.experiment.run import (
    LoaderSettings,
    build_model,
    load_samples,
    run_experiment,
    score_samples,
)
from dfmx.features.cache import (
    FeatureCache,
    default_feature_cache_dir,
    feature_key,
    keep_read_entries,
    weights_fingerprint,
)

IMAGE_SIZE = 64


def _write_images(folder: Path, n: int, seed: int, mask_folder: Path | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(60, 200, size=(48, 48, 3), dtype=np.uint8)
        if mask_folder is not None:
            pixels[10:20, 10:20] = 255
            mask_folder.mkdir(parents=True, exist_ok=True)
            mask = np.zeros((48, 48), dtype=np.uint8)
            mask[10:20, 10:20] = 255
            Image.fromarray(mask, mode="L").save(mask_folder / f"{i:02d}_mask.png")
        Image.fromarray(pixels, mode="RGB").save(folder / f"{i:02d}.png")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cache_data")
    _write_images(root / "good", 12, seed=0)
    _write_images(root / "bad", 4, seed=1, mask_folder=root / "masks")
    return {"normal_dir": str(root / "good"), "abnormal_dir": str(root / "bad"),
            "mask_dir": str(root / "masks")}


def _config(data_dirs: dict[str, str], **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "backbone": {"name": "resnet18", "arch": "resnet18", "pretrained": False,
                     "weights": None, "layers": ["layer2", "layer3"]},
        "layer": {"name": "default", "names": []},
        "pooling": {"name": "avg", "kernel_size": 2},
        "scorer": {"name": "fre"},
        "data": {"name": "folder", **data_dirs, "normal_test_fraction": 0.25},
        "pca_level": 0.9,
        "image_size": IMAGE_SIZE,
        "batch_size": 4,
        "num_workers": 0,
        "precision": "fp32",
        "device": "cpu",
        "seed": 0,
        "save_model": False,
        "overlays": 0,
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


def _key(cfg: dict[str, Any], paths: list[Path] | None = None) -> dict[str, Any]:
    torch.manual_seed(int(cfg["seed"]))  # random weights: same seed, same weights
    model = build_model(cfg)
    if paths is None:
        paths = [s.path for s in load_samples(cfg["data"])[0]]
    return feature_key(model.feature_extractor, paths, cfg["image_size"], cfg["batch_size"])


def _tensors(seed: int = 0, n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"layer3": torch.randn(n, 8, 4, 4, generator=g),
            "layer2": torch.randn(n, 4, 8, 8, generator=g)}


KEY = {"format": 1, "backbone": "x", "n_images": 3, "data": "d"}


# --------------------------------------------------------------------------- keys


def test_key_ignores_pooling_scorer_and_pca_level(data_dirs: dict[str, str]) -> None:
    base = _key(_config(data_dirs))
    same = _key(_config(data_dirs, pooling={"name": "max", "kernel_size": 4},
                        scorer={"name": "nll"}, pca_level=0.5))
    assert same == base
    assert FeatureCache("x").entry_name(same, "train") == FeatureCache("x").entry_name(
        base, "train")


@pytest.mark.parametrize(
    "overrides",
    [
        {"backbone": {"arch": "resnet34", "name": "resnet34"}},
        {"backbone": {"layers": ["layer3"]}},
        {"image_size": 96},
        {"precision": "bf16"},
        {"seed": 1},  # other random weights
    ],
    ids=["backbone", "layers", "image_size", "precision", "weights"],
)
def test_key_changes_with_what_determines_features(
    data_dirs: dict[str, str], overrides: dict[str, Any]
) -> None:
    assert _key(_config(data_dirs, **overrides)) != _key(_config(data_dirs))


def test_key_changes_when_a_data_file_is_touched(tmp_path: Path) -> None:
    _write_images(tmp_path, 3, seed=0)
    paths = sorted(tmp_path.glob("*.png"))
    cfg = _config({"normal_dir": str(tmp_path)})
    before = _key(cfg, paths)
    assert _key(cfg, paths) == before
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert _key(cfg, paths) != before
    assert _key(cfg, paths[:2]) != before


def test_weights_fingerprint_is_memoised_for_named_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = build_model(_config({"normal_dir": "unused"}))
    weights = tmp_path / "w.safetensors"
    state = {k: v.contiguous() for k, v in source.feature_extractor.net.state_dict().items()}
    save_file(state, str(weights))
    cfg = _config({"normal_dir": "unused"}, backbone={"weights": str(weights)})
    first = build_model(cfg).feature_extractor
    assert first.weights_source.startswith("file:")
    assert weights_fingerprint(first) == weights_fingerprint(source.feature_extractor)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    before = weights.stat()
    save_file(state, str(weights))  # same size, new bytes and (below) a new mtime
    # File identity is (size, mtime_ns, inode): a rewrite within the filesystem's timestamp
    # granularity (a few ms) would look unchanged, so make the mtime differ as it would.
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 10_000_000))
    assert weights_fingerprint(build_model(cfg).feature_extractor) != weights_fingerprint(first)


# --------------------------------------------------------------------------- hits, corruption


def test_hit_returns_identical_tensors(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    calls: list[int] = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return _tensors()

    first, hit1 = cache.get_or_compute(KEY, "train", compute)
    second, hit2 = cache.get_or_compute(KEY, "train", compute)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name])
        assert second[name].dtype == torch.float32
    assert cache.load(KEY, "test") is None  # the split is part of the entry
    assert cache.load({**KEY, "data": "other"}, "train") is None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped_byte", "empty"])
def test_corrupt_entry_is_recomputed(tmp_path: Path, damage: str) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, "train", _tensors)
    path = cache.entry_path(KEY, "train")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped_byte":
        blob = bytearray(data)
        blob[-5] ^= 0xFF  # inside the tensor data: only the checksum can tell
        path.write_bytes(bytes(blob))
    else:
        path.write_bytes(b"")
    assert cache.load(KEY, "train") is None
    again, hit = cache.get_or_compute(KEY, "train", _tensors)
    assert not hit
    assert all(torch.equal(again[k], v) for k, v in _tensors().items())
    assert cache.load(KEY, "train") is not None


def test_entry_of_another_key_under_the_same_name_is_a_miss(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_or_compute({**KEY, "data": "other"}, "train", _tensors)
    os.replace(cache.entry_path({**KEY, "data": "other"}, "train"), cache.entry_path(KEY, "train"))
    assert cache.load(KEY, "train") is None


# --------------------------------------------------------------------------- kept entries


@pytest.fixture
def kept_entries() -> Iterator[None]:
    """Entries kept in memory, as in a sweep's process (off again afterwards)."""
    keep_read_entries(64 << 20)
    yield
    keep_read_entries(0)


def _same(got: dict[str, torch.Tensor] | None, want: dict[str, torch.Tensor]) -> bool:
    return got is not None and got.keys() == want.keys() and all(
        torch.equal(got[k], v) for k, v in want.items())


def test_a_kept_entry_is_handed_out_again_as_copies(tmp_path: Path, kept_entries: None) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, "train", _tensors)  # written, and kept
    path = cache.entry_path(KEY, "train")
    before = path.stat()
    # Bytes of the file's tensor data flipped in place, its times put back: a read would
    # fail the checksum, so the intact answer comes from memory.
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    with open(path, "r+b") as file:
        file.write(blob)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    first = cache.load(KEY, "train")
    assert _same(first, _tensors())
    first["layer3"].add_(1)  # copies: changing one answer changes no later one
    assert _same(cache.load(KEY, "train"), _tensors())
    assert path.stat().st_atime_ns > before.st_atime_ns  # a hit still counts as a use


def test_an_entry_replaced_or_removed_under_a_kept_one_is_not_handed_out(
        tmp_path: Path, kept_entries: None) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, "train", _tensors)
    assert _same(cache.load(KEY, "train"), _tensors())  # read and verified: kept too
    path = cache.entry_path(KEY, "train")
    before = path.stat()
    # Another job's entry of the same size renamed over the name, with the same times.
    other = FeatureCache(tmp_path / "other")
    other.store(KEY, "train", _tensors(seed=1))
    os.replace(other.entry_path(KEY, "train"), path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert _same(cache.load(KEY, "train"), _tensors(seed=1))
    path.unlink()  # evicted by another job
    assert cache.load(KEY, "train") is None


def test_entries_are_kept_only_when_asked_and_within_the_budget(tmp_path: Path) -> None:
    from dfmx.features.cache import store

    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, "train", _tensors)
    assert store._KEPT is None  # a single job reads each entry once: nothing kept
    keep_read_entries(1000)  # smaller than the entry's 1536 bytes of tensors
    try:
        assert _same(cache.load(KEY, "train"), _tensors())
        assert store._KEPT is not None and len(store._KEPT) == 0
    finally:
        keep_read_entries(0)


# --------------------------------------------------------------------------- parallel writers


def _writer(directory: str, barrier: Any, marker_dir: str, queue: Any) -> None:
    cache = FeatureCache(directory)

    def compute() -> dict[str, torch.Tensor]:
        Path(marker_dir, f"computed-{os.getpid()}").touch()
        time.sleep(0.5)  # long enough for the other process to arrive meanwhile
        return _tensors(n=3)

    barrier.wait()
    tensors, hit = cache.get_or_compute(KEY, "train", compute)
    queue.put((hit, {k: v.numpy().tolist() for k, v in tensors.items()}))


def test_parallel_writers_end_with_one_valid_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    markers = tmp_path / "markers"
    markers.mkdir()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "c"), barrier, str(markers), queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(hit for hit, _ in results) == [False, True]  # the second waited, then read
    assert results[0][1] == results[1][1]
    assert len(list(markers.iterdir())) == 1
    cache = FeatureCache(tmp_path / "c")
    assert [p.name for p in cache.entries()] == [cache.entry_name(KEY, "train")]
    assert not list((tmp_path / "c").glob(".*.tmp"))
    loaded = cache.load(KEY, "train")
    assert loaded is not None and all(torch.equal(loaded[k], v) for k, v in _tensors().items())


# --------------------------------------------------------------------------- eviction


def test_lru_eviction_under_a_tiny_bound(tmp_path: Path) -> None:
    probe = FeatureCache(tmp_path / "probe", max_gb=None)
    size = probe.store(KEY, "train", _tensors()).stat().st_size
    cache = FeatureCache(tmp_path / "c", max_gb=2.5 * size / 1e9)  # room for two entries
    keys = [{**KEY, "data": name} for name in ("a", "b", "c")]
    cache.store(keys[0], "train", _tensors())
    cache.store(keys[1], "train", _tensors())
    time.sleep(0.01)
    assert cache.load(keys[0], "train") is not None  # "a" is now more recent than "b"
    cache.store(keys[2], "train", _tensors())
    assert cache.load(keys[1], "train") is None  # "b", least recently used, is gone
    assert cache.load(keys[0], "train") is not None
    assert cache.load(keys[2], "train") is not None
    assert cache.size_bytes() <= cache.max_bytes


def test_entry_larger_than_the_bound_is_not_stored(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, max_gb=1e-7)  # 100 bytes
    tensors, hit = cache.get_or_compute(KEY, "train", _tensors)
    assert not hit and tensors
    assert cache.entries() == []


# --------------------------------------------------------------------------- config, runs


def test_config_interface(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path))
    assert default_feature_cache_dir() == tmp_path / "features"
    assert FeatureCache.from_config(None).directory == tmp_path / "features"
    assert FeatureCache.from_config({"enabled": False}) is None
    assert FeatureCache.from_config("off") is None
    assert FeatureCache.from_config(False) is None
    custom = FeatureCache.from_config({"enabled": True, "dir": str(tmp_path / "x"), "max_gb": 2})
    assert custom.directory == tmp_path / "x" and custom.max_bytes == 2_000_000_000
    with pytest.raises(ValueError, match="unknown cache option"):
        FeatureCache.from_config({"enabeld": False})


def test_hydra_config_has_the_cache_block() -> None:
    from hydra import compose, initialize_config_dir

    from dfmx.cli.config_store import register_plugins

    register_plugins()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        on = compose("config")
        off = compose("config", overrides=["cache.enabled=false"])
    assert on.cache.enabled is True and on.cache.max_gb == 10
    assert FeatureCache.from_config(dict(off.cache)) is None


def _comparable(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items()
            if not k.startswith(("time_", "cache_hit")) and k != "images_per_s"}


def test_run_experiment_twice_hits_and_gives_identical_metrics(
    data_dirs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "cache"))
    synthesised: list[int] = []
    real_synthesise = run_module.synthesise_anomalies

    def synthesise(images: torch.Tensor, seed: int) -> Any:
        synthesised.append(len(images))
        return real_synthesise(images, seed)

    monkeypatch.setattr(run_module, "synthesise_anomalies", synthesise)
    cfg = _config(data_dirs)
    first = run_experiment(cfg, tmp_path / "run1")
    assert len(synthesised) == 1
    second = run_experiment(cfg, tmp_path / "run2")
    assert len(synthesised) == 1  # the synthetic set's masks come from its entry too
    assert (first.metrics["cache_hit_train"], first.metrics["cache_hit_test"]) == (0.0, 0.0)
    assert (second.metrics["cache_hit_train"], second.metrics["cache_hit_test"]) == (1.0, 1.0)
    assert (first.metrics["cache_hit_val"], second.metrics["cache_hit_val"]) == (0.0, 1.0)
    assert _comparable(second.metrics) == _comparable(first.metrics)
    assert (tmp_path / "run1/predictions.csv").read_text() == (
        tmp_path / "run2/predictions.csv").read_text()
    store = FeatureCache(tmp_path / "cache/features")
    kinds = sorted(p.name.split("-")[0] for p in store.entries())
    # decoded images of each split, then the features of each split and of the synthetic
    # anomalies on the validation images
    assert kinds == ["images"] * 3 + ["synthetic", "test", "train", "val"]
    # Another scorer and pooling on the same backbone reuse the entries.
    other = run_experiment(_config(data_dirs, scorer={"name": "nll"},
                                   pooling={"name": "max", "kernel_size": 1}), tmp_path / "run3")
    assert (other.metrics["cache_hit_train"], other.metrics["cache_hit_test"]) == (1.0, 1.0)
    # Another precision misses the features but reads the decoded images: nothing decoded.
    decoded: list[Path] = []
    monkeypatch.setattr(batches_module, "decode_image", lambda p, *a: decoded.append(p))
    bf16 = run_experiment({**cfg, "precision": "bf16"}, tmp_path / "run5")
    assert (bf16.metrics["cache_hit_train"], bf16.metrics["cache_hit_test"]) == (0.0, 0.0)
    assert decoded == [] and len(store.entries()) == 11
    monkeypatch.undo()
    # The same job without the cache: the same metrics, nothing written.
    monkeypatch.setenv("DFMX_CACHE_DIR", str(tmp_path / "nocache"))
    off = run_experiment({**cfg, "cache": {"enabled": False}}, tmp_path / "run4")
    assert (off.metrics["cache_hit_train"], off.metrics["cache_hit_test"]) == (0.0, 0.0)
    assert _comparable(off.metrics) == _comparable(first.metrics)
    assert not (tmp_path / "nocache").exists()


def test_scores_with_a_cache_hit_equal_scores_without_cache(
    data_dirs: dict[str, str], tmp_path: Path
) -> None:
    cfg = _config(data_dirs)
    train, test = load_samples(cfg["data"])
    torch.manual_seed(0)
    model = build_model(cfg)
    loader = LoaderSettings.from_config(cfg)
    feats, shape = run_module.extract_features(model, train, loader, "train")
    model.fit(feats, shape)
    cache = FeatureCache(tmp_path)
    plain = score_samples(model, test, loader)
    miss = score_samples(model, test, loader, cache=cache)
    hit = score_samples(model, test, loader, cache=cache)
    _, was_hit = run_module.raw_features(model, test, loader, "test", cache)
    assert was_hit
    for res in (miss, hit):
        assert res.keys() == plain.keys()
        for key in plain:
            assert np.array_equal(res[key], plain[key]), key
            assert res[key].dtype == plain[key].dtype, key
    # ... and equal what the model gives for the same batches of images.
    batches = image_batches(test, cfg["image_size"], model.feature_extractor.interpolation,
                            cfg["batch_size"])
    direct = torch.cat([model(batch).pred_score for batch in batches])
    assert np.array_equal(direct.double().numpy(), plain["scores"])
