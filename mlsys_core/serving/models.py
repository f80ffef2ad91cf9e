"""Registered model versions as the service holds them: loaded once, then shared.

A ``Deployment`` is the immutable set of loaded variants one request sees. Reloading builds
a new one next to the old and swaps a single reference, so a request in flight finishes
on the versions it started with and the next one sees only the new set: the switch is
atomic and drops nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlsys_core.tracking import download_model
from mlsys_core.training.calibration import CALIBRATION_ARTIFACT, PlattCalibration

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One version, ready to score: the pyfunc's Python model and its calibration."""

    name: str
    version: str
    run_id: str | None
    python_model: Any  # the pyfunc's PythonModel: raw feature frame in, probabilities out
    calibration: PlattCalibration
    calibrated: bool  # False when the run logged no calibration (identity is applied)
    tags: dict[str, str] = field(default_factory=dict)

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Raw and calibrated probabilities of the positive class."""
        raw = np.asarray(self.python_model.predict(None, frame), np.float64).reshape(-1)
        if len(raw) != len(frame):
            raise RuntimeError(f"model v{self.version} returned {len(raw)} rows for {len(frame)}")
        return raw, self.calibration.apply(raw)

    def unseen(self, frame: pd.DataFrame) -> list[list[str]]:
        """Per row, the categorical inputs this version scores as an unknown category; none
        for a model whose code cannot tell (a version logged before it could)."""
        told = getattr(self.python_model, "unseen", None)
        return told(frame) if told is not None else [[] for _ in range(len(frame))]


@dataclass(frozen=True, eq=False)
class Deployment:
    """The variants serving now, by name (``champion``, ``challenger``)."""

    variants: dict[str, LoadedModel]

    def version_of(self, variant: str) -> str | None:
        model = self.variants.get(variant)
        return model.version if model else None


def load_calibration(client: MlflowClient, run_id: str | None) -> PlattCalibration | None:
    """The run's calibration artifact, or None if it has none (a model from before it)."""
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, CALIBRATION_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return PlattCalibration.model_validate(json.loads(Path(path).read_text()))


def load_version(client: MlflowClient, name: str, version: str) -> LoadedModel:
    """Load a registered version's pyfunc once; scoring then never touches MLflow."""
    mv = client.get_model_version(name, version)
    pyfunc = mlflow.pyfunc.load_model(download_model(client, f"models:/{name}/{version}"))
    calibration = load_calibration(client, mv.run_id)
    if calibration is None:
        log.warning("%s v%s has no calibration artifact: serving raw probabilities", name, version)
    return LoadedModel(
        name=name,
        version=str(version),
        run_id=mv.run_id,
        python_model=pyfunc.unwrap_python_model(),
        calibration=calibration or PlattCalibration(method="identity"),
        calibrated=calibration is not None,
        tags=dict(mv.tags),
    )
