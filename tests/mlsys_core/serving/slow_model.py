"""A challenger that answers, but slowly: MLflow models-from-code, loaded like any version."""

import time

import mlflow.models
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class Slow(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001, ANN201, ARG002
        time.sleep(0.3)
        return np.full(len(model_input), 0.5)


mlflow.models.set_model(Slow())
