"""The materialize flow: lake -> online store (views, lookups), full then incremental, equal
to offline; its hourly deployment; and the promotion that runs it before a version becomes
champion."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.materialize import materialize_features
from flows.register import register
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.offline import OfflineStore
from mlsys_core.features.online import encode_key, open_online_store
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.registry.lifecycle import alias_version
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import train_and_log

REPO = Path(__file__).resolve().parents[2]


def test_materialize_full_then_incremental_serves_offline_values(
    settings: Settings,
    small_spec: DatasetSpec,
    make_feature_set: Callable[[Settings], FeatureSetRef],
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_feature_set(settings)  # ingest and clean the small data into this lake
    first = materialize_features(spec=small_spec, as_of="2013-07-01T00:00:00Z")
    views = {v.name for v in small_spec.feature_views}
    assert {first.views[v].mode for v in views} == {"full"}  # nothing stored before
    later = first.as_of + timedelta(days=2)
    second = materialize_features(spec=small_spec, as_of=later)
    assert {second.views[v].mode for v in views} == {"incremental"}
    # The lookup tables are stored once and left alone while their snapshot stays.
    assert first.views["lookup:planes:tailnum"].mode == "full"
    assert second.views["lookup:planes:tailnum"].mode == "unchanged"
    said = "lookup:planes:tailnum: unchanged since it was last stored, nothing written"
    assert said in caplog.text  # the flow prints it, and Prefect logs what a flow prints

    lake = Lake(settings.lake_dir)
    tables = {t: lake.read(latest_clean(lake, t).clean) for t in ("flights", "weather")}
    entities = tables["flights"][["carrier", "origin", "dest", "tailnum"]].drop_duplicates()
    entities = entities.head(30).assign(at=pd.Timestamp(later))
    names = small_spec.view_features
    offline = OfflineStore(small_spec.feature_views, tables).get_historical_features(
        entities, names, "at"
    )
    store = open_online_store(settings.root)
    for i, entity in entities.iterrows():
        online = store.get_features(entity.to_dict(), names)
        expected = offline.loc[i, names]
        assert [None if pd.isna(v) else v for v in expected] == list(online.values())
    planes = lake.read(latest_clean(lake, "planes").clean).set_index("tailnum")
    (row,) = store.read("lookup:planes:tailnum", [encode_key(["N14228"], ["text"])])
    assert row.values["year"] == planes.loc["N14228", "year"]


def test_materialize_deployment_keeps_the_champion_fresh_hourly() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = [d for d in config["deployments"] if d["name"] == "materialize"]
    path, name = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert getattr(module, name) is materialize_features
    (schedule,) = deployment["schedules"]
    assert schedule["slug"] == "hourly-materialize" and schedule["cron"] == "45 * * * *"
    assert schedule["timezone"] == "America/New_York"
    assert deployment["parameters"] == {
        "spec": "nycflights13",
        "model_name": "flight-delay",
        "alias": "champion",
    }


@pytest.mark.slow  # trains a model and runs the registration flow
def test_a_version_becomes_champion_only_with_its_features_online(
    settings: Settings, make_feature_set: Callable[[Settings], FeatureSetRef]
) -> None:
    features = make_feature_set(settings)
    trained = train_and_log(
        features, TrainConfig(epochs=1), Lake(settings.lake_dir), settings.tracking
    )
    store = open_online_store(settings.root)
    assert store.states() == {}
    result = register(trained, auto_approve=True)
    assert alias_version(configure_mlflow(settings.tracking), settings.model_name, "champion") == (
        result.version.version
    )
    lake = Lake(settings.lake_dir)
    spec = DatasetSpec.model_validate(lake.manifest(features.snapshot)["spec"])
    states = store.states()
    plan = ServingPlan(spec)
    assert set(states) == set(plan.online_names)
    assert all(state.rows > 0 for state in states.values())
    # As of now for this data: just after its newest rows (the weather stops a day early).
    assert states["tail_arrivals"].watermark > pd.Timestamp("2013-12-31T23:00Z")
    assert states["origin_weather"].watermark > pd.Timestamp("2013-12-30T22:00Z")
    # The scheduled run for the champion finds what it needs in the lineage, not the spec.
    again = materialize_features(model_name=settings.model_name)
    assert set(again.views) == set(plan.online_names)
    assert again.views["lookup:airports:faa"].mode == "unchanged"
