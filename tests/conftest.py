"""Shared fixtures: seeded RNGs, an isolated state folder, and a small slice of the real data."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.datasets.nycflights13.sample import read_tables, sample_spec
from mlsys_core.features.store import FeatureSetRef, build_feature_set
from mlsys_core.registry.gate import GateConfig
from mlsys_core.registry.lifecycle import Stage
from mlsys_core.registry.promotion import auto_approval, walk
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import TrainedModel, train_and_log
from tests.crash.harness import CASES_PROPERTY, Case, Summary
from tests.services import prefect_template, redis_server

# Before anything imports prefect: tests never touch the user's or the demo's Prefect home,
# and the temporary servers they start send no telemetry.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="mlsys-test-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Flows and commands called without a dataset run on the reference one, under its model name
# (tests of the defaults themselves clear these).
os.environ["MLSYS_DATASET"] = "nycflights13"
os.environ["MLSYS_MODEL_NAME"] = "flight-delay"
os.environ.setdefault("MPLBACKEND", "Agg")

SLICE_FRACTION = 0.03  # ~10k flights: every month present, trains in seconds


_CRASH = Summary()  # the crash harness's cases, from every test report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, cases in report.user_properties:
        if key == CASES_PROPERTY:
            _CRASH.cases += [Case(**c) for c in cases]
            _CRASH.points |= {c["point"] for c in cases}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CRASH.cases:
        terminalreporter.write_line(_CRASH.line())


@pytest.fixture(autouse=True)
def _seed_rngs() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose state folder is private to the test (also for flows, via the env)."""
    state = tmp_path / "state"
    monkeypatch.setenv("MLSYS_STATE_DIR", str(state))
    return Settings()


@pytest.fixture(scope="session")
def real_tables() -> dict[str, pd.DataFrame]:
    """The four real nycflights13 tables, as read from the installed package."""
    return read_tables()


@pytest.fixture(scope="session")
def small_spec(
    tmp_path_factory: pytest.TempPathFactory, real_tables: dict[str, pd.DataFrame]
) -> DatasetSpec:
    """The nycflights13 spec pointed at CSV files holding a 3% sample of the flights
    (stratified by month) and the full dimension tables: same code path, small data."""
    return sample_spec(tmp_path_factory.mktemp("small_data"), SLICE_FRACTION, tables=real_tables)


@pytest.fixture(scope="session")
def make_feature_set(small_spec: DatasetSpec) -> Callable[[Settings], FeatureSetRef]:
    """Ingest, clean and assemble the small spec into the lake of the given settings, by
    the functions the flows run: ``clean_snapshot`` is the validate flow's all-or-nothing
    cleaning (plan, partitions, one commit of the clean and quarantine pair)."""

    def make(settings: Settings) -> FeatureSetRef:
        lake = Lake(settings.lake_dir)
        clean = {
            s.name: clean_snapshot(snapshot_source(s, lake), small_spec.contracts[s.name], lake)
            for s in small_spec.sources
        }
        return build_feature_set(clean, small_spec, lake)

    return make


@dataclass(frozen=True)
class Champion:
    """A model trained on the small slice and walked into production: the champion."""

    settings: Settings
    feature_set: FeatureSetRef
    trained: TrainedModel
    name: str
    version: str


@pytest.fixture(scope="session")
def make_champion(
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> Callable[..., Champion]:
    """Build the feature set, train one epoch, then register the model and walk it to
    production as the register flow does (smoke test, gate, auto-approval): the champion
    of ``name`` (default: the settings' model name) in the settings' MLflow store."""

    def make(settings: Settings, name: str | None = None) -> Champion:
        feature_set = make_feature_set(settings)
        trained = train_and_log(
            feature_set, TrainConfig(epochs=1), Lake(settings.lake_dir), settings.tracking
        )
        client = configure_mlflow(settings.tracking)
        name = name or settings.model_name or feature_set.model_name
        walked = walk(
            client,
            Lake(settings.lake_dir),
            trained,
            name,
            "tests",
            None,
            GateConfig(n_bootstrap=200),
            auto_approval("tests"),
        )
        assert walked.stage == Stage.PRODUCTION, walked.decision.reason
        return Champion(settings, feature_set, trained, name, walked.version.version)

    return make


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real, temporary Prefect API for the whole session (``prefect_test_harness``)."""
    # Imported here, after PREFECT_HOME is set above, and only by tests that run flows.
    from prefect.testing.utilities import prefect_test_harness  # noqa: PLC0415

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def prefect_db(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A Prefect home as a server's first start leaves it, to seed fresh homes with
    (:func:`seed_prefect_home`); made once for all the session's workers."""
    root = tmp_path_factory.getbasetemp()
    return prefect_template(root if worker_id == "master" else root.parent)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own (see :func:`redis_server`). ``make test`` installs
    redis-server through the system package manager when it is missing."""
    with redis_server(tmp_path / "redis") as url:
        yield url
