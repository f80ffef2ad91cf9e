"""ml_pipeline on scikit-learn's digits images with only a spec change: a header-less package
CSV, no event time (hash split), positive classes as the label, image extractors and
selectors; the selection report is an MLflow artifact and the champion serves raw rows."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from flows.pipeline import ml_pipeline
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.datasets.digits import digits_spec
from mlsys_core.features.columns import ColumnPreprocessor
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import held_out

pytestmark = pytest.mark.slow


def test_digits_run_end_to_end_and_record_what_selection_dropped(settings: Settings) -> None:
    result = ml_pipeline(
        spec=digits_spec(),
        train_config=TrainConfig(epochs=25, batch_size=64, patience=5),
        model_name="digits",
    )
    metrics = result.trained.metrics
    assert metrics["test_auc"] > 0.97, metrics  # odd vs even digits from 8x8 pixels
    assert result.registration.stage == "production"  # the first model becomes champion
    assert result.drift.summary.current_window == "test split"

    client = tracking_client(settings.mlflow_uri)
    path = mlflow.artifacts.download_artifacts(
        run_id=result.trained.run_id, artifact_path="features/selection.json"
    )
    variance, l1 = json.loads(open(path).read())["selectors"]
    dropped = {f["feature"]: f["reason"] for f in variance["features"] if not f["kept"]}
    # The top-left pixel is blank in every digit: dropped for its zero variance.
    assert dropped["image_px0"] == "variance 0 <= threshold 0.0001"
    assert l1["features_in"] == variance["features_in"] - variance["dropped"]

    held = held_out(result.trained.feature_set, Lake(settings.lake_dir))
    features, labels = held.inputs(), held.labels
    model = mlflow.pyfunc.load_model("models:/digits@champion")
    assert isinstance(model.unwrap_python_model().preprocessor, ColumnPreprocessor)
    proba = np.asarray(model.predict(features))
    assert ((proba > 0.5) == labels).mean() > 0.9
    assert client.get_registered_model("digits").name == "digits"
