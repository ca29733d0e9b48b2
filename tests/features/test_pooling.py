from __future__ import annotations

import pytest
import torch

from dfmx.features import pool_features


@pytest.fixture
def maps() -> torch.Tensor:
    return torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))


def test_avg_pool_matches_window_means(maps: torch.Tensor) -> None:
    out = pool_features(maps, "avg", 4)
    assert out.shape == (2, 3, 2, 3)
    expected = maps.reshape(2, 3, 2, 4, 3, 4).mean(dim=(3, 5))
    torch.testing.assert_close(out, expected)


def test_max_pool_matches_window_maxima(maps: torch.Tensor) -> None:
    out = pool_features(maps, "max", 2)
    assert out.shape == (2, 3, 4, 6)
    expected = maps.reshape(2, 3, 4, 2, 6, 2).amax(dim=(3, 5))
    torch.testing.assert_close(out, expected)


def test_default_is_avg_with_kernel_4(maps: torch.Tensor) -> None:
    torch.testing.assert_close(pool_features(maps), pool_features(maps, "avg", 4))


def test_indivisible_size_drops_trailing_rows_and_columns() -> None:
    x = torch.randn(1, 2, 10, 7)
    out = pool_features(x, "avg", 4)
    assert out.shape == (1, 2, 2, 1)
    torch.testing.assert_close(out, pool_features(x[..., :8, :4], "avg", 4))


@pytest.mark.parametrize(("method", "kernel"), [("none", 4), ("avg", 1), ("max", 1)])
def test_identity_cases_return_input(maps: torch.Tensor, method: str, kernel: int) -> None:
    assert pool_features(maps, method, kernel) is maps


def test_unknown_method_lists_choices(maps: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"avg, max, none"):
        pool_features(maps, "median", 2)


@pytest.mark.parametrize("kernel", [0, -1, 2.5, True])
def test_bad_kernel(maps: torch.Tensor, kernel: object) -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        pool_features(maps, "avg", kernel)  # type: ignore[arg-type]


def test_window_larger_than_map(maps: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="smaller than the pooling window"):
        pool_features(maps, "avg", 9)


def test_rejects_non_4d() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        pool_features(torch.randn(3, 8, 8), "avg", 2)
