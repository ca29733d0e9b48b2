"""The Hydra application: ``python -m dfmx`` / ``dfmx``.

Plugins become config groups at start-up (see :mod:`dfmx.cli.config_store`); each job
hands the resolved config, as a plain dict, to :func:`dfmx.experiment.run.run_experiment`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dfmx.cli.config_store import register_plugins
from dfmx.cli.errors import USER_ERRORS, describe

log = logging.getLogger("dfmx")


def _summary(result: Any, cfg: dict[str, Any]) -> str:
    from dfmx.experiment.reports import summary_table

    extra = {
        "backbone": f"{cfg['backbone']['arch']} ({result.model.feature_extractor.weights_source})",
        "layers": ",".join(result.model.layers),
        "pooling": f"{cfg['pooling']['name']} k={cfg['pooling'].get('kernel_size', 1)}",
        "scorer": cfg["scorer"]["name"],
        "data": f"{cfg['data']['name']}: {result.n_train} train / {result.n_test} test",
        "output": str(result.output_dir),
    }
    return summary_table(result.metrics, extra)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _run(cfg: DictConfig) -> float | None:
    from dfmx.experiment.run import run_experiment

    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    hydra_cfg = HydraConfig.get()
    try:
        result = run_experiment(plain, hydra_cfg.runtime.output_dir)
    except USER_ERRORS as exc:
        if plain.get("debug") or hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        log.error(describe(exc))
        sys.exit(1)
    print(_summary(result, plain), flush=True)
    auroc = result.metrics.get("image_AUROC")
    return float(auroc) if auroc is not None else None


def main() -> None:
    """Console entry point: register plugin configs, then run the Hydra app."""
    register_plugins()
    _run()


if __name__ == "__main__":
    main()
