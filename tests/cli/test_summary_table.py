"""Tests of the terminal summary table."""

from __future__ import annotations

from dfmx.cli.summary_table import summary_table


def test_summary_table() -> None:
    metrics = {"image_AUROC": 0.912345, "pixel_AUROC": float("nan"), "time_fit": 1.23456,
               "n_test": 6.0}
    extra = {"backbone": "efficientnet_lite0", "images/s": 41.5}
    table = summary_table(metrics, extra)
    for key in [*metrics, "backbone", "efficientnet_lite0", "images/s"]:
        assert key in table
    assert "n/a (undefined)" in table
    assert "0.9123" in table and "1.235 s" in table and "41.5000" in table
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1, "rows are not aligned"
    assert len(lines) == len(metrics) + len(extra) + 1 + 4  # rows, header, 4 rules
    ascii_table = summary_table(metrics, ascii_only=True)
    assert ascii_table.isascii() and "n/a (undefined)" in ascii_table
