"""Bad inputs that cannot come from image files, and the error wording, tested in process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dfmx.cli.overrides import check_overrides
from dfmx.engine.pca import PCA
from dfmx.errors import describe
from dfmx.metrics import compute_metrics


# ------------------------------------------------------------------ NaN / inf features
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_pca_fit_rejects_non_finite_features(bad: float) -> None:
    x = torch.randn(6, 10)
    x[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        PCA(0.9).fit(x)
    with pytest.raises(ValueError, match="NaN or inf"):
        PCA(0.9).fit_batches([x[:3], x[3:]])


def test_dfm_model_fit_rejects_nan_features() -> None:
    from dfmx import DFMModel

    model = DFMModel("resnet18", "layer1", pre_trained=False, pooling_kernel_size=2)
    feats, shape = model.get_features(torch.rand(3, 3, 32, 32))
    feats[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        model.fit(feats, shape)
    assert not model.is_fitted


def test_non_finite_scores_are_refused_by_metrics() -> None:
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(np.array([0, 1, 1]), np.array([0.1, float("nan"), 0.3]))


# ------------------------------------------------------------------ error wording
def test_describe_strips_dataloader_worker_traceback() -> None:
    exc = ValueError(
        "Caught ImageLoadError in DataLoader worker process 0.\nOriginal Traceback (most "
        'recent call last):\n  File "x.py", line 1, in f\n    g()\n'
        "dfmx.data.images.ImageLoadError: cannot read image /d/a.png: broken\n"
    )
    text = describe(exc)
    assert "Traceback" not in text and 'File "x.py"' not in text
    assert text.startswith("ValueError: dfmx.data.images.ImageLoadError: cannot read image")


def test_describe_keeps_plain_messages() -> None:
    assert describe(FileNotFoundError("no such folder: /x"), "--debug") == (
        "FileNotFoundError: no such folder: /x\n(run with --debug for the full traceback)"
    )


@pytest.fixture(scope="module")
def plugins_registered() -> None:
    from dfmx.cli.config_store import register_plugins

    register_plugins()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["pca_levle=0.9"], "Did you mean 'pca_level'"),
        (["--cfg", "job", "image_sise=64"], "Did you mean 'image_size'"),
        (["data=mvtec", "data.roott=/x"], "Did you mean 'data.root'"),
        (["data.root=/x"], "Options that have it: data=mvtec"),
        (["backbone=resnt18"], "Did you mean 'resnet18'"),
        (["layer=blocks4"], "Options for layer: default"),
        (["-m", "scorer=fre,nl"], "unknown scorer 'nl'. Did you mean 'nll'"),
        (["cache.max_gbb=1"], "Did you mean 'cache.max_gb'"),
        (["-m", "--cfg", "job", "scorer=fre,nll"], "--multirun and --cfg cannot be given"),
        (["--info", "-c", "job"], "--cfg and --info cannot be given together"),
    ],
)
def test_check_overrides_suggests(plugins_registered: None, argv: list[str], needle: str) -> None:
    message = check_overrides(argv)
    assert message is not None and needle in message, message


def test_a_value_left_at_missing_is_not_an_unknown_key(plugins_registered: None) -> None:
    message = check_overrides(["pca_level=???"])
    assert message is None or "unknown config key" not in message, message


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["pca_level=0.9", "data=mvtec", "data.root=/x", "data.category=bottle"],
        ["+brand_new=1", "hydra.run.dir=/tmp/x", "layer.names=[blocks.9]"],
        ["-m", "scorer=fre,nll", "pooling.kernel_size=2,4"],
        ["--help"],
        ["--config-dir", "/elsewhere", "whatever=1"],
        ["this is ((( not an override"],
        ["overlays=${seed}"],  # interpolations are the composed job's to resolve
        ["pca_level=${oops}"],
    ],
)
def test_check_overrides_passes_valid_or_foreign_lines(
    plugins_registered: None, argv: list[str]
) -> None:
    assert check_overrides(argv) is None


# ------------------------------------------------------------------ weights and models
def test_not_a_weights_file_is_one_line(tmp_path: Path) -> None:
    from dfmx.features.weights import read_state_dict

    notes = tmp_path / "notes.txt"
    notes.write_text("not weights\n")
    with pytest.raises(ValueError) as info:
        read_state_dict(notes)
    assert "\n" not in str(info.value)
    assert "neither a zip-based torch checkpoint nor a legacy pickle" in str(info.value)
    fake = tmp_path / "w.safetensors"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="is not a weights file") as info:
        read_state_dict(fake)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dfmx import DFMModel
    from dfmx.experiment.saved_model import save_model

    model = DFMModel("resnet18", "layer1", pre_trained=False, pooling_kernel_size=2)
    feats, shape = model.get_features(torch.rand(4, 3, 32, 32))
    model.fit(feats, shape)
    return save_model(model, tmp_path_factory.mktemp("model") / "m", image_size=32)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d.pop("tensors_sha256"), "lacks tensors_sha256"),
        (lambda d: d.update(format="other"), "is not a dfmx model description"),
        (lambda d: d.update(format_version=99), "format version 99"),
    ],
)
def test_tampered_model_json_is_refused(saved_model: Path, tmp_path: Path, edit, needle) -> None:
    from dfmx.experiment.saved_model import CONFIG, ModelFileError, load_model

    model_dir = _copy(saved_model, tmp_path / "m")
    config = json.loads((model_dir / CONFIG).read_text())
    edit(config)
    (model_dir / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=needle):
        load_model(model_dir)


def test_truncated_model_json_is_refused(saved_model: Path, tmp_path: Path) -> None:
    from dfmx.experiment.saved_model import CONFIG, ModelFileError, load_model

    model_dir = _copy(saved_model, tmp_path / "m")
    text = (model_dir / CONFIG).read_text()
    (model_dir / CONFIG).write_text(text[: len(text) // 2])
    with pytest.raises(ModelFileError, match="is not valid JSON"):
        load_model(model_dir)


def test_tampered_model_tensors_are_refused(saved_model: Path, tmp_path: Path) -> None:
    from dfmx.experiment.saved_model import TENSORS, ModelFileError, load_model

    model_dir = _copy(saved_model, tmp_path / "m")
    data = bytearray((model_dir / TENSORS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model_dir / TENSORS).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the checksum"):
        load_model(model_dir)
