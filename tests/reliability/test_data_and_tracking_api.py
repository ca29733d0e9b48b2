"""API-level checks behind the CLI cases of ``test_data_and_tracking_cases.py``: overlaps of
samples from any source, the no-variation check of the engine, escaped file names,
redaction of log records and Hydra's files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from dfmx.data import Sample
from dfmx.data.overlaps import DataOverlapError, check_overlaps
from dfmx.engine.pca import PCA, NoVariationError
from dfmx.path_text import path_text, text_safe

from . import corpus as c


def test_a_source_listing_a_file_twice_is_refused(tmp_path: Path) -> None:
    a, b = c.write_png(tmp_path / "a.png", 1), c.write_png(tmp_path / "b.png", 2)
    with pytest.raises(DataOverlapError, match="listed twice"):
        check_overlaps([Sample(a, 0, "good"), Sample(a, 0, "good")], [Sample(b, 0, "good")])


def test_hard_link_and_mask_equal_to_image_are_overlaps(tmp_path: Path) -> None:
    a, b = c.write_png(tmp_path / "a.png", 1), c.write_png(tmp_path / "b.png", 2)
    os.link(a, tmp_path / "a_link.png")
    with pytest.raises(DataOverlapError, match=r"training image and a test image \(same file"):
        check_overlaps([Sample(a, 0, "good"), Sample(b, 0, "good")],
                       [Sample(tmp_path / "a_link.png", 0, "good")])
    x = c.write_png(tmp_path / "x.png", 3)
    (tmp_path / "m").mkdir()
    mask = tmp_path / "m" / "x.png"
    mask.write_bytes(x.read_bytes())  # a copy of the image given as its mask
    with pytest.raises(DataOverlapError, match=r"test image and a mask \(identical contents"):
        check_overlaps([Sample(a, 0, "good"), Sample(b, 0, "good")], [Sample(x, 1, "d", mask)])


def test_distinct_sets_and_a_shared_mask_pass(tmp_path: Path) -> None:
    train = [Sample(c.write_png(tmp_path / f"t{i}.png", i), 0, "good") for i in range(3)]
    mask = c.write_mask(tmp_path / "m.png")
    test = [Sample(c.write_png(tmp_path / f"x{i}.png", 10 + i), 1, "d", mask) for i in range(2)]
    check_overlaps(train, test)


def test_pca_refuses_samples_without_variation() -> None:
    same = torch.randn(1, 40).repeat(5, 1)
    with pytest.raises(NoVariationError, match="5 training samples carry no variation"):
        PCA(0.9).fit(same)
    with pytest.raises(NoVariationError, match="fit_batches"):
        PCA(0.9).fit_batches([same[:2], same[2:]])
    PCA(0.9).fit(same + 1e-2 * torch.randn(5, 40))  # small but real variation fits


def test_undecodable_names_become_escaped_text() -> None:
    name = os.fsdecode(b"/data/bad\xff.png")
    assert path_text(name) == "/data/bad\\xff.png"
    assert text_safe(f"skipped {name}") == "skipped /data/bad\\xff.png"
    assert path_text("/data/caf\u00e9.png") == "/data/caf\u00e9.png"


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from dfmx.tracking.redact import install_log_redaction

    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("hydra.test").info("#0 : tracking.tracking_uri=%s my.api_token=%s",
                                             "postgresql://u:pw@db/x", "abc")
        logging.getLogger("dfmx.test").info("file %s", os.fsdecode(b"bad\xfe.png"))
    assert "pw@" not in caplog.text and "abc" not in caplog.text
    assert "postgresql://***@db/x" in caplog.text and "my.api_token=***" in caplog.text
    assert "bad\\xfe.png" in caplog.text


def test_escaped_and_path_mangled_urls_are_redacted() -> None:
    from dfmx.tracking.redact import redact_text

    for text in (r"w=https\://alice\:tok@host/w.pth",  # Hydra's sweep overrides
                 "Weights file '/cwd/https:/alice:tok@host/w.pth'"):  # a URL made a path
        assert "tok" not in redact_text(text), text


def test_hydra_files_are_rewritten_without_secrets(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from dfmx.tracking.redact import redact_hydra_dir

    uri = "postgresql://u:pw@db/x"
    OmegaConf.save(OmegaConf.create({"tracking": {"tracking_uri": uri}, "a_token": "t0k"}),
                   tmp_path / "config.yaml")
    OmegaConf.save(OmegaConf.create([f"tracking.tracking_uri={uri}", "+a_token=t0k"]),
                   tmp_path / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": [
        f"tracking.tracking_uri={uri}"]}, "job": {"override_dirname": f"x={uri}"}}}),
        tmp_path / "hydra.yaml")
    (tmp_path / "config.yaml").chmod(0o640)
    redact_hydra_dir(tmp_path)
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        text = (tmp_path / name).read_text()
        assert "pw@" not in text and "t0k" not in text, text
        assert "***" in text
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o640
