"""Tests for mlsys_core/features/preprocess.py: the fitted preprocessing shared by training
and serving (scikit-learn contract, train-only statistics, JSON persistence, local calendar)."""

from __future__ import annotations

import json
import math
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.features.columns import ColumnPreprocessor, preprocessor_for
from mlsys_core.features.preprocess import TabularPreprocessor, calendar_parts

TZ = "America/New_York"
PARAMS = {
    "numeric": ["x", "y", "z"],
    "categorical": ["color", "size"],
    "timestamp": "at",
    "calendar": ["hour", "day_of_week", "month_sin", "month_cos"],
    "timezone": TZ,
    "min_frequency": 1,
}


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(10 + shift, 3, n)
    x[rng.random(n) < 0.2] = np.nan  # nulls in training: median + indicator
    y = rng.uniform(-5, 5, n) + shift  # never null in training
    z = np.full(n, 4.0)  # constant: zero variance
    return pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue", None], n),
            "size": rng.choice(["S", "M", "L"], n),
            "x": x,
            "y": y,
            "z": z,
            "at": pd.Timestamp("2013-01-01T00:00Z")
            + pd.to_timedelta(rng.integers(0, 365 * 24 * 60, n), unit="min"),
            "unused": "ignored",
        }
    )


@pytest.fixture
def train() -> pd.DataFrame:
    return _frame(300, seed=1)


@pytest.fixture
def other() -> pd.DataFrame:
    """A frame from a shifted distribution, with values training never saw."""
    frame = _frame(120, seed=2, shift=5.0)
    frame.loc[:9, "color"] = "purple"
    frame.loc[10:14, "y"] = np.nan  # y had no nulls in training
    return frame


def _learned(est: TabularPreprocessor) -> list[str]:
    return [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]


# -- scikit-learn contract --------------------------------------------------------------------


def test_init_only_stores_parameters() -> None:
    est = TabularPreprocessor(**PARAMS)
    assert est.get_params() == PARAMS
    assert _learned(est) == []
    assert set(vars(est)) == set(PARAMS)


def test_clone_fit_returns_self_and_learned_state_ends_in_underscore(
    train: pd.DataFrame,
) -> None:
    est = TabularPreprocessor(**PARAMS)
    copy = clone(est)
    assert copy is not est
    assert copy.get_params() == est.get_params()
    assert copy.fit(train) is copy
    assert copy.get_params() == PARAMS  # fit does not touch the parameters
    learned = set(_learned(copy))
    assert {"categories_", "medians_", "means_", "scales_", "indicator_columns_"} <= learned
    assert set(vars(copy)) - set(PARAMS) == learned
    # Cloning a fitted estimator gives an unfitted one.
    with pytest.raises(NotFittedError):
        clone(copy).transform(train)
    # The original was never fitted by fitting its clone.
    assert _learned(est) == []


@pytest.mark.parametrize("method", ["transform", "get_feature_names_out", "to_dict"])
def test_not_fitted_error_before_fit(train: pd.DataFrame, method: str) -> None:
    est = TabularPreprocessor(**PARAMS)
    call = getattr(est, method)
    with pytest.raises(NotFittedError):
        call(train) if method == "transform" else call()


def test_works_inside_a_pipeline(train: pd.DataFrame, other: pd.DataFrame) -> None:
    pipe = Pipeline([("pre", TabularPreprocessor(**PARAMS))])
    direct = TabularPreprocessor(**PARAMS).fit(train)
    np.testing.assert_array_equal(pipe.fit(train).transform(other), direct.transform(other))


# -- categories -------------------------------------------------------------------------------


def test_category_codes_with_unseen_and_missing_as_zero(
    train: pd.DataFrame, other: pd.DataFrame
) -> None:
    est = TabularPreprocessor(numeric=[], categorical=["color", "size"]).fit(train)
    out = est.transform(other)
    assert out.dtype == np.float32
    assert out.shape == (len(other), 2)
    known = sorted(train["color"].dropna().unique())
    assert est.cardinalities_ == [len(known) + 1, train["size"].nunique() + 1]
    codes = dict(zip(other["color"], out[:, 0], strict=True))
    for value, code in codes.items():
        if value is None or value not in known:
            assert code == 0, value
        else:
            assert 1 <= code <= len(known)
    seen_codes = [codes[v] for v in known if v in codes]
    assert len(set(seen_codes)) == len(seen_codes)  # distinct categories, distinct codes
    # A row's code depends on its own value only.
    again = est.transform(other.iloc[::-1])[::-1]
    np.testing.assert_array_equal(again, out)


def test_rare_categories_fall_back_to_zero() -> None:
    train = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 4 + ["c"] * 6})
    est = TabularPreprocessor(numeric=[], categorical=["c"], min_frequency=5).fit(train)
    out = est.transform(pd.DataFrame({"c": ["a", "b", "c"]}))[:, 0]
    assert out[1] == 0
    assert out[0] != 0 and out[2] != 0 and out[0] != out[2]
    assert est.cardinalities_ == [3]


@pytest.mark.parametrize("repeat", [1, 100])  # a request's few rows, and a batch's many
def test_unseen_names_the_inputs_coded_as_the_unknown_category(repeat: int) -> None:
    """``unseen`` names the inputs ``transform`` codes 0 while a value is present: never
    seen in training, or rarer there than ``min_frequency``; a null is missing, not unseen."""
    train = pd.DataFrame(
        {"zip": ["02134"] * 5 + ["10001"] * 5 + ["94103"], "size": ["S", "M"] * 5 + ["L"]}
    )
    params = {"numeric": [], "categorical": ["zip", "size"], "min_frequency": 2}
    est = TabularPreprocessor(**params).fit(train)
    sent = pd.DataFrame(
        {"zip": ["02134", "2134", None, "94103"] * repeat, "size": ["S", "XL", "M", "L"] * repeat}
    )
    unseen = est.unseen(sent)
    assert unseen == [[], ["zip", "size"], [], ["zip", "size"]] * repeat
    codes = est.transform(sent)
    assert [bool(names) for names in unseen] == list((codes == 0).any(axis=1) & sent["zip"].notna())
    wrapped = ColumnPreprocessor(base=params, extractors=[], selectors=[]).fit(train)
    assert wrapped.unseen(sent) == unseen


# -- numbers ----------------------------------------------------------------------------------


def test_numbers_use_training_statistics_only(train: pd.DataFrame, other: pd.DataFrame) -> None:
    nums = ["x", "y", "z"]
    est = TabularPreprocessor(numeric=nums, categorical=[]).fit(train)
    out = est.transform(other)
    # Reference: scikit-learn's own median imputer and standard scaler, fitted on train.
    imputer = SimpleImputer(strategy="median").fit(train[nums])
    scaler = StandardScaler().fit(imputer.transform(train[nums]))
    expected = scaler.transform(imputer.transform(other[nums]))
    indicators = other[["x"]].isna().to_numpy(dtype=float)  # only x had nulls in training
    np.testing.assert_allclose(out, np.hstack([expected, indicators]), rtol=1e-5, atol=1e-5)
    assert list(est.get_feature_names_out()) == ["x", "y", "z", "x_missing"]
    assert est.n_numeric_ == 4
    # Manual numbers for one cell, without any library: an imputed x.
    x_train = train["x"].to_numpy()
    median = float(np.nanmedian(x_train))
    filled = np.where(np.isnan(x_train), median, x_train)
    row = int(np.flatnonzero(other["x"].isna().to_numpy())[0])
    assert out[row, 0] == pytest.approx((median - filled.mean()) / filled.std(), abs=1e-5)
    # Statistics of the other frame would give different numbers: they were not used.
    own = StandardScaler().fit_transform(
        SimpleImputer(strategy="median").fit_transform(other[nums])
    )
    assert not np.allclose(out[:, :3], own, atol=1e-2)


def test_transforming_does_not_refit(train: pd.DataFrame, other: pd.DataFrame) -> None:
    est = TabularPreprocessor(**PARAMS).fit(train)
    first = est.transform(other)
    est.transform(other.assign(x=other["x"] * 1000))
    np.testing.assert_array_equal(est.transform(other), first)


def test_output_is_finite_with_a_constant_and_an_all_null_column() -> None:
    train = pd.DataFrame({"c": [2.0] * 4, "n": [np.nan] * 4})
    est = TabularPreprocessor(numeric=["c", "n"], categorical=[]).fit(train)
    out = est.transform(pd.DataFrame({"c": [2.0, 3.0], "n": [np.nan, 1.0]}))
    assert np.isfinite(out).all()
    assert out[0, 0] == 0.0


# -- persistence ------------------------------------------------------------------------------


def test_json_round_trip_gives_identical_output(train: pd.DataFrame, other: pd.DataFrame) -> None:
    est = TabularPreprocessor(**PARAMS).fit(train)
    text = json.dumps(est.to_dict())
    restored = TabularPreprocessor.from_dict(json.loads(text))
    np.testing.assert_array_equal(restored.transform(other), est.transform(other))
    np.testing.assert_array_equal(restored.transform(train), est.transform(train))
    assert restored.get_params() == est.get_params()
    assert list(restored.get_feature_names_out()) == list(est.get_feature_names_out())
    assert restored.cardinalities_ == est.cardinalities_


def test_spec_preprocessor_round_trips_on_real_features(
    real_tables: dict[str, pd.DataFrame],
) -> None:
    spec = nycflights13_spec()
    flights = real_tables["flights"].sample(800, random_state=0)
    frame = pd.DataFrame({c: flights[c] for c in ["carrier", "origin", "dest", "distance"]})
    frame["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    rng = np.random.default_rng(0)
    for name in spec.input_columns:
        if name not in frame:
            categorical = name in spec.features.categorical
            frame[name] = (
                rng.choice(["a", "b", None], len(frame))
                if categorical
                else np.where(rng.random(len(frame)) < 0.1, np.nan, rng.normal(size=len(frame)))
            )
    est = preprocessor_for(spec).fit(frame)
    restored = TabularPreprocessor.from_dict(json.loads(json.dumps(est.to_dict())))
    np.testing.assert_array_equal(restored.transform(frame), est.transform(frame))


def _reference_transform(est: TabularPreprocessor, frame: pd.DataFrame) -> np.ndarray:
    """The transform written out plainly, column by column, from the learned state."""
    expanded, _, _ = est._expand(frame)
    blocks = []
    for col in est.categorical_columns_:
        known = {c: i + 1 for i, c in enumerate(est.categories_[col])}
        blocks.append([0 if pd.isna(v) else known.get(str(v), 0) for v in expanded[col]])
    for col in est.numeric_columns_:
        filled = expanded[col].fillna(est.medians_[col]).to_numpy(dtype="float64")
        blocks.append((filled - est.means_[col]) / est.scales_[col])
    blocks += [expanded[col].isna().to_numpy() for col in est.indicator_columns_]
    return np.column_stack(blocks).astype(np.float32)


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_transform_equals_the_plain_computation_at_any_batch_size(
    train: pd.DataFrame, other: pd.DataFrame, rows: int
) -> None:
    """Serving scores a few rows at a time and training whole splits: one row's output
    must not depend on the batch it came in."""
    est = TabularPreprocessor(**PARAMS).fit(train)
    frame = pd.concat([other, train]).reset_index(drop=True).iloc[:300]
    whole = est.transform(frame)
    np.testing.assert_array_equal(whole, _reference_transform(est, frame))
    pieces = [est.transform(frame.iloc[i : i + rows]) for i in range(0, len(frame), rows)]
    np.testing.assert_array_equal(np.vstack(pieces), whole)


# -- input errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("dropped", ["x", "color", "at"])
def test_missing_columns_are_a_clear_error(
    train: pd.DataFrame, other: pd.DataFrame, dropped: str
) -> None:
    with pytest.raises(ValueError, match=f"missing feature columns: \\['{dropped}'\\]"):
        TabularPreprocessor(**PARAMS).fit(train.drop(columns=[dropped]))
    est = TabularPreprocessor(**PARAMS).fit(train)
    with pytest.raises(ValueError, match=f"missing feature columns: \\['{dropped}'\\]"):
        est.transform(other.drop(columns=[dropped]))


@pytest.mark.parametrize(
    ("bad", "message"),
    [("seven", "non-numeric"), (np.inf, "infinite"), (-np.inf, "infinite")],
)
def test_bad_numbers_are_a_clear_error(
    train: pd.DataFrame, other: pd.DataFrame, bad: object, message: str
) -> None:
    est = TabularPreprocessor(**PARAMS).fit(train)
    broken = other.astype({"y": object})
    broken.loc[3, "y"] = bad
    with pytest.raises(ValueError, match=f"'y' has {message}"):
        est.transform(broken)
    with pytest.raises(ValueError, match=f"'y' has {message}"):
        TabularPreprocessor(**PARAMS).fit(broken)


def test_numeric_text_is_accepted(train: pd.DataFrame) -> None:
    est = TabularPreprocessor(numeric=["y"], categorical=[]).fit(train)
    as_text = train.assign(y=train["y"].map(repr))
    np.testing.assert_array_equal(est.transform(as_text), est.transform(train))


def test_empty_frame_and_non_frame_inputs_are_rejected(train: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="empty"):
        TabularPreprocessor(**PARAMS).fit(train.iloc[:0])
    with pytest.raises(TypeError, match="DataFrame"):
        TabularPreprocessor(**PARAMS).fit(train.to_numpy())


# -- calendar ---------------------------------------------------------------------------------


def test_calendar_parts_are_in_local_time() -> None:
    rng = np.random.default_rng(3)
    stamps = pd.Series(
        pd.Timestamp("2013-01-01T00:00Z")
        + pd.to_timedelta(rng.integers(0, 366 * 24 * 60, 500), unit="min"),
        index=rng.permutation(500),
    )
    # The hours around both DST switches and the turn of a month at local midnight.
    edges = pd.to_datetime(
        [
            "2013-03-10T06:30Z",
            "2013-03-10T07:30Z",
            "2013-11-03T05:30Z",
            "2013-11-03T06:30Z",
            "2013-02-01T04:30Z",
            "2013-02-01T05:30Z",
        ],
        utc=True,
    )
    stamps = pd.concat([stamps, pd.Series(edges, index=range(1000, 1006))])
    parts = calendar_parts(stamps, ["hour", "day_of_week", "month_sin", "month_cos"], TZ)
    pd.testing.assert_index_equal(parts.index, stamps.index)
    zone = ZoneInfo(TZ)
    local = [t.to_pydatetime().astimezone(zone) for t in stamps]
    assert parts["cal_hour"].tolist() == [str(t.hour) for t in local]
    assert parts["cal_day_of_week"].tolist() == [str(t.weekday()) for t in local]
    np.testing.assert_allclose(
        parts["cal_month_sin"], [math.sin(2 * math.pi * (t.month - 1) / 12) for t in local]
    )
    np.testing.assert_allclose(
        parts["cal_month_cos"], [math.cos(2 * math.pi * (t.month - 1) / 12) for t in local]
    )
    # Jan 31, 23:30 in New York is still January there, though February in UTC.
    assert parts["cal_month_cos"].loc[1004] == pytest.approx(1.0)


def test_calendar_columns_in_the_output(train: pd.DataFrame) -> None:
    est = TabularPreprocessor(**PARAMS).fit(train)
    names = list(est.get_feature_names_out())
    assert names[:4] == ["color", "size", "cal_hour", "cal_day_of_week"]
    assert names[4:9] == ["x", "y", "z", "cal_month_sin", "cal_month_cos"]
    assert est.cardinalities_[2] == len({t.tz_convert(TZ).hour for t in train["at"]}) + 1


def test_a_missing_timestamp_does_not_change_other_rows(
    train: pd.DataFrame, other: pd.DataFrame
) -> None:
    est = TabularPreprocessor(**PARAMS).fit(train)
    alone = est.transform(other)
    with_gap = pd.concat([other, other.iloc[[0]].assign(at=pd.NaT)], ignore_index=True)
    out = est.transform(with_gap)
    np.testing.assert_array_equal(out[: len(other)], alone)
    names = list(est.get_feature_names_out())
    # No time, no hour or weekday: those categories are missing, code 0.
    assert out[-1, names.index("cal_hour")] == 0
    assert out[-1, names.index("cal_day_of_week")] == 0
