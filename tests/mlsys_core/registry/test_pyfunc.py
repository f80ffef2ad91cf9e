"""The served model: models-from-code with JSON and tensor artifacts, never a pickle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow
import pydantic
import pytest
import safetensors
import safetensors.torch
import sklearn
import torch
import yaml
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModelContext

from mlsys_core.data.lake import Lake
from mlsys_core.features.preprocess import TabularPreprocessor
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import ModelConfig
from mlsys_core.training.model import TabularMLP
from mlsys_core.training.pyfunc import (
    MODEL_CODE,
    DelayModel,
    load_weights,
    pip_requirements,
    write_model_artifacts,
)
from mlsys_core.training.run import held_out

# Versions read from the packages themselves, not from their distribution metadata.
INSTALLED = {
    "mlflow": mlflow.__version__,
    "torch": torch.__version__,
    "pandas": pd.__version__,
    "numpy": np.__version__,
    "scikit-learn": sklearn.__version__,
    "pydantic": pydantic.VERSION,
    "pyarrow": pyarrow.__version__,
    "safetensors": safetensors.__version__,
}


@pytest.fixture(scope="module")
def model_dir(trained_pair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first model's logged folder, downloaded as MLflow stores it."""
    configure_mlflow(trained_pair.settings.tracking)
    dst = tmp_path_factory.mktemp("model_download")
    uri = trained_pair.models[0].model_uri
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logged_model_contains_no_pickle(model_dir: Path) -> None:
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    assert files, "the model folder is empty"
    assert [p for p in files if p.suffix in {".pkl", ".pickle"}] == []
    # The learned state is plain JSON plus a safetensors file.
    for name in ("preprocessor.json", "model_config.json"):
        (found,) = [p for p in files if p.name == name]
        json.loads(found.read_text())
    (weights,) = [p for p in files if p.name == "weights.safetensors"]
    state = safetensors.torch.load_file(weights)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_mlmodel_is_models_from_code(model_dir: Path) -> None:
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert Path(pyfunc["model_code_path"]).name == MODEL_CODE.name
    assert "python_model" not in pyfunc  # the key of a cloudpickled PythonModel
    assert (model_dir / MODEL_CODE.name).read_text() == MODEL_CODE.read_text()
    assert set(pyfunc["artifacts"]) == {"preprocessor", "model_config", "weights"}


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logged_requirements_are_pinned_to_the_installed_versions(model_dir: Path) -> None:
    lines = [
        line.strip()
        for line in (model_dir / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pinned = dict(line.split("==", 1) for line in lines)
    assert all("==" in line for line in lines)
    assert pinned == INSTALLED


def test_pip_requirements_pin_every_package() -> None:
    assert sorted(pip_requirements()) == sorted(f"{k}=={v}" for k, v in INSTALLED.items())


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logged_model_loads_and_predicts_probabilities(trained_pair, client: MlflowClient) -> None:
    features = held_out(trained_pair.feature_set, Lake(trained_pair.settings.lake_dir)).inputs()
    model = mlflow.pyfunc.load_model(trained_pair.models[0].model_uri)
    proba = np.asarray(model.predict(features.head(50)))
    assert proba.dtype == np.float64
    assert proba.shape == (50,)
    assert np.all((proba > 0) & (proba < 1))


@pytest.fixture
def toy() -> tuple[TabularPreprocessor, ModelConfig, TabularMLP, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "colour": rng.choice(["red", "green", "blue"], 64),
            "size": rng.normal(10, 2, 64),
            "weight": np.where(rng.uniform(size=64) < 0.2, np.nan, rng.normal(size=64)),
        }
    )
    pre = TabularPreprocessor(numeric=["size", "weight"], categorical=["colour"]).fit(frame)
    config = ModelConfig(cardinalities=pre.cardinalities_, n_numeric=pre.n_numeric_, hidden=[8])
    network = TabularMLP(config)
    network.train()
    network(torch.as_tensor(pre.transform(frame)))  # move the BatchNorm running statistics
    network.eval()
    return pre, config, network, frame


def test_written_artifacts_round_trip_through_delay_model(toy, tmp_path: Path) -> None:
    pre, config, network, frame = toy
    artifacts = write_model_artifacts(tmp_path / "art", pre, config, network)

    assert set(artifacts) == {"preprocessor", "model_config", "weights"}
    assert all(Path(p).is_file() for p in artifacts.values())
    assert Path(artifacts["weights"]).suffix == ".safetensors"
    assert set(load_weights(Path(artifacts["weights"]))) == set(network.state_dict())

    model = DelayModel()
    model.load_context(PythonModelContext(artifacts=artifacts, model_config={}))
    served = model.predict(None, frame)

    with torch.no_grad():
        expected = torch.sigmoid(network(torch.as_tensor(pre.transform(frame)))).numpy()
    assert served.dtype == np.float64
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)
    # A list of records is accepted too, as a served JSON payload would arrive.
    records = frame.head(5).to_dict(orient="records")
    np.testing.assert_allclose(model.predict(None, records), served[:5], rtol=1e-6)


def test_models_logged_before_the_move_still_find_their_class() -> None:
    """Their copied ``model_code.py`` imports ``DelayModel`` from ``mlsys_core.registry``."""
    from mlsys_core.registry import pyfunc as old_home  # noqa: PLC0415

    assert old_home.DelayModel is DelayModel
    assert MODEL_CODE.read_text().count("from mlsys_core.training.pyfunc import DelayModel") == 1


def test_defining_the_model_class_raises_no_mlflow_warning() -> None:
    """MLflow checks a ``PythonModel``'s ``predict`` hints when the class is defined, so an
    unhinted one printed a warning on every command that imports the model."""
    code = "import mlsys_core.training.model_code"
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, check=True
    )
    assert "predict" not in done.stderr, done.stderr  # MLflow's warnings name the method
