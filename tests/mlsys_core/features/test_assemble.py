"""Tests for mlsys_core/features/assemble.py: lookups, labels, time split, the feature frame."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.features.assemble import (
    SPLIT,
    EventLabels,
    assemble_features,
    assign_split,
    join_lookups,
    lookup_join,
    make_label,
    request_keys,
)
from mlsys_core.spec import LabelSpec

NEW_YORK = ZoneInfo("America/New_York")


# -- lookup_join ------------------------------------------------------------------------------


def test_lookup_join_is_many_to_one_and_keeps_left_rows() -> None:
    left = pd.DataFrame(
        {"dest": ["BOS", "ORD", "BOS", "XXX", "ORD", None], "n": [1, 2, 3, 4, 5, 6]},
        index=[50, 40, 30, 20, 10, 0],
    )
    right = pd.DataFrame(
        {
            "faa": ["ORD", "BOS", "SFO"],
            "lat": [41.9, 42.4, 37.6],
            "alt": [668, 19, 13],
            "name": ["O'Hare", "Logan", "SFO"],
        }
    )
    out = lookup_join(left, right, on={"dest": "faa"}, columns={"lat": "dest_lat", "alt": "alt"})
    assert list(out.columns) == ["dest", "n", "dest_lat", "alt"]
    pd.testing.assert_index_equal(out.index, left.index)
    pd.testing.assert_frame_equal(out[["dest", "n"]], left)
    by_key = right.set_index("faa")
    for dest, lat, alt in out[["dest", "dest_lat", "alt"]].itertuples(index=False):
        if dest in by_key.index:
            assert (lat, alt) == (by_key.loc[dest, "lat"], by_key.loc[dest, "alt"])
        else:
            assert np.isnan(lat) and np.isnan(alt)


def test_lookup_join_on_two_keys() -> None:
    left = pd.DataFrame({"a": [1, 1, 2], "b": ["x", "y", "x"]})
    right = pd.DataFrame({"ra": [1, 2, 1], "rb": ["x", "x", "y"], "v": [10.0, 20.0, 30.0]})
    out = lookup_join(left, right, on={"a": "ra", "b": "rb"}, columns={"v": "v"})
    assert out["v"].tolist() == [10.0, 30.0, 20.0]


def test_lookup_join_rejects_repeated_right_keys() -> None:
    left = pd.DataFrame({"tailnum": ["N1"]})
    # N2 repeats; the left never asks for it, which must not hide the problem.
    right = pd.DataFrame({"tailnum": ["N1", "N2", "N2"], "seats": [100, 150, 160]})
    with pytest.raises(ValueError, match="repeats keys"):
        lookup_join(left, right, on={"tailnum": "tailnum"}, columns={"seats": "seats"})


def test_lookup_join_leaves_out_right_rows_with_a_null_key_even_repeated() -> None:
    """As the online store does: such a row can never be found, so it repeats nothing."""
    left = pd.DataFrame({"tailnum": ["N1", None, "N2"]})
    right = pd.DataFrame({"tailnum": [None, "N1", np.nan, "N2"], "seats": [1, 100, 2, 200]})
    out = lookup_join(left, right, on={"tailnum": "tailnum"}, columns={"seats": "seats"})
    assert out["seats"].iloc[[0, 2]].tolist() == [100.0, 200.0] and np.isnan(out["seats"][1])


# -- make_label -------------------------------------------------------------------------------


def test_make_label_is_strictly_above_threshold_and_nan_when_unknown() -> None:
    delays = [np.nan, 15.0, 15.0001, -3.0, 100.0, None, 0.0]
    frame = pd.DataFrame({"arr_delay": delays}, index=list("abcdefg"))
    label = make_label(frame, LabelSpec(column="arr_delay", threshold=15.0))
    expected = [np.nan if d is None or np.isnan(d) else float(d > 15.0) for d in delays]
    assert label.dtype == np.float64
    pd.testing.assert_index_equal(label.index, frame.index)
    np.testing.assert_array_equal(label.to_numpy(), np.array(expected))


def test_a_present_label_is_one_where_the_outcome_came_and_zero_where_it_did_not() -> None:
    """``present``: a cancellation's time is 1, an empty one 0 (not "no label"); with
    ``known_after``, an event newer than that before the newest has no label yet."""
    at = pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-03-20"], utc=True)
    came = pd.to_datetime(["2024-01-20", None, None, "2024-03-25"], utc=True)
    frame = pd.DataFrame({"at": at, "cancelled_at": came})
    plain = make_label(frame, LabelSpec(column="cancelled_at", present=True))
    assert plain.tolist() == [1.0, 0.0, 0.0, 1.0]
    rule = LabelSpec(column="cancelled_at", present=True, known_after=timedelta(days=30))
    waited = EventLabels(rule, "at", {}, at.max())(frame)
    np.testing.assert_array_equal(waited.to_numpy(), [1.0, 0.0, np.nan, np.nan])


# -- assign_split -----------------------------------------------------------------------------


def _reference_split(ts: pd.Timestamp) -> str:
    """train months 1-8, valid 9, test 10-12 of 2013, by the calendar in New York."""
    month = ts.to_pydatetime().astimezone(NEW_YORK).month
    return "train" if month <= 8 else "valid" if month == 9 else "test"


def test_split_boundaries_are_midnight_in_new_york() -> None:
    split = nycflights13_spec().split
    stamps = pd.Series(
        pd.to_datetime(
            [
                "2013-09-01T03:59:59Z",  # Aug 31, 23:59:59 in New York
                "2013-09-01T04:00:00Z",  # Sep 1, 00:00 in New York
                "2013-09-01T00:30:00Z",  # already September in UTC, still August locally
                "2013-10-01T03:59:59Z",
                "2013-10-01T04:00:00Z",
                "2013-01-01T05:00:00Z",
                "2013-12-31T23:00:00Z",
            ],
            utc=True,
        ),
        index=[9, 8, 7, 6, 5, 4, 3],
    )
    out = assign_split(stamps, split)
    assert out.tolist() == ["train", "valid", "train", "valid", "test", "train", "test"]
    assert out.tolist() == [_reference_split(t) for t in stamps]
    pd.testing.assert_index_equal(out.index, stamps.index)


def test_split_of_random_times_matches_the_local_calendar() -> None:
    rng = np.random.default_rng(0)
    seconds = rng.integers(0, 365 * 24 * 3600, 2000)
    stamps = pd.Series(pd.Timestamp("2013-01-01T05:00Z") + pd.to_timedelta(seconds, unit="s"))
    out = assign_split(stamps, nycflights13_spec().split)
    assert out.tolist() == [_reference_split(t) for t in stamps]
    # Timestamps as read from the CSV (ISO strings) split the same way.
    as_text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert assign_split(as_text, nycflights13_spec().split).tolist() == out.tolist()


def test_real_flights_split_by_their_month(real_tables: dict[str, pd.DataFrame]) -> None:
    flights = real_tables["flights"]
    out = assign_split(flights["time_hour"], nycflights13_spec().split)
    # The month column is the scheduled local departure month: an independent reference.
    expected = np.where(
        flights["month"] <= 8, "train", np.where(flights["month"] == 9, "valid", "test")
    )
    assert (out.to_numpy() == expected).all()
    assert set(out) == {"train", "valid", "test"}


# -- assemble_features ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def typed_tables(real_tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A slice of flights and the full dimension tables, with event times parsed."""
    tables = {name: frame.copy() for name, frame in real_tables.items()}
    tables["flights"] = tables["flights"].sample(1500, random_state=1).reset_index(drop=True)
    for name in ("flights", "weather"):
        tables[name]["time_hour"] = pd.to_datetime(tables[name]["time_hour"], utc=True)
    return tables


def test_feature_frame_columns_are_keys_inputs_label_and_split(
    typed_tables: dict[str, pd.DataFrame],
) -> None:
    spec = nycflights13_spec()
    frame = assemble_features(typed_tables, spec)
    keys = [*spec.entity_keys, *request_keys(spec)]  # what a caller sends
    expected = [*keys, *spec.input_columns, spec.label.name, SPLIT]
    assert len(frame.columns) == len(set(frame.columns))
    assert set(frame.columns) == set(expected)
    assert list(frame.columns) == list(dict.fromkeys(expected))
    # No outcome column (or anything else from the raw flight) rides along.
    for leak in ("arr_delay", "arr_time", "dep_delay", "air_time", "dep_time"):
        assert leak not in frame.columns
        assert leak not in spec.input_columns
    assert len(frame) == len(typed_tables["flights"])


def test_the_feature_frame_shares_no_data_with_the_tables(
    typed_tables: dict[str, pd.DataFrame],
) -> None:
    spec = nycflights13_spec()
    flights = typed_tables["flights"]
    frame = assemble_features(typed_tables, spec)
    before = flights.copy()
    for column in [c for c in frame.columns if c in flights.columns]:
        frame.loc[frame.index[0], column] = frame[column].iloc[1]  # written in place
    pd.testing.assert_frame_equal(flights, before)
    assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0


def test_a_chain_of_lookups_leaves_the_callers_frame_untouched(
    typed_tables: dict[str, pd.DataFrame],
) -> None:
    """The serving path: the caller's rows are copied by the first join; the chain's own
    frames after it are not, and nothing reaches back to the caller's."""
    spec = nycflights13_spec()
    assert len(spec.lookups) >= 2
    rows = typed_tables["flights"][spec.base_columns].head(50).copy()
    before = rows.copy()
    out = join_lookups(rows, spec, lambda join: typed_tables[join.source])
    assert out.index.equals(rows.index)
    for lookup in spec.lookups:
        assert set(lookup.columns.values()) <= set(out.columns)
    for column in rows.columns:
        assert not np.shares_memory(out[column].to_numpy(), rows[column].to_numpy())
        out.loc[out.index[0], column] = out[column].iloc[1]  # written in place
    pd.testing.assert_frame_equal(rows, before)


def test_feature_frame_values_match_lookups_done_by_hand(
    typed_tables: dict[str, pd.DataFrame],
) -> None:
    spec = nycflights13_spec()
    flights = typed_tables["flights"]
    frame = assemble_features(typed_tables, spec)
    assert frame["carrier"].tolist() == flights["carrier"].tolist()
    assert frame["time_hour"].tolist() == flights["time_hour"].tolist()

    label = [np.nan if np.isnan(d) else float(d > 15) for d in flights["arr_delay"]]
    np.testing.assert_array_equal(frame["is_delayed"].to_numpy(), np.array(label))
    assert frame[SPLIT].tolist() == [_reference_split(t) for t in flights["time_hour"]]

    planes = typed_tables["planes"]
    seats = dict(zip(planes["tailnum"], planes["seats"], strict=True))
    expected_seats = [seats.get(t, np.nan) for t in flights["tailnum"]]
    np.testing.assert_array_equal(frame["plane_seats"].to_numpy(), np.array(expected_seats))

    # Weather: the newest reading at that origin strictly before the flight's hour, within
    # 3 h (a reading of the same hour counts as not yet known).
    weather = typed_tables["weather"]
    by_origin = {o: g.sort_values("time_hour") for o, g in weather.groupby("origin")}
    expected_temp = []
    for origin, when in zip(flights["origin"], flights["time_hour"], strict=True):
        readings = by_origin[origin]
        seen = readings[readings["time_hour"] < when]
        fresh = not seen.empty and when - seen["time_hour"].iloc[-1] <= timedelta(hours=3)
        expected_temp.append(seen["temp"].iloc[-1] if fresh else np.nan)
    np.testing.assert_array_equal(frame["origin_temp"].to_numpy(), np.array(expected_temp))


def test_base_table_missing_a_column_is_an_error(typed_tables: dict[str, pd.DataFrame]) -> None:
    tables = {**typed_tables, "flights": typed_tables["flights"].drop(columns=["tailnum"])}
    with pytest.raises(ValueError, match="tailnum"):
        assemble_features(tables, nycflights13_spec())


def test_history_features_count_only_arrivals_known_before_the_flight(
    typed_tables: dict[str, pd.DataFrame],
) -> None:
    """Route history by hand: an arrival is known an hour after the plane lands (scheduled
    departure + departure delay + air time), never before the end of its scheduled hour."""
    spec = nycflights13_spec()
    flights = typed_tables["flights"]
    frame = assemble_features(typed_tables, spec)
    departs = flights["time_hour"] + pd.to_timedelta(flights["minute"], unit="min")
    lands = departs + pd.to_timedelta(flights["dep_delay"] + flights["air_time"], unit="min")
    known = np.maximum(lands + timedelta(hours=1), flights["time_hour"] + timedelta(hours=1))
    known = known.where(flights["arr_delay"].notna())
    for i in range(0, len(flights), 7):
        route = (flights["origin"] == flights["origin"][i]) & (
            flights["dest"] == flights["dest"][i]
        )
        t = flights["time_hour"][i]
        seen = route & (known < t) & (known >= t - timedelta(days=28))
        delays = flights.loc[seen, "arr_delay"]
        assert frame["route_flights_28d"][i] == len(delays)
        assert not seen[i]  # a flight never sees its own outcome
        if len(delays):
            assert frame["route_mean_delay_28d"][i] == pytest.approx(delays.mean())
            assert frame["route_delay_rate_28d"][i] == pytest.approx((delays > 15).mean())
        else:
            assert np.isnan(frame["route_mean_delay_28d"][i])


def test_a_batch_of_base_rows_assembles_like_the_whole_table(
    typed_tables: dict[str, pd.DataFrame],
) -> None:
    """Batch assembly (base rows given apart) reads history from the whole tables."""
    spec = nycflights13_spec()
    whole = assemble_features(typed_tables, spec)
    batch = typed_tables["flights"].iloc[500:800]
    part = assemble_features(typed_tables, spec, base=batch)
    pd.testing.assert_frame_equal(part, whole.iloc[500:800].reset_index(drop=True))
    assert part["route_flights_28d"].sum() > 0
