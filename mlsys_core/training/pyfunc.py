"""The served model: raw feature rows in, delay probability out.

Saved as MLflow "models from code" with JSON and safetensors artifacts, so loading a model
runs our code and never unpickles an object. A legacy ``weights.pt`` still loads, through
``torch.load(weights_only=True)``; any file that is not plain tensors is refused with
``UnsafeArtifactError`` before anything in it runs.
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mlsys_core.atomic import write_text_atomically
from mlsys_core.crashpoints import crash_point
from mlsys_core.features.columns import ColumnPreprocessor, load_preprocessor
from mlsys_core.features.preprocess import TabularPreprocessor
from mlsys_core.training.config import ModelConfig
from mlsys_core.training.model import TabularMLP
from mlsys_core.training.trainer import predict_proba

MODEL_CODE = Path(__file__).with_name("model_code.py")
ARTIFACTS = ("preprocessor", "model_config", "weights")


class UnsafeArtifactError(ValueError):
    """A model artifact that is not what it claims (e.g. a pickle posing as weights)."""


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors as safetensors, atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
        crash_point("pyfunc.weights")  # whole, not in place
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights artifact without executing anything in it."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        # A legacy .pt: tensors only, never arbitrary objects.
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError) as err:
        raise UnsafeArtifactError(
            f"refusing to load model weights {path.name}: not a plain tensor file ({err})"
        ) from None


class DelayModel(mlflow.pyfunc.PythonModel):
    """Preprocessing and network in one pyfunc, so serving applies the training transform."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        paths = context.artifacts
        # The plain preprocessor, or the column one with extractors and selectors.
        self.preprocessor = load_preprocessor(json.loads(Path(paths["preprocessor"]).read_text()))
        config = ModelConfig.model_validate_json(Path(paths["model_config"]).read_text())
        self.network = TabularMLP(config)
        self.network.load_state_dict(load_weights(Path(paths["weights"])))
        self.network.eval()

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict | None = None,
    ) -> np.ndarray:
        # The hints are MLflow's "no schema from hints" kind (the logged signature validates):
        # without any, MLflow warns on every import of this module.
        features = self.preprocessor.transform(self._complete(model_input))
        return predict_proba(self.network, features, torch.device("cpu")).astype(np.float64)

    def unseen(self, model_input: pd.DataFrame) -> list[list[str]]:
        """Per row, the categorical inputs whose value training never kept: the network
        scores them as an unknown category."""
        return self.preprocessor.unseen(self._complete(model_input))

    def _complete(self, model_input: pd.DataFrame) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        # The signature marks every feature optional: an absent one is missing, so imputed.
        absent = [c for c in self.preprocessor.feature_names_in_ if c not in frame.columns]
        return frame.assign(**dict.fromkeys(absent, np.nan))


def write_model_artifacts(
    folder: Path,
    preprocessor: TabularPreprocessor | ColumnPreprocessor,
    config: ModelConfig,
    network: torch.nn.Module,
) -> dict[str, str]:
    """Write what ``DelayModel.load_context`` reads; returns MLflow's ``artifacts`` mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ARTIFACTS}
    paths["preprocessor"] = paths["preprocessor"].with_suffix(".json")
    paths["model_config"] = paths["model_config"].with_suffix(".json")
    paths["weights"] = paths["weights"].with_suffix(".safetensors")
    # Each file whole or absent: a reader of a cut-short folder gets a clear error, not a
    # truncated JSON document.
    write_text_atomically(paths["preprocessor"], json.dumps(preprocessor.to_dict(), indent=1))
    write_text_atomically(paths["model_config"], config.model_dump_json())
    save_weights(network.state_dict(), paths["weights"])
    return {name: str(path) for name, path in paths.items()}


def pip_requirements(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Pinned to what trained the model; explicit, because inferring them takes ~13 s.

    ``extra``: packages the fitted preprocessing needs at serving (e.g. the packaged
    sentence-embedding model).
    """
    names = [
        "mlflow",
        "torch",
        "pandas",
        "numpy",
        "scikit-learn",
        "pydantic",
        "pyarrow",
        "safetensors",
        *extra,
    ]
    return [f"{name}=={version(name)}" for name in names]
