"""The fitted model as an MLflow pyfunc model: image files or image bytes in, scores,
decisions and (on request) anomaly maps out.

The pyfunc holds no weights itself: the saved ``model/`` folder (safetensors + JSON) is an
MLflow artifact, loaded by :func:`dfmx.load_model` in :meth:`DfmxPyfuncModel.load_context`.
The model object is logged "from code" (:mod:`dfmx.tracking.pyfunc_entry`), so nothing is
pickled. Requests: :mod:`dfmx.tracking.pyfunc_inputs`; answers:
:mod:`dfmx.tracking.pyfunc_outputs`; the HTTP side is described in ``docs/serving.md``.

>>> import mlflow, pandas as pd                                  # doctest: +SKIP
>>> scorer = mlflow.pyfunc.load_model("models:/m-...")          # doctest: +SKIP
>>> scorer.predict(pd.DataFrame({"path": ["a.png"]}))           # doctest: +SKIP
    path        score    threshold  anomalous
0  a.png  1203.5...  1187.2...       True
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from dfmx.tracking.params import origin_tags
from dfmx.tracking.pyfunc_inputs import (
    IMAGE_COLUMN,
    PATH_COLUMN,
    BadRequest,
    image_files,
    request_images,
    undecodable,
)
from dfmx.tracking.pyfunc_outputs import MAP_CHOICES, answer_table

#: The artifact key of the saved model folder.
MODEL_ARTIFACT = "model"
#: The name of the logged pyfunc model in its run.
PYFUNC_NAME = "pyfunc"
#: The models-from-code file that builds the pyfunc object.
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")
#: Largest ``map_size``.
MAX_MAP_SIZE = 256


def model_signature() -> ModelSignature:
    """Two optional input columns (``path`` text, ``image`` bytes: base64 over HTTP) and
    the parameters ``batch_size`` (16), ``map`` (``"none"``, ``"grid"``, ``"png"`` or
    ``"both"``) and ``map_size`` (16)."""
    return ModelSignature(
        inputs=Schema([
            ColSpec("string", PATH_COLUMN, required=False),
            ColSpec("binary", IMAGE_COLUMN, required=False),
        ]),
        params=ParamSchema([
            ParamSpec("batch_size", "long", 16),
            ParamSpec("map", "string", "none"),
            ParamSpec("map_size", "long", 16),
        ]),
    )


def input_example() -> pd.DataFrame:
    """A one-row request: a 32x32 grey PNG's bytes in the ``image`` column."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    return pd.DataFrame({IMAGE_COLUMN: [buffer.getvalue()]})


def _bad_request(message: str) -> MlflowException:
    """MLflow's scoring server answers this with HTTP 400 and ``message``, no traceback."""
    return MlflowException(f"dfmx: {message}", error_code=INVALID_PARAMETER_VALUE)


def _options(params: dict[str, Any] | None, batch_size: int) -> tuple[int, str, int]:
    """``(batch_size, map, map_size)`` from the request's ``params``, checked."""
    params = params or {}
    try:
        size = int(params.get("batch_size", batch_size))
        map_size = int(params.get("map_size", 16))
    except (TypeError, ValueError):
        raise BadRequest("params 'batch_size' and 'map_size' must be whole numbers") from None
    choice = str(params.get("map", "none"))
    if choice not in MAP_CHOICES:
        raise BadRequest(f"param 'map' must be one of {', '.join(MAP_CHOICES)}; got {choice!r}")
    if size < 1:
        raise BadRequest(f"param 'batch_size' must be >= 1; got {size}")
    if not 1 <= map_size <= MAX_MAP_SIZE:
        raise BadRequest(f"param 'map_size' must be between 1 and {MAX_MAP_SIZE}; got {map_size}")
    return size, choice, map_size


class DfmxPyfuncModel(mlflow.pyfunc.PythonModel):
    """Scores images with a saved dfmx model.

    ``predict`` takes a DataFrame with a ``path`` or ``image`` column (see
    :mod:`dfmx.tracking.pyfunc_inputs`) and returns one row per image (see
    :mod:`dfmx.tracking.pyfunc_outputs`). Images are resized to the model's saved
    ``image_size`` with the backbone's interpolation, as in training. A bad request raises
    :class:`~mlflow.exceptions.MlflowException` ``INVALID_PARAMETER_VALUE`` (HTTP 400).

    Args:
        batch_size: images per forward pass unless the request says otherwise.
    """

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size
        self._model: Any = None

    def load_context(self, context: Any) -> None:
        """Load the saved model folder (the ``model`` artifact)."""
        from dfmx import load_model

        self._model = load_model(context.artifacts[MODEL_ARTIFACT])
        self._model.eval()

    # MLflow turns most input type hints into a schema; a DataFrame hint is left alone and
    # the logged signature (:func:`model_signature`) describes the input.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One answer row per image of ``model_input``."""
        if self._model is None:
            self.load_context(context)
        try:
            return self._answer(model_input, params)
        except BadRequest as exc:
            raise _bad_request(str(exc)) from None

    def _answer(self, model_input: Any, params: dict[str, Any] | None) -> pd.DataFrame:
        from dfmx.data.images import ImageLoadError
        from dfmx.experiment.predict import predict_images

        batch_size, choice, map_size = _options(params, self.batch_size)
        rows = request_images(model_input)
        with image_files(rows) as files:
            try:
                result = predict_images(self._model, files, batch_size=batch_size,
                                        num_workers=0, keep_maps=choice != "none")
            except ImageLoadError as exc:
                raise undecodable(exc, rows, files) from None
        if choice != "none" and result.maps is None:
            score_type = getattr(self._model, "score_type", "this scorer")
            raise BadRequest(f"the model's scorer ({score_type}) gives image scores only, "
                             "no anomaly maps: send map=none")
        threshold = float(result.threshold)
        return answer_table([r.path for r in rows], result.scores, threshold, result.maps,
                            choice, map_size)


def pip_requirements() -> list[str]:
    """Explicit requirements (so MLflow does not infer them, which may need the network)."""
    reqs = []
    for dist in ("dfmx", "torch", "torchvision", "timm", "mlflow", "pandas"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:  # pragma: no cover
            reqs.append(dist)
    return reqs


_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


#: MLflow's loggers of model logging, whose INFO records are notes to the model's author
#: (dfmx), not to the user: "Validating input example against model signature".
_MODEL_LOGGERS = ("mlflow.models", "mlflow.pyfunc")


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """No "Downloading artifacts" bar for MLflow's copy of the local model folder (unless
    the user set ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``), and no INFO lines of MLflow's
    model logging after the job's summary (its warnings still show)."""
    user_set = _PROGRESS_BAR_ENV in os.environ
    if not user_set:
        os.environ[_PROGRESS_BAR_ENV] = "false"
    loggers = [logging.getLogger(name) for name in _MODEL_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if not user_set:
            os.environ.pop(_PROGRESS_BAR_ENV, None)


@contextlib.contextmanager
def _pins_not_rechecked() -> Iterator[None]:
    """Skip MLflow's check of the model's pip requirements against the installed packages.

    The check first maps every installed distribution to its modules, reading every
    distribution's file list (about 1 s of CPU, taken from the job's cores), to find
    mismatches that cannot be: :func:`pip_requirements` pins the installed versions
    themselves. Where MLflow has no such check, nothing changes.
    """
    import mlflow.utils.environment as environment

    name = "warn_dependency_requirement_mismatches"
    original = getattr(environment, name, None)
    if original is None:
        yield
        return
    setattr(environment, name, lambda requirements: None)
    try:
        yield
    finally:
        setattr(environment, name, original)


class _PyfuncFlavor:
    """``mlflow.pyfunc`` as the flavor of :meth:`mlflow.models.Model.log`, taking the
    ``validate_serving_input`` switch that ``Model.log`` reads from the keywords it passes
    on to the flavor's ``save_model`` (``mlflow.pyfunc.save_model`` refuses unknown ones)."""

    @staticmethod
    def save_model(*, validate_serving_input: bool = True, **kwargs: Any) -> None:
        del validate_serving_input  # read by Model.log itself
        mlflow.pyfunc.save_model(**kwargs)


def log_pyfunc_model(model_dir: str | Path, run_id: str,
                     tracking_uri: str) -> tuple[str, str | None]:
    """Log ``model_dir`` as a pyfunc model of run ``run_id``; returns its model URI and
    its MLflow model id.

    The run is resumed for the logging and ends ``FINISHED`` afterwards. The signature and
    input example are saved, but MLflow's check of the example is off: it loads the logged
    model again, building and tracing the backbone, to score one grey image, in every job
    (a third of its logging time); the saved weights are the ones the job has just scored
    its test images with, and the served model is tested on real requests in
    ``tests/serving``.

    The model record is made here, with the run's params and dfmx's origin tags, and
    handed to MLflow: MLflow would tag it with the source file of the logging process
    (``dfmx/tracking/run_process.py``) and that file's git state, importing GitPython and
    running ``git`` to find it.
    """
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    model = client.create_logged_model(
        experiment_id=run.info.experiment_id, name=PYFUNC_NAME, source_run_id=run_id,
        params=dict(run.data.params), tags=origin_tags())
    with _quiet_logging(), _pins_not_rechecked(), mlflow.start_run(run_id=run_id):
        info = mlflow.models.Model.log(
            model_id=model.model_id,
            flavor=_PyfuncFlavor,
            flavor_name=mlflow.pyfunc.FLAVOR_NAME,
            validate_serving_input=False,
            artifact_path=None,
            name=PYFUNC_NAME,
            python_model=str(ENTRY_FILE),  # models from code: nothing is pickled
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            pip_requirements=pip_requirements(),
            signature=model_signature(),
            input_example=input_example(),
        )
    return str(info.model_uri), getattr(info, "model_id", None)
