"""The fitted model as an MLflow pyfunc model: image paths in, anomaly scores out.

The pyfunc holds no weights itself: the saved ``model/`` folder (safetensors + JSON) is an
MLflow artifact, loaded by :func:`dfmx.experiment.saved_model.load_model` in
:meth:`DfmxPyfuncModel.load_context`. The model object is logged "from code"
(:mod:`dfmx.tracking.pyfunc_entry`), so nothing is pickled.

>>> import mlflow                                               # doctest: +SKIP
>>> scorer = mlflow.pyfunc.load_model("models:/m-...")          # doctest: +SKIP
>>> scorer.predict(["a.png", "b.png"])                          # doctest: +SKIP
    path      score
0  a.png  1203.5...
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from dfmx.errors import ConfigError

#: The artifact key of the saved model folder.
MODEL_ARTIFACT = "model"
#: The name of the logged pyfunc model in its run.
PYFUNC_NAME = "pyfunc"
#: The models-from-code file that builds the pyfunc object.
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")


def input_paths(model_input: Any) -> list[str]:
    """Image paths from a list/array/Series of paths, one path, or a DataFrame whose ``path``
    column (or only column) holds them."""
    if isinstance(model_input, pd.DataFrame):
        if "path" in model_input.columns:
            column = model_input["path"]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ConfigError(
                f"a DataFrame input needs a 'path' column; got columns {list(model_input.columns)}"
            )
        return [str(p) for p in column]
    if isinstance(model_input, (str, Path)):
        return [str(model_input)]
    if isinstance(model_input, (pd.Series, np.ndarray, Iterable)):
        return [str(p) for p in model_input]
    raise TypeError(f"cannot read image paths from a {type(model_input).__name__}")


class DfmxPyfuncModel(mlflow.pyfunc.PythonModel):
    """Scores image files with a saved dfmx model.

    ``predict(paths)`` returns a DataFrame with columns ``path`` and ``score`` (higher is
    more anomalous), images resized to the model's saved ``image_size`` with the
    backbone's interpolation, as in training.

    Args:
        batch_size: images per forward pass.
    """

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size
        self._model: Any = None

    def load_context(self, context: Any) -> None:
        """Load the saved model folder (the ``model`` artifact)."""
        from dfmx.experiment.saved_model import load_model

        self._model = load_model(context.artifacts[MODEL_ARTIFACT])
        self._model.eval()

    # MLflow turns most input type hints into a schema it enforces; a DataFrame hint is left
    # alone, so lists of paths and one path pass through as well.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Scores of the images named by ``model_input`` (see :func:`input_paths`)."""
        from dfmx.experiment.predict import predict_images

        if self._model is None:
            self.load_context(context)
        paths = input_paths(model_input)
        if not paths:
            return pd.DataFrame({"path": [], "score": []})
        batch_size = int((params or {}).get("batch_size", self.batch_size))
        result = predict_images(self._model, paths, batch_size=batch_size, num_workers=0,
                                keep_maps=False)
        return pd.DataFrame({"path": paths, "score": result.scores})


def pip_requirements() -> list[str]:
    """Explicit requirements (so MLflow does not infer them, which may need the network)."""
    reqs = []
    for dist in ("dfmx", "torch", "torchvision", "timm", "mlflow", "pandas"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:  # pragma: no cover
            reqs.append(dist)
    return reqs


class _NoSignatureWarning(logging.Filter):
    """Drops MLflow's "Failed to infer model signature" warning. :meth:`predict` takes a
    path, a list of paths or a DataFrame, which no MLflow signature describes (a column
    signature refuses a plain list), so the model has none on purpose and the warning
    would be printed on every job."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to infer model signature")


_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """No signature warning, and no "Downloading artifacts" bar for MLflow's copy of the
    local model folder (unless the user set ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``)."""
    logger, no_warning = logging.getLogger("mlflow.pyfunc"), _NoSignatureWarning()
    logger.addFilter(no_warning)
    user_set = _PROGRESS_BAR_ENV in os.environ
    if not user_set:
        os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        logger.removeFilter(no_warning)
        if not user_set:
            os.environ.pop(_PROGRESS_BAR_ENV, None)


def log_pyfunc_model(model_dir: str | Path, run_id: str, tracking_uri: str) -> str:
    """Log ``model_dir`` as a pyfunc model of run ``run_id``; returns its model URI.

    The run is resumed for the logging and ends ``FINISHED`` afterwards.
    """
    mlflow.set_tracking_uri(tracking_uri)
    with _quiet_logging(), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=PYFUNC_NAME,
            python_model=str(ENTRY_FILE),  # models from code: nothing is pickled
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            pip_requirements=pip_requirements(),
        )
    return str(info.model_uri)
