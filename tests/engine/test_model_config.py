"""The model record: one name, one default and one check per option."""

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dfmx import Dfm, DFMModel, registry
from dfmx.engine.model_config import ModelConfig, ModelConfigError


def test_record_round_trips_through_json_and_builds_the_same_model() -> None:
    model = DFMModel("resnet18", ["layer2", "layer3"], pre_trained=False,
                     pooling_kernel_size=2, n_comps=5, score_type="nll", pooling="max")
    cfg = model.get_config()
    assert cfg["layers"] == ["layer2", "layer3"] and cfg["pooling_params"] == {"kernel_size": 2}
    assert cfg["n_comps"] == 5 and cfg["score_type"] == "nll" and cfg["pooling"] == "max"
    again = DFMModel.from_config(cfg)
    assert again.get_config() == cfg
    assert again.pooling_kernel_size == 2 and again.layers == ["layer2", "layer3"]
    wrapped = Dfm.from_config(ModelConfig.from_dict(cfg))
    assert wrapped.get_config() == cfg


def test_api_defaults_are_anomalibs_with_precision_auto() -> None:
    cfg = DFMModel("resnet18", "layer3", pre_trained=False).get_config()
    assert cfg["pooling_params"] == {"kernel_size": 4} and cfg["n_comps"] == 0.97
    assert (cfg["score_type"], cfg["pre_trained"], cfg["precision"]) == ("fre", False, "auto")
    assert Dfm(pre_trained=False).get_config()["precision"] == "auto"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"backbone": "resnet18", "layers": []}, "layers must be one or more layer names"),
        ({"backbone": "", "layers": ["layer2"]}, "backbone must be a non-empty string"),
        ({"backbone": "resnet18", "layers": ["l"], "pre_trained": "yes"}, "pre_trained must"),
        ({"backbone": "resnet18", "layers": ["l"], "n_comps": 1.0}, "n_comps must be"),
        ({"backbone": "resnet18", "layers": ["l"], "n_comps": True}, "n_comps must be"),
        ({"backbone": "resnet18", "layers": ["l"], "pooling_params": [1]}, "pooling_params must"),
        ({"backbone": "resnet18", "layers": ["l"], "colour": "red"}, "field 'colour'"),
        ({"layers": ["l"]}, "backbone must be given"),
        ({"backbone": "resnet18", "layers": ["l"], "precision": "fp16"},
         "precision must be one of auto, fp32, bf16; got 'fp16'"),
        ({"backbone": "resnet18", "layers": ["l"], "device": "gpu"}, "device must be cpu, cuda"),
        ({"backbone": "resnet18", "layers": ["l"], "optimize": "fast"},
         "optimize must be one of auto, none, freeze, compile"),
        ({"backbone": "resnet18", "layers": ["l"], "combine": "bogus"}, "combine must be one of"),
        ({"backbone": "resnet18", "layers": ["l"], "reduction": "mean"},
         "reduction must be one of sum, max, topk"),
        ({"backbone": "resnet18", "layers": ["l"], "reduction_topk": 0}, "reduction_topk must"),
    ],
)
def test_bad_records_name_the_field(data: dict, needle: str) -> None:
    with pytest.raises(ModelConfigError, match=needle) as info:
        ModelConfig.from_dict(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("field", "value"), [
    ("precision", "float32"), ("precision", "BF16"), ("device", "cuda:1"), ("device", "mps"),
    ("device", " auto "), ("optimize", "Freeze"),
])
def test_spellings_the_resolvers_take_are_good_records(field: str, value: str) -> None:
    assert getattr(ModelConfig("resnet18", ("layer3",), **{field: value}), field) == value


POWER_POOLING = """
    from dataclasses import dataclass

    from dfmx.features.pooling import Pooling, pool_features


    class PowerPooling(Pooling):
        method = "avg"

        @dataclass
        class Config(Pooling.Config):
            power: float = 1.0

        def __init__(self, kernel_size: int = 4, power: float = 1.0) -> None:
            super().__init__(kernel_size)
            self.power = power

        def __call__(self, x):
            return pool_features(x.abs() ** self.power, "avg", self.kernel_size)
"""


@pytest.fixture
def power_pooling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    info = tmp_path / "power_pooling-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: power-pooling\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[dfmx.poolings]\npower = power_pooling_mod:PowerPooling\n")
    (tmp_path / "power_pooling_mod.py").write_text(textwrap.dedent(POWER_POOLING))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear_cache()
    yield "power"
    registry.clear_cache()
    sys.modules.pop("power_pooling_mod", None)


def test_a_pooling_plugin_gets_its_whole_config(power_pooling: str) -> None:
    model = DFMModel("resnet18", "layer2", pre_trained=False, pooling_kernel_size=2,
                     pooling=power_pooling, pooling_params={"power": 2.0})
    assert (model.pool.kernel_size, model.pool.power) == (2, 2.0)
    assert model.get_config()["pooling_params"] == {"kernel_size": 2, "power": 2.0}
    again = DFMModel.from_config(model.get_config())
    assert again.pool.power == 2.0
    maps = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(again.pool(maps), (maps.abs() ** 2).reshape(1, 3, 4, 2, 4, 2)
                               .mean(dim=(3, 5)))
    with pytest.raises(ValueError, match=r"pooling 'power' has no parameter\(s\) \['sigma'\]"):
        DFMModel("resnet18", "layer2", pre_trained=False, pooling=power_pooling,
                 pooling_params={"sigma": 1.0})
