"""Tests for mlsys_core/features/pit.py: point-in-time joins never look ahead."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from mlsys_core.features.pit import point_in_time_join

T0 = pd.Timestamp("2013-03-09T00:00:00Z")  # spans the US DST switch; UTC must not care
COLUMNS = {"temp": "obs_temp", "wind": "obs_wind", "obs_time": "matched_time"}


def _random_tables(seed: int, n_left: int = 80, n_right: int = 60) -> tuple[pd.DataFrame, ...]:
    """Left events and right observations on a minute grid, so exact ties happen."""
    rng = np.random.default_rng(seed)
    airports = np.array(["EWR", "JFK", "LGA", "BOS"])  # BOS never appears on the right
    left = pd.DataFrame(
        {
            "airport": rng.choice(airports, n_left),
            "gate": rng.integers(1, 3, n_left),
            "at": T0 + pd.to_timedelta(rng.integers(0, 600, n_left), unit="min"),
            "payload": rng.normal(size=n_left),
        },
        index=rng.permutation(np.arange(1000, 1000 + n_left)),
    )
    # Unique times per origin, so "the newest" is always one row, whichever keys join.
    parts = []
    for origin in airports[:3]:
        minutes = rng.choice(600, size=n_right // 3, replace=False)
        parts.append(
            pd.DataFrame(
                {
                    "origin": origin,
                    "gate_no": rng.integers(1, 3, len(minutes)),
                    "ts": T0 + pd.to_timedelta(minutes, unit="min"),
                }
            )
        )
    right = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=seed)
    right["temp"] = rng.normal(size=len(right))
    right["wind"] = rng.uniform(0, 30, size=len(right))
    right["obs_time"] = right["ts"]
    right["unused"] = "not requested"
    return left, right.reset_index(drop=True)


def _brute_force(
    left: pd.DataFrame,
    right: pd.DataFrame,
    keys: dict[str, str],
    tolerance: timedelta | None,
    lag: timedelta,
) -> pd.DataFrame:
    """Per left row: scan every right row, keep the newest one known at the left time."""
    known_at = right["ts"] + lag
    out: dict[str, list[object]] = {name: [] for name in COLUMNS.values()}
    for i in range(len(left)):
        row = left.iloc[i]
        ok = (known_at <= row["at"]).to_numpy()
        if tolerance is not None:
            # Age is measured from the observation time, not from when it became known.
            ok &= (row["at"] - right["ts"] <= pd.Timedelta(tolerance)).to_numpy()
        for lk, rk in keys.items():
            ok &= right[rk].to_numpy() == row[lk]
        candidates = right[ok]
        best = None if candidates.empty else candidates.loc[candidates["ts"].idxmax()]
        for source, name in COLUMNS.items():
            out[name].append(np.nan if best is None else best[source])
    frame = pd.DataFrame(out, index=left.index)
    frame["matched_time"] = pd.to_datetime(frame["matched_time"], utc=True)
    return frame


def _join(
    left: pd.DataFrame,
    right: pd.DataFrame,
    keys: dict[str, str],
    tolerance: timedelta | None = None,
    lag: timedelta = timedelta(0),
) -> pd.DataFrame:
    return point_in_time_join(
        left,
        right,
        on=keys,
        left_time="at",
        right_time="ts",
        columns=COLUMNS,
        tolerance=tolerance,
        availability_lag=lag,
    )


ONE_KEY = {"airport": "origin"}
TWO_KEYS = {"airport": "origin", "gate": "gate_no"}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("keys", "tolerance", "lag"),
    [
        (ONE_KEY, None, timedelta(0)),
        (TWO_KEYS, None, timedelta(0)),
        (TWO_KEYS, timedelta(minutes=30), timedelta(0)),
        (ONE_KEY, timedelta(minutes=5), timedelta(0)),
        (TWO_KEYS, None, timedelta(minutes=20)),
        (TWO_KEYS, timedelta(minutes=30), timedelta(minutes=20)),
    ],
)
def test_join_matches_brute_force(
    seed: int, keys: dict[str, str], tolerance: timedelta | None, lag: timedelta
) -> None:
    left, right = _random_tables(seed)
    left_before = left.copy()
    joined = _join(left, right, keys, tolerance, lag)
    expected = _brute_force(left, right, keys, tolerance, lag)
    # Left rows: same count, order, index and values; the input is not modified.
    pd.testing.assert_frame_equal(left, left_before)
    pd.testing.assert_frame_equal(joined[list(left.columns)], left)
    assert list(joined.columns) == [*left.columns, *COLUMNS.values()]
    pd.testing.assert_frame_equal(joined[list(COLUMNS.values())], expected, check_dtype=False)
    # Both sides of the comparison found something for a fair share of rows.
    assert 0 < expected["obs_temp"].notna().sum() < len(left)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matched_rows_are_never_from_the_future(seed: int) -> None:
    left, right = _random_tables(seed)
    lag = timedelta(minutes=7)
    joined = _join(left, right, TWO_KEYS, lag=lag)
    matched = joined["matched_time"].notna()
    assert matched.any()
    assert (joined.loc[matched, "matched_time"] + lag <= joined.loc[matched, "at"]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lag", [timedelta(0), timedelta(minutes=45)])
def test_changing_the_future_does_not_change_the_past(seed: int, lag: timedelta) -> None:
    left, right = _random_tables(seed)
    cut = left["at"].quantile(0.5)
    before = _join(left, right, TWO_KEYS, lag=lag)
    # Every right row known only after the cut is rewritten, and new future rows appear.
    future = right["ts"] + lag > cut
    assert future.any()
    tampered = right.copy()
    tampered.loc[future, "temp"] = 1e6
    tampered.loc[future, "wind"] = -1e6
    tampered.loc[future, "ts"] = tampered.loc[future, "ts"] - pd.Timedelta(seconds=1)
    tampered["obs_time"] = tampered["ts"]
    extra = right.sample(10, random_state=seed).assign(
        ts=cut - lag + pd.Timedelta(seconds=30), temp=-5e5
    )
    extra["obs_time"] = extra["ts"]
    after = _join(left, pd.concat([tampered, extra], ignore_index=True), TWO_KEYS, lag=lag)
    past = left["at"] < cut
    assert past.sum() > 10
    pd.testing.assert_frame_equal(after[past], before[past])
    # The tampering was visible to later rows, so the check above had teeth.
    assert not after[~past].equals(before[~past])


def test_exact_time_match_is_used_and_lag_delays_it() -> None:
    left = pd.DataFrame({"k": ["a", "a"], "at": pd.to_datetime(["2013-01-01T10:00Z"] * 2)})
    left.loc[1, "at"] = pd.Timestamp("2013-01-01T10:30Z")
    right = pd.DataFrame(
        {
            "k": ["a", "a"],
            "ts": pd.to_datetime(["2013-01-01T09:00Z", "2013-01-01T10:00Z"]),
            "v": [1.0, 2.0],
        }
    )
    kwargs = {"on": {"k": "k"}, "left_time": "at", "right_time": "ts", "columns": {"v": "v"}}
    assert point_in_time_join(left, right, **kwargs)["v"].tolist() == [2.0, 2.0]
    lagged = point_in_time_join(left, right, availability_lag=timedelta(minutes=30), **kwargs)
    # At 10:00 the 10:00 reading is not known yet; at 10:30 it just became known.
    assert lagged["v"].tolist() == [1.0, 2.0]


def test_stale_rows_beyond_tolerance_are_missing() -> None:
    left = pd.DataFrame(
        {"k": ["a", "a", "b"], "at": pd.to_datetime(["2013-01-01T12:00Z"] * 3, utc=True)}
    )
    right = pd.DataFrame(
        {
            "k": ["a", "b"],
            "ts": pd.to_datetime(["2013-01-01T09:00Z", "2013-01-01T08:59Z"], utc=True),
            "v": [1.0, 2.0],
        }
    )
    joined = point_in_time_join(
        left,
        right,
        on={"k": "k"},
        left_time="at",
        right_time="ts",
        columns={"v": "v"},
        tolerance=timedelta(hours=3),
    )
    assert joined["v"].iloc[:2].tolist() == [1.0, 1.0]  # exactly 3 h old: still fresh
    assert np.isnan(joined["v"].iloc[2])  # 3 h 1 min old: stale


def test_right_rows_without_a_time_are_ignored() -> None:
    left = pd.DataFrame({"k": ["a"], "at": pd.to_datetime(["2013-01-01T12:00Z"])})
    right = pd.DataFrame(
        {"k": ["a", "a"], "ts": pd.to_datetime(["2013-01-01T10:00Z", None]), "v": [1.0, 9.0]}
    )
    joined = point_in_time_join(
        left, right, on={"k": "k"}, left_time="at", right_time="ts", columns={"v": "v"}
    )
    assert joined["v"].tolist() == [1.0]


def test_right_rows_with_a_null_key_are_ignored() -> None:
    at = pd.to_datetime(["2013-01-01T12:00Z", "2013-01-01T12:00Z"])
    left = pd.DataFrame({"k": ["a", None], "at": at})
    ts = pd.to_datetime(["2013-01-01T10:00Z", "2013-01-01T11:00Z", "2013-01-01T09:00Z"])
    right = pd.DataFrame({"k": ["a", None, None], "ts": ts, "v": [1.0, 8.0, 9.0]})
    joined = point_in_time_join(
        left, right, on={"k": "k"}, left_time="at", right_time="ts", columns={"v": "v"}
    )
    assert joined["v"].iloc[0] == 1.0 and np.isnan(joined["v"].iloc[1])


def test_null_left_time_is_an_error() -> None:
    left = pd.DataFrame({"k": ["a"], "at": pd.to_datetime([None], utc=True)})
    right = pd.DataFrame({"k": ["a"], "ts": pd.to_datetime(["2013-01-01"], utc=True), "v": [1]})
    with pytest.raises(ValueError, match="'at' has nulls"):
        point_in_time_join(
            left, right, on={"k": "k"}, left_time="at", right_time="ts", columns={"v": "v"}
        )


def test_tolerance_below_lag_is_refused() -> None:
    left = pd.DataFrame({"k": ["a"], "at": pd.to_datetime(["2013-01-01T05:00Z"])})
    right = pd.DataFrame(
        {"k": ["a"], "ts": pd.to_datetime(["2013-01-01T04:00Z"]), "v": [1.0], "w": ["x"]}
    )
    with pytest.raises(ValueError, match="availability lag"):
        point_in_time_join(
            left,
            right,
            on={"k": "k"},
            left_time="at",
            right_time="ts",
            columns={"v": "v"},
            tolerance=timedelta(hours=1),
            availability_lag=timedelta(hours=2),
        )
