"""Training tasks."""

from __future__ import annotations

from prefect import task

from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training import run
from mlsys_core.training.run import TrainedModel
from mlsys_core.training.trainer import TrainConfig


@task
def train_model(features: FeatureSetRef, config: TrainConfig, settings: Settings) -> TrainedModel:
    """Train on a feature-set version and log the run and pyfunc model to MLflow."""
    return run.train_and_log(features, config, settings)


@task
def latest_trained(settings: Settings) -> TrainedModel:
    return run.latest_trained(settings)
