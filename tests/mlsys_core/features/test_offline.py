"""Tests for mlsys_core/features/offline.py: exact values and no leakage, by construction.

Values are checked against a brute-force reference that scans every source row for every
entity row; leakage with hypothesis: rewriting or deleting every source row that became
known at or after a cut time never changes a feature of an entity row at or before the cut.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsys_core.features.offline import EntityRowsError, OfflineStore
from mlsys_core.spec.definitions import (
    Aggregation,
    Availability,
    DefinitionError,
    Entity,
    LatestView,
    WindowView,
)

T0 = pd.Timestamp("2013-03-10T00:00:00Z")
SHOP = Entity(name="shop", join_keys=["shop"])
HOUR = timedelta(hours=1)
PAIR = Entity(name="pair", join_keys=["shop", "lane"])


def _window_view(entity: Entity = SHOP, name: str = "orders") -> WindowView:
    aggs = []
    for minutes in (60, 240):
        w = timedelta(minutes=minutes)
        aggs += [
            Aggregation(name=f"{name}_n_{minutes}", function="count", column="value", window=w),
            Aggregation(name=f"{name}_mean_{minutes}", function="mean", column="value", window=w),
            Aggregation(name=f"{name}_sum_{minutes}", function="sum", column="value", window=w),
            Aggregation(
                name=f"{name}_rate_{minutes}",
                function="rate",
                column="value",
                threshold=10.0,
                window=w,
            ),
        ]
    return WindowView(
        name=name,
        source="events",
        entity=entity,
        timestamp="at",
        availability=Availability(
            offset_minutes=["delay"], lag=timedelta(minutes=10), at_least=timedelta(minutes=30)
        ),
        aggregations=aggs,
    )


# Open events: a row opens 5 minutes after ``at`` and closes ``close`` minutes after ``at``
# (never, when null); mean_age is how long the open rows have waited.
OPEN = WindowView(
    name="open",
    source="events",
    entity=SHOP,
    timestamp="at",
    availability=Availability(lag=timedelta(minutes=5)),
    closes=Availability(offset_minutes=["close"]),
    aggregations=[
        Aggregation(name="open_n_60", function="count", column="value", window=timedelta(hours=1)),
        Aggregation(
            name="open_mean_60", function="mean", column="value", window=timedelta(hours=1)
        ),
        Aggregation(name="open_sum_120", function="sum", column="value", window=timedelta(hours=2)),
        Aggregation(
            name="open_rate_120",
            function="rate",
            column="value",
            threshold=10.0,
            window=timedelta(hours=2),
        ),
        Aggregation(
            name="open_age_120", function="mean_age", column="value", window=timedelta(hours=2)
        ),
    ],
)
LATEST = LatestView(
    name="reading",
    source="readings",
    entity=SHOP,
    timestamp="at",
    lag=timedelta(minutes=5),
    ttl=timedelta(minutes=90),
    columns={"temp": "shop_temp", "label": "shop_label"},
)
WINDOW = _window_view().model_copy(
    update={
        "aggregations": [
            *_window_view().aggregations,
            Aggregation(
                name="orders_age_240",
                function="mean_age",
                column="value",
                window=timedelta(minutes=240),
            ),
        ]
    }
)
PAIRS = _window_view(PAIR, "pairs")
VIEWS = [WINDOW, PAIRS, OPEN, LATEST]
FEATURES = [f for v in VIEWS for f in v.features]
# Outcomes learned later, at another time column (``settled``; before ``at`` in some rows,
# null in others), as shares of text classes and of whole numbers: a guest's cancellations.
SETTLED = WindowView(
    name="settled",
    source="events",
    entity=SHOP,
    timestamp="at",
    availability=Availability(from_column="settled", lag=timedelta(minutes=5)),
    aggregations=[
        Aggregation(name="settled_n_60", function="count", column="outcome", window=HOUR),
        Aggregation(
            name="settled_yes_60",
            function="rate",
            column="outcome",
            positive=["yes", "maybe"],
            window=HOUR,
        ),
        Aggregation(
            name="settled_lane_240",
            function="rate",
            column="lane",
            positive=[1, "2"],
            window=4 * HOUR,
        ),
    ],
)


# -- brute-force reference ---------------------------------------------------------------------
def _reference_availability(
    view: WindowView | LatestView, source: pd.DataFrame, rule: Availability | None = None
) -> pd.Series:
    if isinstance(view, LatestView):
        return source[view.timestamp] + view.lag
    rule = rule or view.availability
    minutes = sum(
        (source[c].astype("float64") for c in rule.offset_minutes),
        pd.Series(0.0, index=source.index),
    )
    event = source[view.timestamp]
    start = event if rule.from_column is None else source[rule.from_column]
    avail = start + pd.to_timedelta(minutes, unit="min") + rule.lag
    floors = [event] if rule.from_column else []  # never known before it happened
    floors += [event + rule.at_least] if rule.at_least is not None else []
    for floor in floors:
        avail = avail.where(avail.isna() | (avail >= floor), floor)
    return avail.where(minutes.notna() & start.notna())


def _reference_window(
    view: WindowView, source: pd.DataFrame, avail: pd.Series, mask: pd.Series, t: pd.Timestamp
) -> dict:
    values = {}
    if view.closes is not None:  # open events: not closed strictly before t
        closed = _reference_availability(view, source, view.closes)
        mask &= ~(closed < t)
    for agg in view.aggregations:
        inside = mask & (avail >= t - agg.window) & source[agg.column].notna()
        hits = source.loc[inside, agg.column]
        if agg.function == "count":
            values[agg.name] = len(hits)
        elif agg.function == "sum":  # an empty window spent nothing
            values[agg.name] = hits.sum()
        elif len(hits) == 0:
            values[agg.name] = np.nan
        elif agg.function == "mean":
            values[agg.name] = hits.mean()
        elif agg.function == "rate" and agg.positive is None:
            values[agg.name] = (hits > agg.threshold).mean()
        elif agg.function == "rate":  # classes: text to text, numbers to numbers
            classes = [str(p) for p in agg.positive]
            if pd.api.types.is_numeric_dtype(hits):
                classes = [float(p) for p in agg.positive]
            values[agg.name] = hits.isin(classes).mean()
        else:  # mean_age, in minutes
            values[agg.name] = ((t - avail[inside]).dt.total_seconds() / 60).mean()
    return values


def reference_features(
    views: list, tables: dict[str, pd.DataFrame], rows: pd.DataFrame, ts: str
) -> pd.DataFrame:
    """Scan every source row for every entity row: slow, obviously right."""
    out = []
    for _, row in rows.iterrows():
        t, values = row[ts], {}
        for view in views:
            source = tables[view.source]
            avail = _reference_availability(view, source)
            mask = avail.notna() & (avail < t)
            for key in view.entity.join_keys:
                mask &= source[key] == row[key]
            if isinstance(view, WindowView):
                values |= _reference_window(view, source, avail, mask, t)
            else:
                known = source[mask]
                newest = known[avail[mask] == avail[mask].max()].tail(1)  # ties: the last row
                fresh = len(newest) and newest[view.timestamp].iloc[0] >= t - view.ttl
                for col, name in view.columns.items():
                    values[name] = newest[col].iloc[0] if fresh else None
        out.append(values)
    return pd.DataFrame(out, index=rows.index)


def _compare(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    for col in expected.columns:
        a, e = actual[col], expected[col]
        if col.endswith("_label"):
            assert a.where(a.notna(), None).tolist() == e.where(e.notna(), None).tolist(), col
        else:
            # Ages are sums of seconds since the first availability: exact to well under 1 ms.
            atol = 1e-5 if "_age_" in col else 0.0
            np.testing.assert_allclose(
                a.to_numpy(np.float64),
                e.to_numpy(np.float64),
                rtol=1e-9,
                atol=atol,
                equal_nan=True,
                err_msg=col,
            )


# -- generated data ----------------------------------------------------------------------------
_offset = st.one_of(st.none(), st.integers(-45, 120))
_value = st.one_of(st.none(), st.integers(-20, 60).map(float))
_close = st.one_of(st.none(), st.integers(-10, 200))
event_rows = st.lists(
    st.tuples(
        st.sampled_from("abc"), st.integers(0, 2), st.integers(0, 600), _offset, _value, _close
    ),
    max_size=40,
)
reading_rows = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 600), st.floats(-20, 40), _value),
    max_size=25,
)
entity_rows = st.lists(
    st.tuples(st.sampled_from("abcd"), st.integers(0, 2), st.integers(0, 720)),
    min_size=1,
    max_size=25,
)


def _events(rows: list) -> pd.DataFrame:
    """Rows of (shop, lane, minute, delay, value[, close]); no close: never closes."""
    rows = [(*r, None) if len(r) == 5 else r for r in rows]
    frame = pd.DataFrame(rows, columns=["shop", "lane", "minute", "delay", "value", "close"])
    return pd.DataFrame(
        {
            "shop": frame["shop"].astype(object),
            "lane": frame["lane"].astype("int64"),
            "at": T0 + pd.to_timedelta(frame["minute"].astype("int64"), unit="min"),
            "delay": frame["delay"].astype("float64"),
            "value": frame["value"].astype("float64"),
            "close": frame["close"].astype("float64"),
            # Settled ``close`` minutes after ``at``, with an outcome read off the value.
            "settled": T0
            + pd.to_timedelta(frame["minute"] + frame["close"].astype("float64"), unit="min"),
            "outcome": frame["value"].map(
                lambda v: None if pd.isna(v) else ("yes", "no", "maybe")[int(v) % 3]
            ),
        }
    )


def _readings(rows: list) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["shop", "minute", "temp", "code"])
    return pd.DataFrame(
        {
            "shop": frame["shop"].astype(object),
            "at": T0 + pd.to_timedelta(frame["minute"].astype("int64"), unit="min"),
            "temp": frame["temp"].astype("float64"),
            "label": frame["code"].map(lambda c: None if pd.isna(c) else f"c{int(c)}"),
        }
    )


def _entities(rows: list) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["shop", "lane", "minute"])
    return pd.DataFrame(
        {
            "shop": frame["shop"].astype(object).to_numpy(),
            "lane": frame["lane"].astype("int64").to_numpy(),
            "ts": (T0 + pd.to_timedelta(frame["minute"].astype("int64"), unit="min")).to_numpy(),
        },
        index=pd.RangeIndex(100, 100 + 3 * len(frame), 3),  # not 0..n-1: the index must survive
    )


# Bounded, so the property tests take seconds; no example database left in the checkout.
HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@HYPOTHESIS
@given(events=event_rows, readings=reading_rows, rows=entity_rows)
def test_features_equal_a_brute_force_scan(events: list, readings: list, rows: list) -> None:
    tables = {"events": _events(events), "readings": _readings(readings)}
    entity = _entities(rows)
    actual = OfflineStore(VIEWS, tables).get_historical_features(entity, FEATURES, "ts")
    assert list(actual.index) == list(entity.index)
    pd.testing.assert_frame_equal(actual[entity.columns], entity)
    _compare(actual, reference_features(VIEWS, tables, entity, "ts"))


@HYPOTHESIS
@given(events=event_rows, rows=entity_rows)
def test_outcomes_learned_at_another_time_equal_a_brute_force_scan(
    events: list, rows: list
) -> None:
    tables = {"events": _events(events)}
    entity = _entities(rows)
    actual = OfflineStore([SETTLED], tables).get_historical_features(entity, SETTLED.features, "ts")
    _compare(actual, reference_features([SETTLED], tables, entity, "ts"))


@HYPOTHESIS
@given(events=event_rows, readings=reading_rows, rows=entity_rows, future=st.data())
def test_no_feature_sees_a_row_known_at_or_after_its_timestamp(
    events: list, readings: list, rows: list, future: st.DataObject
) -> None:
    """Rewrite or delete every source row known at or after a cut time (and add new ones):
    features of entity rows at or before the cut stay exactly the same."""
    tables = {"events": _events(events), "readings": _readings(readings)}
    # Cut at a time a source row becomes known, or anywhere: ties are where leaks hide.
    known_at = [
        t
        for name, view in (("events", WINDOW), ("readings", LATEST))
        for t in _reference_availability(view, tables[name]).dropna()
    ]
    anywhere = st.integers(0, 720).map(lambda m: T0 + pd.Timedelta(minutes=m))
    cut_at = future.draw(st.sampled_from(known_at) | anywhere if known_at else anywhere)
    every_key_at_cut = [(shop, lane, 0) for shop in "abcd" for lane in range(3)]
    entity = _entities(rows + every_key_at_cut)
    entity.loc[entity.index[len(rows) :], "ts"] = cut_at
    entity = entity[entity["ts"] <= cut_at]
    before = OfflineStore(VIEWS, tables).get_historical_features(entity, FEATURES, "ts")

    changed = {}
    for name, view in (("events", WINDOW), ("readings", LATEST)):
        table = tables[name]
        late = (_reference_availability(view, table) >= cut_at).fillna(False).to_numpy()
        if name == "events":  # a row of the open view is in the future once it opens then
            window_avail = _reference_availability(view, table)
            late = ((window_avail >= cut_at) | window_avail.isna()).to_numpy()
            late &= (_reference_availability(OPEN, table) >= cut_at).to_numpy()
        keep = table[~late].copy()
        if name == "events":  # a close not known before the cut: any other such close
            closed = _reference_availability(OPEN, keep, OPEN.closes)
            future_close = (closed.isna() | (closed >= cut_at)).to_numpy()
            k = int(future_close.sum())
            waits = future.draw(
                st.lists(st.one_of(st.none(), st.integers(0, 200)), min_size=k, max_size=k)
            )
            floor = ((cut_at - keep["at"]) / pd.Timedelta(minutes=1)).clip(lower=0)
            floor = np.ceil(floor[future_close].to_numpy())
            keep.loc[future_close, "close"] = [
                np.nan if w is None else f + w for w, f in zip(waits, floor, strict=True)
            ]
        # Late rows are deleted or rewritten with anything that is still known only after
        # the cut; new late rows join them.
        k = int(late.sum())
        draw = future.draw(st.lists(st.booleans(), min_size=k, max_size=k))  # True: rewrite
        rewritten = table[late].iloc[np.flatnonzero(np.array(draw, dtype=bool))].copy()
        extra = future.draw(st.integers(0, 5))
        rewritten = pd.concat([rewritten, table.head(0).reindex(range(extra))], ignore_index=True)
        n = len(rewritten)
        minutes = future.draw(st.lists(st.integers(0, 300), min_size=n, max_size=n))
        rewritten["at"] = cut_at + pd.to_timedelta(minutes, unit="min")
        rewritten["shop"] = future.draw(st.lists(st.sampled_from("abcd"), min_size=n, max_size=n))
        if name == "events":
            rewritten["lane"] = future.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
            rewritten["delay"] = future.draw(st.lists(st.integers(0, 90), min_size=n, max_size=n))
            rewritten["value"] = future.draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n))
            rewritten["close"] = future.draw(
                st.lists(st.one_of(st.none(), st.integers(0, 200)), min_size=n, max_size=n)
            )
            rewritten = rewritten.astype({"lane": "int64", "delay": "float64", "close": "float64"})
        else:
            rewritten["temp"] = future.draw(st.lists(st.floats(-99, 99), min_size=n, max_size=n))
            rewritten["label"] = "future"
        # Kept rows keep their order: among rows known at the same time, the last one wins.
        changed[name] = pd.concat([keep, rewritten], ignore_index=True)
    after = OfflineStore(VIEWS, changed).get_historical_features(entity, FEATURES, "ts")
    pd.testing.assert_frame_equal(after, before)


def test_repeated_key_and_time_pairs_give_one_row_each_in_input_order() -> None:
    events = _events([("a", 0, 0, 0, 20.0), ("a", 0, 10, 0, 5.0), ("b", 1, 20, 0, 30.0)])
    readings = _readings([("a", 0, 1.5, 3), ("b", 30, 2.5, None)])
    rows = [("a", 0, 200), ("b", 1, 200), ("a", 0, 200), ("a", 0, 50), ("a", 0, 200)]
    entity = _entities(rows)
    out = OfflineStore(VIEWS, {"events": events, "readings": readings}).get_historical_features(
        entity, ["orders_n_240", "orders_mean_240", "shop_temp", "shop_label"], "ts"
    )
    assert len(out) == len(entity) and list(out.index) == list(entity.index)
    # a: two rows known at 30 and 40 min (at_least 30); at 50 min both, at 200 both.
    assert out["orders_n_240"].tolist() == [2, 1, 2, 2, 2]
    assert out["orders_mean_240"].tolist() == [12.5, 30.0, 12.5, 12.5, 12.5]
    # Readings: a's (minute 0) is known at 5 and stale after 90; b's (30) is stale at 200.
    assert out["shop_temp"].isna().tolist() == [True, True, True, False, True]
    assert out.loc[out.index[3], "shop_label"] == "c3"


def test_availability_is_strict_and_never_before_the_floor() -> None:
    # Known at 0 + max(-45 + 10, 30) = 30 minutes: not at 30, yes at 31.
    events = _events([("a", 0, 0, -45, 50.0)])
    readings = _readings([("a", 0, 1.0, 1)])
    entity = _entities([("a", 0, 30), ("a", 0, 31), ("a", 0, 5), ("a", 0, 6), ("a", 0, 90)])
    out = OfflineStore(VIEWS, {"events": events, "readings": readings}).get_historical_features(
        entity, ["orders_n_60", "orders_rate_60", "shop_temp"], "ts"
    )
    assert out["orders_n_60"].tolist() == [0, 1, 0, 0, 1]
    assert out["orders_rate_60"].fillna(-1).tolist() == [-1, 1.0, -1, -1, 1.0]
    # The reading is known at 5 (lag), so 6 and later see it, until it is 90 minutes old.
    assert out["shop_temp"].fillna(-1).tolist() == [1.0, 1.0, -1, 1.0, 1.0]
    late = OfflineStore(VIEWS, {"events": events, "readings": readings}).get_historical_features(
        _entities([("a", 0, 91)]), ["shop_temp"], "ts"
    )
    assert late["shop_temp"].isna().all()


def test_an_outcome_counts_from_the_time_it_is_learned_never_before_its_event() -> None:
    """A guest's cancellations, learned on each booking's arrival day: a booking counts from
    its arrival, one without an arrival never counts, and one whose arrival is written
    before its booking counts from the booking (it cannot be known before it happened)."""
    day = pd.Timedelta(days=1)
    bookings = pd.DataFrame(
        {
            "guest": ["g", "g", "g", "g"],
            "booked_at": [T0, T0 + day, T0 + 2 * day, T0 + 20 * day],
            "arrival": [T0 + 10 * day, T0 + 3 * day, pd.NaT, T0 + 5 * day],
            "canceled": ["yes", "no", "yes", "yes"],
        }
    )
    view = WindowView(
        name="guest_history",
        source="bookings",
        entity=Entity(name="guest", join_keys=["guest"]),
        timestamp="booked_at",
        availability=Availability(from_column="arrival"),
        aggregations=[
            Aggregation(name="canceled_n", function="count", column="canceled", window=365 * day),
            Aggregation(
                name="canceled_share",
                function="rate",
                column="canceled",
                positive=["yes"],
                window=365 * day,
            ),
        ],
    )
    rows = pd.DataFrame({"guest": "g", "t": [T0 + d * day for d in (2, 4, 11, 19, 21)]})
    out = OfflineStore([view], {"bookings": bookings}).get_historical_features(
        rows, view.features, "t"
    )
    assert out["canceled_n"].tolist() == [0, 1, 2, 2, 3]
    assert out["canceled_share"].fillna(-1).tolist() == [-1, 0.0, 0.5, 0.5, pytest.approx(2 / 3)]


def test_naive_timestamps_are_utc_and_unknown_keys_get_empty_windows() -> None:
    events = _events([("a", 0, 0, 0, 20.0)])
    tables = {"events": events, "readings": _readings([])}
    entity = pd.DataFrame(
        {"shop": ["a", "zz", None], "lane": [0, 0, 0], "ts": [T0.tz_localize(None)] * 3}
    )
    entity["ts"] += pd.Timedelta(minutes=45)
    out = OfflineStore(VIEWS, tables).get_historical_features(
        entity, ["orders_n_60", "orders_mean_60", "shop_temp"], "ts"
    )
    assert out["orders_n_60"].tolist() == [1, 0, 0]
    assert out["orders_mean_60"].fillna(-1).tolist() == [20.0, -1, -1]
    assert out["shop_temp"].isna().all()


def test_bad_requests_fail_clearly() -> None:
    tables = {"events": _events([]), "readings": _readings([])}
    store = OfflineStore(VIEWS, tables)
    entity = _entities([("a", 0, 1)])
    with pytest.raises(DefinitionError, match="no feature view produces"):
        store.get_historical_features(entity, ["nope"], "ts")
    with pytest.raises(EntityRowsError, match="join keys"):
        store.get_historical_features(entity.drop(columns="lane"), ["pairs_n_60"], "ts")
    with pytest.raises(EntityRowsError, match="timestamp column"):
        store.get_historical_features(entity, ["orders_n_60"], "when")
    with pytest.raises(EntityRowsError, match="null timestamps"):
        store.get_historical_features(entity.assign(ts=pd.NaT), ["orders_n_60"], "ts")
    with pytest.raises(DefinitionError, match="no table"):
        OfflineStore(VIEWS, {"events": tables["events"]})
    with pytest.raises(DefinitionError, match="more than one view"):
        OfflineStore([WINDOW, WINDOW.model_copy(update={"name": "again"})], tables)
    broken = OfflineStore(VIEWS, {**tables, "events": tables["events"].drop(columns="delay")})
    with pytest.raises(DefinitionError, match="source lacks columns"):
        broken.get_historical_features(entity, ["orders_n_60"], "ts")


def test_the_result_owns_its_columns_so_changing_it_leaves_the_entity_rows_alone() -> None:
    events = _events([("a", 0, 0, 0, 20.0), ("b", 1, 20, 0, 30.0)])
    readings = _readings([("a", 0, 1.5, 3)])
    entity = _entities([("a", 0, 200), ("b", 1, 200)])
    before = entity.copy()
    out = OfflineStore(VIEWS, {"events": events, "readings": readings}).get_historical_features(
        entity, ["orders_n_240", "shop_temp"], "ts"
    )
    for column in entity.columns:
        out.loc[out.index[0], column] = before[column].iloc[1]  # written in place
    pd.testing.assert_frame_equal(entity, before)
