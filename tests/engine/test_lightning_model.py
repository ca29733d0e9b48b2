"""Dfm under a real lightning.Trainer (lightning is in the test extra)."""

import pytest
import torch
from torch.utils.data import DataLoader

from dfmx import Dfm

lightning = pytest.importorskip("lightning")


def _loader(images: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader([{"image": img, "label": 0} for img in images], batch_size=batch_size)


def test_trains_and_validates_under_trainer(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(10, 3, 64, 64, generator=g), torch.rand(4, 3, 64, 64, generator=g)
    model = Dfm(backbone="resnet18", layer="layer2", pre_trained=False, pooling_kernel_size=2,
                pca_level=0.9)
    trainer = lightning.Trainer(
        **model.trainer_arguments, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
    )
    # Batches of 3 leave a last batch of one image: it must stay one sample.
    trainer.fit(model, train_dataloaders=_loader(train, 3))
    assert model.model.is_fitted
    assert model.model.pca_model.n_samples_ == 10
    predictions = trainer.predict(model, dataloaders=_loader(test, 2))
    scores = torch.cat([p["pred_score"] for p in predictions])
    assert scores.shape == (4,)
    # Same numbers as the plain API.
    direct = Dfm(backbone="resnet18", layer="layer2", pre_trained=False, pooling_kernel_size=2,
                 pca_level=0.9)
    direct.model.load_state_dict(model.model.state_dict())
    torch.testing.assert_close(direct.model(test).pred_score, scores)
