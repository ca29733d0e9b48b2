"""MLflow "models from code" entry: the pyfunc model object, built without any pickle.

MLflow copies this file into the logged model and runs it at load time; the weights come
from the ``model`` artifact in :meth:`DfmxPyfuncModel.load_context`.
"""

from mlflow.models import set_model

from dfmx.tracking.pyfunc import DfmxPyfuncModel

set_model(DfmxPyfuncModel())
