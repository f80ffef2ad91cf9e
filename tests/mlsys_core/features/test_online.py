"""Tests for mlsys_core/features/online.py: materialize into SQLite, serve with a cache.

The reference is the offline store at the same timestamp: an online value must equal it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys_core.datasets.nycflights13.views import flight_views
from mlsys_core.features.assemble import lookup_join
from mlsys_core.features.offline import OfflineStore
from mlsys_core.features.online import (
    JoinedTable,
    OnlineRow,
    OnlineStore,
    OnlineStoreBase,
    OnlineStoreError,
    ViewState,
    encode_key,
    materialize_joined,
    open_online_store,
    source_problems,
)
from mlsys_core.features.online_redis import RedisOnlineStore
from mlsys_core.spec.definitions import Aggregation, DefinitionError, Entity, WindowView
from tests.services import redis_server


def _with_a_sum(views: list) -> list:
    """The flights' views, the first window view with a sum beside its first aggregation (an
    entity with nothing known sums to 0 online as offline, not to a null)."""
    first = next(v for v in views if isinstance(v, WindowView))
    agg = first.aggregations[0]
    total = Aggregation(name="test_sum", function="sum", column=agg.column, window=agg.window)
    summed = first.model_copy(update={"aggregations": [*first.aggregations, total]})
    return [summed if v is first else v for v in views]


VIEWS = _with_a_sum(flight_views())
MakeStore = Callable[..., OnlineStoreBase]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the module's Redis-backed stores."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """Stores of one backend: the same ``name`` is the same store (another process's view
    of it), another name an independent one. Every interface test runs on both."""

    def make(name: str = "online.db", **options: float) -> OnlineStoreBase:
        if request.param == "sqlite":
            return OnlineStore(tmp_path / name, **options)
        url = request.getfixturevalue("redis_url")
        return RedisOnlineStore.from_url(url, prefix=f"{tmp_path.name}:{name}:", **options)

    return make


def _stored(store: OnlineStoreBase) -> list[tuple]:
    """Every stored row as (view, entity key, payload JSON), sorted."""
    if isinstance(store, RedisOnlineStore):
        return store.stored_rows()
    with sqlite3.connect(store.path) as conn:  # type: ignore[attr-defined]
        return conn.execute(
            "SELECT view, entity_key, payload FROM online_rows ORDER BY 1, 2"
        ).fetchall()


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
    tables: dict[str, pd.DataFrame], make_store: MakeStore
) -> None:
    store = make_store()
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
    assert offline["test_sum"].iloc[-1] == 0 and (offline["test_sum"] != 0).sum() > 100


def test_incremental_materialize_equals_a_full_one(
    tables: dict[str, pd.DataFrame], tmp_path: Path, make_store: MakeStore
) -> None:
    incremental = make_store("incremental.db")
    first = incremental.materialize(VIEWS, tables, as_of=T1.to_pydatetime())
    second = incremental.materialize(VIEWS, tables, as_of=T2.to_pydatetime(), incremental=True)
    full = make_store("full.db")
    full.materialize(VIEWS, tables, as_of=T2.to_pydatetime())

    assert _stored(incremental) == _stored(full)
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
    tables: dict[str, pd.DataFrame], make_store: MakeStore
) -> None:
    store = make_store(cache_ttl_s=60)
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


def test_cache_entries_expire(tables: dict[str, pd.DataFrame], make_store: MakeStore) -> None:
    store = make_store(cache_ttl_s=0.05, cache_size=1)
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
    tables: dict[str, pd.DataFrame], make_store: MakeStore
) -> None:
    store = make_store()
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


# -- keys, lookups, as-of tables and the interface ---------------------------------------------
def test_a_key_has_one_encoding_from_its_contract_type() -> None:
    # An integer column held as float64 by the contract, the request's int, numpy's: one key.
    number = ["number"]
    assert {encode_key([v], number) for v in (7, 7.0, np.int64(7), np.float64(7.0), "7")} == {
        '["7"]'
    }
    assert encode_key([7.5], number) == '["7.5"]' and encode_key([None], number) == "[null]"
    # Text stays text ("007" is not 7); a float that pandas read into a text column is its int.
    assert encode_key(["007"], ["text"]) == '["007"]'
    assert encode_key([7.0], ["text"]) == '["7"]'
    # Times: naive is UTC; any offset is converted.
    naive = encode_key([pd.Timestamp("2013-01-01 05:00")], ["time"])
    assert naive == encode_key(["2013-01-01T00:00:00-05:00"], ["time"])
    assert encode_key(["UA", 7.0], ["text", "number"]) == encode_key(["UA", 7], ["auto", "auto"])
    assert encode_key([float("nan"), pd.NaT], ["number", "time"]) == "[null, null]"


def _events(keys: dict[str, list]) -> pd.DataFrame:
    n = len(next(iter(keys.values())))
    at = pd.date_range("2013-01-01", periods=n, freq="h", tz="UTC")
    return pd.DataFrame({**keys, "at": at, "x": np.arange(n, dtype=float)})


def _count_view(name: str, keys: list[str]) -> WindowView:
    return WindowView(
        name=name,
        source="events",
        entity=Entity(name=name, join_keys=keys),
        timestamp="at",
        aggregations=[Aggregation(name=f"{name}_n", function="count", column="x", window="P1D")],
    )


@pytest.mark.parametrize(
    ("keys", "kinds", "entity"),
    [
        # Integer keys as the contract stores them (float64) and as a request sends them.
        ({"user": [1.0, 1.0, 2.0, 3.0]}, ["number"], {"user": 1}),
        ({"carrier": ["UA", "UA", "AA", "B6"]}, ["text"], {"carrier": "UA"}),
        (
            {"origin": ["EWR", "EWR", "JFK", "EWR"], "gate": [11.0, 11.0, 11.0, 12.0]},
            ["text", "number"],
            {"origin": "EWR", "gate": 11},
        ),
    ],
    ids=["integer", "string", "two-column"],
)
def test_materialized_keys_are_found_by_a_requests_values(
    make_store: MakeStore, keys: dict, kinds: list, entity: dict
) -> None:
    view = _count_view("v", list(keys))
    store = make_store()
    as_of = pd.Timestamp("2013-01-02T00:00Z").to_pydatetime()
    store.materialize([view], {"events": _events(keys)}, as_of=as_of, key_kinds={"v": kinds})
    assert store.get_features(entity, ["v_n"]) == {"v_n": 2}  # found: not the default 0
    (state,) = store.states().values()
    assert state.key_kinds == kinds and state.rows == 3


def test_lookup_tables_are_stored_by_key_and_rewritten_when_their_snapshot_moves(
    make_store: MakeStore,
) -> None:
    planes = pd.DataFrame(
        {"tailnum": ["N1", "N2", None], "year": [1999.0, np.nan, 2001.0], "maker": ["A", None, "C"]}
    )
    table = JoinedTable(kind="lookup", source="planes", keys=["tailnum"], columns=["year", "maker"])
    store = make_store()
    first = materialize_joined(store, table, planes, ["text"], snapshot="s1")
    assert (first.mode, first.entities_written) == ("full", 2)  # a null key is never stored
    rows = store.read(table.name, [encode_key(["N1"], ["text"]), encode_key(["N9"], ["text"])])
    assert rows[0].values == {"tailnum": "N1", "year": 1999.0, "maker": "A"} and rows[1] is None
    assert store.states()[table.name].columns == {
        "tailnum": "object",
        "year": "float64",
        "maker": "object",
    }
    assert materialize_joined(store, table, planes, ["text"], snapshot="s1").mode == "unchanged"
    moved = planes.assign(year=[2000.0, 2002.0, 2001.0])
    assert materialize_joined(store, table, moved, ["text"], snapshot="s2").mode == "full"
    (row,) = store.read(table.name, [encode_key(["N2"], ["text"])])
    assert row.values["year"] == 2002.0
    with pytest.raises(OnlineStoreError, match="repeats keys"):
        materialize_joined(store, table, pd.concat([planes, planes]), ["text"], snapshot="s3")


def test_a_lookup_table_with_repeated_null_keys_reads_the_same_online_and_offline(
    make_store: MakeStore,
) -> None:
    """Both stores leave out rows with a null key, so neither refuses them as repeats."""
    planes = pd.DataFrame({"tailnum": ["N1", None, "N2", np.nan], "seats": [100, 7, 200, 8]})
    table = JoinedTable(kind="lookup", source="planes", keys=["tailnum"], columns=["seats"])
    store = make_store()
    assert materialize_joined(store, table, planes, ["text"], snapshot="s1").entities_written == 2
    asked = pd.DataFrame({"tailnum": ["N2", "N1", "N9"]})
    offline = lookup_join(asked, planes, on={"tailnum": "tailnum"}, columns={"seats": "seats"})
    rows = store.read(table.name, [encode_key([k], ["text"]) for k in asked["tailnum"]])
    online = [np.nan if row is None else float(row.values["seats"]) for row in rows]
    np.testing.assert_array_equal(offline["seats"].to_numpy(), online)


def test_an_as_of_table_holds_the_newest_row_known_at_its_watermark(make_store: MakeStore) -> None:
    at = pd.to_datetime(["2013-01-01T00:00Z", "2013-01-01T02:00Z", "2013-01-01T04:00Z"])
    readings = pd.DataFrame({"station": ["A", "A", "A"], "at": at, "temp": [1.0, 2.0, 3.0]})
    table = JoinedTable(
        kind="as_of",
        source="weather",
        keys=["station"],
        columns=["temp"],
        timestamp="at",
        lag=timedelta(hours=1),
    )
    store = make_store()
    # At 03:00 the 02:00 reading is known (lag 1 h: at 03:00, inclusive); 04:00's is not.
    done = materialize_joined(
        store, table, readings, ["text"], as_of=pd.Timestamp("2013-01-01T03:00Z")
    )
    assert done.entities_written == 1
    (row,) = store.read(table.name, [encode_key(["A"], ["text"])])
    assert row.values["temp"] == 2.0 and row.as_of_ns == at[1].value
    assert store.watermark(table.name) == pd.Timestamp("2013-01-01T03:00Z")


class DictStore(OnlineStoreBase):
    """A second backend in a few lines: the three primitives over a dict."""

    def __init__(self) -> None:
        super().__init__(cache_ttl_s=0.0)
        self.views: dict[str, ViewState] = {}
        self.data: dict[str, dict[str, OnlineRow]] = {}

    def load_states(self) -> dict[str, ViewState]:
        return dict(self.views)

    def _write(self, state: ViewState, rows, replace: bool) -> int:  # noqa: ANN001
        stored = {} if replace else dict(self.data.get(state.name, {}))
        stored |= {row.key: row for row in rows}
        self.data[state.name] = stored
        self.views[state.name] = state.model_copy(update={"rows": len(stored)})
        return len(stored)

    def read_rows(self, view: str, keys) -> list[OnlineRow | None]:  # noqa: ANN001
        return [self.data.get(view, {}).get(k) for k in keys]


def test_another_backend_needs_only_the_three_primitives(
    tables: dict[str, pd.DataFrame], make_store: MakeStore
) -> None:
    sqlite, other = make_store(), DictStore()
    for store in (sqlite, other):
        store.materialize(VIEWS, tables, as_of=T1.to_pydatetime())
        store.materialize(VIEWS, tables, as_of=T2.to_pydatetime(), incremental=True)
    entities = _entities(tables, 30)
    for _, entity in entities.iterrows():
        assert other.get_features(entity.to_dict(), FEATURES) == sqlite.get_features(
            entity.to_dict(), FEATURES
        )
    assert {n: s.rows for n, s in other.states().items()} == {
        n: s.rows for n, s in sqlite.states().items()
    }


def test_problems_say_what_is_missing_or_empty(make_store: MakeStore) -> None:
    store = make_store()
    assert source_problems(store, ["v", "w"]) == {
        "v": "not materialized",
        "w": "not materialized",
    }
    as_of = pd.Timestamp("2013-01-02T00:00Z").to_pydatetime()
    events = _events({"user": [1.0, 2.0]})
    store.materialize([_count_view("v", ["user"])], {"events": events}, as_of=as_of)
    store.materialize([_count_view("w", ["user"])], {"events": events.iloc[:0]}, as_of=as_of)
    assert source_problems(store, ["v", "w"]) == {"w": "materialized empty"}


def test_another_processs_write_is_seen_within_the_state_refresh(make_store: MakeStore) -> None:
    events = _events({"user": [1.0, 1.0, 2.0]})
    view = _count_view("v", ["user"])
    reader = make_store(cache_ttl_s=60)
    reader.states_ttl_s = 0.05
    writer = make_store()
    writer.materialize([view], {"events": events}, as_of=pd.Timestamp("2013-01-01T00:30Z"))
    assert reader.get_features({"user": 1}, ["v_n"]) == {"v_n": 1}  # now cached for 60 s
    writer.materialize([view], {"events": events}, as_of=pd.Timestamp("2013-01-01T05:00Z"))
    time.sleep(0.1)
    assert reader.get_features({"user": 1}, ["v_n"]) == {"v_n": 2}


@pytest.mark.slow  # two CLI processes start
def test_processes_configured_with_one_redis_url_read_the_same_values(
    redis_url: str, tmp_path: Path
) -> None:
    """Serving replicas on several machines: each reads MLSYS_ONLINE_STORE (Settings) and
    sees what one writer stored, through ``mlsys features get``, in separate processes."""
    events = _events({"user": [1.0, 1.0, 2.0]})
    writer = open_online_store(tmp_path, redis_url)
    assert isinstance(writer, RedisOnlineStore)
    as_of = pd.Timestamp("2013-01-01T05:00Z").to_pydatetime()
    writer.materialize([_count_view("v", ["user"])], {"events": events}, as_of=as_of)
    env = {**os.environ, "MLSYS_ONLINE_STORE": redis_url, "MLSYS_STATE_DIR": str(tmp_path)}
    mlsys = Path(sys.executable).with_name("mlsys")
    replicas = [
        subprocess.Popen(
            [str(mlsys), "features", "get", "user=1", "--names", "v_n"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    answers = [json.loads(p.communicate(timeout=120)[0]) for p in replicas]
    assert all(p.returncode == 0 for p in replicas)
    assert answers == [{"v_n": 2}, {"v_n": 2}]
    assert not (tmp_path / "online").exists()  # nobody fell back to the embedded SQLite


def test_a_store_url_picks_its_backend_by_scheme_and_an_unknown_one_is_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    """``redis://`` resolves through the ``mlsys.online_stores`` entry points, as a third
    party's backend would; the core names no backend besides SQLite."""
    assert isinstance(open_online_store(tmp_path, redis_url), RedisOnlineStore)
    path = tmp_path / "elsewhere.db"
    assert open_online_store(tmp_path, f"sqlite:///{path}").path == path
    with pytest.raises(OnlineStoreError, match=r"'memcached://x'.*sqlite:///PATH or redis://"):
        open_online_store(tmp_path, "memcached://x")
