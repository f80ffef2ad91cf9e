"""Fixtures for the registry tests: a feature set and two real models trained on it."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.net import free_port
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import TrainedModel, train_and_log
from tests.integration.conftest import BIN, background, wait_http


@dataclass(frozen=True)
class TrainedPair:
    settings: Settings
    feature_set: FeatureSetRef
    models: tuple[TrainedModel, TrainedModel]


def _train_pair(settings: Settings, feature_set: FeatureSetRef) -> TrainedPair:
    models = tuple(
        train_and_log(
            feature_set,
            TrainConfig(epochs=2, seed=seed),
            Lake(settings.lake_dir),
            settings.tracking,
        )
        for seed in (0, 1)
    )
    return TrainedPair(settings, feature_set, models)


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
    return _train_pair(settings, make_feature_set(settings))


@pytest.fixture
def client(trained_pair: TrainedPair) -> MlflowClient:
    """MLflow pointed at the shared store (other tests may have pointed it elsewhere)."""
    return configure_mlflow(trained_pair.settings.tracking)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1: SQLite backend in WAL mode, local artifacts."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    db = folder / "mlflow.db"
    with sqlite3.connect(db) as con:  # WAL persists in the file: readers never block writers
        assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--default-artifact-root",
        (folder / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    # No job runner: its consumers (GenAI scoring, trace archival) are processes we never use.
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with background(cmd, env, folder / "server.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 180, folder / "server.log")
        yield f"http://127.0.0.1:{port}"
        # A throwaway server: its workers take ~20 s to drain on SIGTERM, so stop it hard.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def server_pair(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
    mlflow_server: str,
) -> TrainedPair:
    """Like ``trained_pair``, but every run and version lives in the MLflow server."""
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("server_state"), tracking_uri=mlflow_server
    )
    return _train_pair(settings, make_feature_set(settings))


@pytest.fixture(params=["sqlite", "server"])
def backend(request: pytest.FixtureRequest) -> TrainedPair:
    """Both stores the lifecycle must work on: the embedded ``sqlite:///`` store and a real
    tracking server. Points MLflow's fluent API at the chosen one."""
    pair = request.getfixturevalue("trained_pair" if request.param == "sqlite" else "server_pair")
    configure_mlflow(pair.settings.tracking)
    return pair
