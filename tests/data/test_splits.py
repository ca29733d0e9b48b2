"""The validation split: how many normals are held out, which ones, and determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfmx.data.samples import Sample
from dfmx.data.splits import MIN_VAL_IMAGES, hold_out_validation, validation_count
from dfmx.errors import ConfigError


def _samples(n: int) -> list[Sample]:
    return [Sample(path=Path(f"/x/{i:03d}.png"), label=0, defect_type="good", mask_path=None)
            for i in range(n)]


@pytest.mark.parametrize(("n", "fraction", "expected"), [
    (209, 0.2, 42),   # MVTec bottle: round(41.8)
    (60, 0.2, 12),    # the demo data
    (20, 0.2, MIN_VAL_IMAGES),  # round(4) is raised to the minimum
    (6, 0.2, 4),      # the minimum, lowered so that 2 remain to fit
    (3, 0.5, 1),
    (2, 0.2, 0),      # nothing to spare
    (100, 0.0, 0),    # switched off
])
def test_validation_count(n: int, fraction: float, expected: int) -> None:
    assert validation_count(n, fraction) == expected


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_fraction_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        validation_count(10, fraction)


def test_split_is_a_seeded_partition_in_source_order() -> None:
    samples = _samples(50)
    train, val = hold_out_validation(samples, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert sorted(train + val, key=lambda s: s.path) == samples
    assert train == sorted(train, key=lambda s: s.path)
    assert val == sorted(val, key=lambda s: s.path)
    assert hold_out_validation(samples, 0.2, seed=3) == (train, val)
    assert hold_out_validation(samples, 0.2, seed=4)[1] != val
