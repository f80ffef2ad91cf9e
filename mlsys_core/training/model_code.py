"""MLflow models-from-code entry point: MLflow runs this file to build the model."""

import mlflow.models

from mlsys_core.training.pyfunc import DelayModel

mlflow.models.set_model(DelayModel())
