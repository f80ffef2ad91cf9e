"""Fixtures for the serving tests: one real trained model, registered per test under a
name of its own, and a real uvicorn server on 127.0.0.1 in a thread."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from mlflow import MlflowClient
from mlflow.models import infer_signature

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.online import OnlineStore, online_store_path
from mlsys_core.features.store import (
    FeatureSetRef,
    load_feature_set,
    materialize_online,
    online_source_tables,
)
from mlsys_core.net import free_port
from mlsys_core.serving.config import LogConfig, RolloutConfig, ServeConfig
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import TrainedModel, train_and_log


@dataclass(frozen=True)
class Trained:
    settings: Settings
    feature_set: FeatureSetRef
    model: TrainedModel


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> Trained:
    """One real model (1 epoch) on the small feature set, in its own MLflow store."""
    settings = Settings(state_dir=tmp_path_factory.mktemp("serving_state"))
    feature_set = make_feature_set(settings)
    model = train_and_log(
        feature_set, TrainConfig(epochs=1, seed=0), Lake(settings.lake_dir), settings.tracking
    )
    assert model is not None
    # The online store the service finds the inputs a request omits in (views, lookups).
    lake = Lake(settings.lake_dir)
    _, spec = load_feature_set(feature_set, lake)
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    materialize_online(clean, spec, lake, OnlineStore(online_store_path(settings.root)))
    return Trained(settings, feature_set, model)


@pytest.fixture
def client(trained: Trained) -> MlflowClient:
    return configure_mlflow(trained.settings.tracking)


@pytest.fixture
def model_name() -> str:
    """A registered-model name private to the test: its versions and aliases are its own."""
    return f"serve-{uuid.uuid4().hex[:8]}"


def register(client: MlflowClient, name: str, model_uri: str, alias: str | None = None) -> str:
    version = str(mlflow.register_model(model_uri, name).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


@pytest.fixture(scope="session")
def sample_rows(trained: Trained) -> pd.DataFrame:
    """Test-split rows of the feature set, as a client would send them."""
    frame, _ = load_feature_set(trained.feature_set, Lake(trained.settings.lake_dir))
    return frame[frame[SPLIT] == "test"].head(400).reset_index(drop=True)


def records(rows: pd.DataFrame, spec: DatasetSpec, n: int | None = None) -> list[dict]:
    """JSON records carrying the keys, the event time and every model input (a missing
    value as an explicit null, which the service imputes rather than looks up)."""
    cols = list(dict.fromkeys([*spec.entity_keys, spec.event_timestamp, *spec.input_columns]))
    part = rows[cols].head(n) if n else rows[cols]
    out = []
    for row in part.to_dict(orient="records"):
        rec = {}
        for key, value in row.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                rec[key] = None
            elif isinstance(value, pd.Timestamp):
                rec[key] = value.isoformat()
            else:
                rec[key] = value.item() if hasattr(value, "item") else value
        out.append(rec)
    return out


def serve_config(mode: str = "blue_green", **rollout: object) -> ServeConfig:
    return ServeConfig(
        rollout=RolloutConfig(mode=mode, poll_interval_s=0.2, **rollout),
        log=LogConfig(flush_rows=50, flush_interval_s=0.5),
        torch_threads=None,  # leave the test process's torch settings alone
    )


@contextmanager
def serving(app: FastAPI, ready: bool = True) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    if ready:
        while httpx.get(f"{url}/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "no model became ready"
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _log_code_model(trained: Trained, file: str) -> str:
    configure_mlflow(trained.settings.tracking)
    signature = infer_signature(pd.DataFrame({"x": [1.0]}), np.array([0.5]))
    with mlflow.start_run(run_name=file):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name(file)),
            signature=signature,
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
        )
    return info.model_uri


@pytest.fixture(scope="session")
def failing_model_uri(trained: Trained) -> str:
    """A logged model whose predict always raises (a broken challenger)."""
    return _log_code_model(trained, "failing_model.py")


@pytest.fixture(scope="session")
def slow_model_uri(trained: Trained) -> str:
    """A logged model that takes 0.3 s per call (a slow challenger)."""
    return _log_code_model(trained, "slow_model.py")
