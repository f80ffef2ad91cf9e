"""A challenger that always fails: MLflow models-from-code, loaded like any version."""

import mlflow.models
import pandas as pd
from mlflow.pyfunc import PythonModel


class AlwaysFails(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001, ANN201, ARG002
        raise RuntimeError("this challenger is broken")


mlflow.models.set_model(AlwaysFails())
