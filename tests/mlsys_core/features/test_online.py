"""Tests for mlsys_core/features/online.py: materialize into SQLite, serve with a cache.

The reference is the offline store at the same timestamp: an online value must equal it.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys_core.datasets.nycflights13.views import flight_views
from mlsys_core.features.definitions import DefinitionError
from mlsys_core.features.offline import OfflineStore
from mlsys_core.features.online import OnlineStore, OnlineStoreError

VIEWS = flight_views()
FEATURES = [f for v in VIEWS for f in v.features]
ENTITY = ["carrier", "origin", "dest", "tailnum"]
T1 = pd.Timestamp("2013-06-10T12:00:00Z")
T2 = pd.Timestamp("2013-06-12T18:30:00Z")


@pytest.fixture(scope="module")
def tables(real_tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A quarter of the flights (every month) and all the weather, event times parsed."""
    flights = real_tables["flights"].sample(frac=0.25, random_state=3).reset_index(drop=True)
    out = {"flights": flights, "weather": real_tables["weather"].copy()}
    for frame in out.values():
        frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    return out


def _offline(tables: dict[str, pd.DataFrame], entities: pd.DataFrame, at: pd.Timestamp):
    rows = entities.assign(at=at)
    return OfflineStore(VIEWS, tables).get_historical_features(rows, FEATURES, "at")


def _same(online: dict, offline: pd.Series) -> None:
    for name, value in online.items():
        expected = offline[name]
        if pd.isna(expected):
            assert value is None, name
        else:
            assert value == pytest.approx(float(expected), rel=1e-12), name


def _entities(tables: dict[str, pd.DataFrame], n: int) -> pd.DataFrame:
    flights = tables["flights"]
    picked = flights[ENTITY].drop_duplicates().sample(n, random_state=0)
    unknown = pd.DataFrame([{"carrier": "ZZ", "origin": "XXX", "dest": "YYY", "tailnum": None}])
    return pd.concat([picked, unknown], ignore_index=True)


def test_online_values_equal_offline_values_at_the_same_time(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    store = OnlineStore(tmp_path / "online.db")
    result = store.materialize(VIEWS, tables, as_of=T1.to_pydatetime())
    assert {v.mode for v in result.views.values()} == {"full"}
    assert result.views["carrier_arrivals"].entities_written == 16
    assert store.watermark("tail_arrivals") == T1
    entities = _entities(tables, 150)
    offline = _offline(tables, entities, T1)
    for i, entity in entities.iterrows():
        _same(store.get_features(entity.to_dict(), FEATURES), offline.loc[i])
    # The weather and the history are real values, not all nulls.
    assert offline["origin_temp"].notna().sum() > 100
    assert (offline["tail_flights_28d"] > 0).sum() > 100


def test_incremental_materialize_equals_a_full_one(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    incremental = OnlineStore(tmp_path / "incremental.db")
    first = incremental.materialize(VIEWS, tables, as_of=T1.to_pydatetime())
    second = incremental.materialize(VIEWS, tables, as_of=T2.to_pydatetime(), incremental=True)
    full = OnlineStore(tmp_path / "full.db")
    full.materialize(VIEWS, tables, as_of=T2.to_pydatetime())

    def stored(path: Path) -> list[tuple]:
        with sqlite3.connect(path) as conn:
            return conn.execute(
                "SELECT view, entity_key, payload FROM online_rows ORDER BY 1, 2"
            ).fetchall()

    assert stored(tmp_path / "incremental.db") == stored(tmp_path / "full.db")
    for name, done in second.views.items():
        assert done.mode == "incremental"
        # Only rows known after the old watermark minus the view's horizon are read.
        assert done.source_rows_read < first.views[name].source_rows_read / 4, name
    assert incremental.watermark("origin_weather") == T2
    entities = _entities(tables, 40)
    offline = _offline(tables, entities, T2)
    for i, entity in entities.iterrows():
        _same(incremental.get_features(entity.to_dict(), FEATURES), offline.loc[i])


def test_reads_are_cached_until_the_next_materialize(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    store = OnlineStore(tmp_path / "online.db", cache_ttl_s=60)
    store.materialize(VIEWS, tables, as_of=T1.to_pydatetime())
    entity = {"carrier": "UA", "origin": "EWR", "dest": "ORD", "tailnum": "N14228"}
    names = ["carrier_flights_7d", "route_mean_delay_28d"]
    first = store.get_features(entity, names)
    misses = store.cache.misses
    assert store.get_features(entity, names) == first
    assert store.cache.misses == misses and store.cache.hits >= 2  # both views from the cache
    later = T1 + timedelta(days=3)
    store.materialize(VIEWS, tables, as_of=later.to_pydatetime(), incremental=True)
    moved = store.get_features(entity, names)
    assert store.cache.misses == misses + 2
    _same(moved, _offline(tables, pd.DataFrame([entity]), later).iloc[0])
    assert moved["carrier_flights_7d"] != first["carrier_flights_7d"]


def test_cache_entries_expire(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    store = OnlineStore(tmp_path / "online.db", cache_ttl_s=0.05, cache_size=1)
    store.materialize(VIEWS[:1], tables, as_of=T1.to_pydatetime())
    store.get_features({"carrier": "UA"}, ["carrier_flights_7d"])
    store.get_features({"carrier": "UA"}, ["carrier_flights_7d"])
    assert (store.cache.hits, store.cache.misses) == (1, 1)
    time.sleep(0.1)
    store.get_features({"carrier": "UA"}, ["carrier_flights_7d"])
    store.get_features({"carrier": "AA"}, ["carrier_flights_7d"])  # evicts UA (size 1)
    store.get_features({"carrier": "UA"}, ["carrier_flights_7d"])
    assert (store.cache.hits, store.cache.misses) == (1, 4)


def test_bad_materializations_and_reads_fail_clearly(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    store = OnlineStore(tmp_path / "online.db")
    weather = VIEWS[-1]
    store.materialize([weather], tables, as_of=T2.to_pydatetime())
    with pytest.raises(OnlineStoreError, match="later time"):
        store.materialize([weather], tables, as_of=T1.to_pydatetime(), incremental=True)
    changed = weather.model_copy(update={"ttl": timedelta(hours=5)})
    with pytest.raises(OnlineStoreError, match="changed since"):
        store.materialize([changed], tables, as_of=T2.to_pydatetime(), incremental=True)
    with pytest.raises(OnlineStoreError, match="timezone-aware"):
        store.materialize([weather], tables, as_of=T2.tz_localize(None).to_pydatetime())
    with pytest.raises(DefinitionError, match="run materialize"):
        store.get_features({"carrier": "UA"}, ["carrier_flights_7d"])
    with pytest.raises(OnlineStoreError, match="lacks"):
        store.get_features({"carrier": "UA"}, ["origin_temp"])
    # The failed calls changed nothing.
    assert store.watermark("origin_weather") == T2
    value = store.get_features({"origin": "JFK"}, ["origin_temp"])["origin_temp"]
    assert np.isfinite(value)
