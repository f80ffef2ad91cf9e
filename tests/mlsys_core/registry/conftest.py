"""Fixtures for the registry tests: a feature set and two real models trained on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.run import TrainedModel, train_and_log
from mlsys_core.training.trainer import TrainConfig


@dataclass(frozen=True)
class TrainedPair:
    settings: Settings
    feature_set: FeatureSetRef
    models: tuple[TrainedModel, TrainedModel]


@pytest.fixture(scope="session")
def trained_pair(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> TrainedPair:
    """Two real trained models (seeds 0 and 1) on one feature set, in one MLflow store.

    Tests register them under their own model names, so they do not see each other's
    versions and aliases.
    """
    settings = Settings(state_dir=tmp_path_factory.mktemp("registry_state"))
    feature_set = make_feature_set(settings)
    models = tuple(
        train_and_log(feature_set, TrainConfig(epochs=2, seed=seed), settings) for seed in (0, 1)
    )
    return TrainedPair(settings, feature_set, models)


@pytest.fixture
def client(trained_pair: TrainedPair) -> MlflowClient:
    """MLflow pointed at the shared store (other tests may have pointed it elsewhere)."""
    return configure_mlflow(trained_pair.settings)
