"""No train/serve skew with every feature kind: the registered pyfunc gives, for the same raw
rows, exactly what the training path computes in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from mlsys_core.config import Settings
from mlsys_core.spec.columns import L1Selection, VarianceSelection
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import ModelConfig
from mlsys_core.training.model import TabularMLP
from mlsys_core.training.pyfunc import MODEL_CODE, pip_requirements, write_model_artifacts
from mlsys_core.training.trainer import predict_proba
from tests.mlsys_core.features.test_columns import make, raw_rows


def _naive(frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow schemas take naive datetimes: naive UTC, as training logs them."""
    return frame.assign(at=frame["at"].dt.tz_localize(None))


def test_registered_pyfunc_matches_the_training_path(settings: Settings) -> None:
    frame, y = raw_rows(300, 0)
    pre = make([VarianceSelection(), L1Selection(C=0.5)]).fit(frame, y)
    config = ModelConfig(cardinalities=pre.cardinalities_, n_numeric=pre.n_numeric_, hidden=[16])
    torch.manual_seed(0)
    network = TabularMLP(config)
    x = torch.from_numpy(pre.transform(frame))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(20):  # a trained network, so the comparison is not of a constant
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            network(x), torch.from_numpy(y.astype(np.float32))
        )
        loss.backward()
        optimizer.step()
    network.eval()

    rows, _ = raw_rows(40, 9)  # new rows: unseen categories, missing and undecodable images
    rows.loc[0, ["airline", "colour"]] = ["", ""]
    rows.loc[1, ["amount", "carrier", "route"]] = [np.nan, None, "never-seen"]
    expected = predict_proba(network, pre.transform(rows), torch.device("cpu"))
    assert expected.std() > 0

    configure_mlflow(settings.tracking)
    inferred = infer_signature(_naive(frame), expected.astype(np.float64))
    inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
    with mlflow.start_run(), tempfile.TemporaryDirectory() as tmp:
        artifacts = write_model_artifacts(Path(tmp), pre, config, network)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            signature=ModelSignature(inputs=inputs, outputs=inferred.outputs),
            pip_requirements=pip_requirements(pre.requirements()),
        )
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    served = np.asarray(loaded.predict(_naive(rows)))
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)
    # The black-box interface the serving layer uses: raw frame in, probabilities out.
    unwrapped = loaded.unwrap_python_model().predict(None, _naive(rows))
    np.testing.assert_allclose(unwrapped, expected, rtol=1e-6, atol=1e-7)
    assert "pillow" in {r.split("==")[0] for r in pip_requirements(pre.requirements())}
