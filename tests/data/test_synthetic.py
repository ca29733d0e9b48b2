"""Synthetic anomalies: deterministic under the seed, masks exactly the replaced pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfmx.data.synthetic import synthesise_anomalies


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Five smooth, distinct uint8 images (5, 3, 64, 80)."""
    y, x = torch.meshgrid(torch.arange(64), torch.arange(80), indexing="ij")
    base = torch.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256]).to(torch.uint8)
    return torch.stack([(base.int() + 40 * i).clamp(0, 255).to(torch.uint8) for i in range(5)])


def test_same_seed_same_result_other_seed_other_result(images: torch.Tensor) -> None:
    a = synthesise_anomalies(images, seed=7)
    b = synthesise_anomalies(images.clone(), seed=7)
    c = synthesise_anomalies(images, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert a.kinds == b.kinds == ["cutpaste", "noise", "cutpaste", "noise", "cutpaste"]
    assert not torch.equal(a.masks, c.masks)


def test_masks_are_exactly_the_replaced_pixels(images: torch.Tensor) -> None:
    original = images.clone()
    made = synthesise_anomalies(images, seed=0)
    assert torch.equal(images, original), "the input was modified"
    assert made.images.shape == images.shape and made.images.dtype == torch.uint8
    assert made.masks.shape == (5, 64, 80) and made.masks.dtype == torch.bool
    for i in range(5):
        mask = made.masks[i]
        assert 0.002 < mask.float().mean() < 0.5, "a defect of a sensible size"
        outside = ~mask
        assert torch.equal(made.images[i][:, outside], images[i][:, outside])
        changed = (made.images[i] != images[i]).any(0)
        assert changed[mask].float().mean() > 0.5, "most masked pixels really changed"


def test_cut_paste_content_comes_from_the_next_image(images: torch.Tensor) -> None:
    # Image 0's patch is cut from image 1, which is 40 grey levels brighter before the
    # brightness jitter: the pasted pixels are not image 0's own.
    made = synthesise_anomalies(images, seed=1)
    mask = made.masks[0]
    pasted = made.images[0][:, mask].double()
    own = images[0][:, mask].double()
    assert float((pasted - own).abs().mean()) > 5


def test_one_image_and_bad_inputs() -> None:
    one = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    made = synthesise_anomalies(one, seed=0)
    assert made.images.shape == (1, 3, 32, 32) and bool(made.masks.any())
    with pytest.raises(ValueError, match="uint8"):
        synthesise_anomalies(one.float())
    np.testing.assert_array_equal(synthesise_anomalies(one[:0]).masks.shape, (0, 32, 32))
