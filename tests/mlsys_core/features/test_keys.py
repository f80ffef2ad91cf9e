"""Tests for mlsys_core/features/keys.py: key codes, gathers by position, and whether a
joined frame shares its arrays with the frame it was joined from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_core.features.keys import KeyIndex, take_rows, with_columns
from mlsys_core.spec.definitions import DefinitionError


def _left() -> pd.DataFrame:
    return pd.DataFrame(
        {"k": ["a", "b", None, "zz"], "n": [1, 2, 3, 4], "x": [0.5, 1.5, 2.5, 3.5]},
        index=[10, 11, 12, 13],
    )


def test_codes_match_equal_tuples_and_minus_one_for_unknown() -> None:
    right = pd.DataFrame({"k": ["b", "c", "a"], "j": [1, 1, 2]})
    index, fitted = KeyIndex.fit(right, ["k", "j"])
    left = pd.DataFrame({"k": ["a", "b", "c", "a", "q"], "j": [2, 1, 1, 1, 1]})
    codes = index.encode(left, ["k", "j"])
    assert codes[:3].tolist() == [fitted[2], fitted[0], fitted[1]]
    assert codes[3] == -1 and codes[4] == -1  # a known value in an unknown tuple; unknown


@pytest.mark.parametrize(
    ("values", "null"),
    [
        (["b", None, "a"], None),
        (["b", None, "a"], np.nan),
        ([2.0, np.nan, 1.0], np.nan),
        (pd.to_datetime(["2024-01-02", None, "2024-01-01"]), pd.NaT),
    ],
)
def test_a_null_key_matches_nothing_even_a_stored_null(values: object, null: object) -> None:
    """The online store never holds a key with a null part, so an offline join must not
    match one either: training rows would see features a served request cannot."""
    right = pd.DataFrame({"k": values, "j": [1, 1, 1]})
    for keys in (["k"], ["k", "j"]):
        index, fitted = KeyIndex.fit(right, keys)
        left = pd.DataFrame({"k": pd.Series([values[2], null, values[0]], dtype=right["k"].dtype)})
        left["j"] = 1
        codes = index.encode(left, keys)
        assert codes.tolist() == [fitted[2], -1, fitted[0]]


@pytest.mark.parametrize("keys", [["k"], ["k", "j"]])
def test_indexed_rows_with_a_null_part_get_no_code_and_the_codes_stay_dense(
    keys: list[str],
) -> None:
    right = pd.DataFrame({"k": ["b", None, "a", "b", np.nan], "j": [1, 1, 1, 1, None]})
    index, fitted = KeyIndex.fit(right, keys)
    assert fitted.tolist() == [0, -1, 1, 0, -1]
    assert index.size == 2  # the null tuples are not among them


def test_a_key_space_too_large_to_code_is_refused_clearly() -> None:
    rows = 2**16
    frame = pd.DataFrame({name: np.arange(rows) for name in "abcd"})  # 2**64 combinations
    with pytest.raises(DefinitionError, match="too many combinations"):
        KeyIndex.fit(frame, list("abcd"))


def test_take_rows_gathers_by_position_and_widens_for_missing_rows() -> None:
    right = pd.DataFrame({"seats": np.array([100, 200], dtype=np.int64), "m": ["x", "y"]})
    values = {"seats_out": right["seats"], "m": right["m"]}
    out = take_rows(_left(), values, np.array([1, 0, -1, 1]))
    assert out.index.tolist() == [10, 11, 12, 13]
    assert out["seats_out"].dtype == np.float64  # int widened to hold the missing row
    assert out["seats_out"].tolist()[:2] == [200.0, 100.0] and np.isnan(out["seats_out"][12])
    assert out["m"][[10, 11, 13]].tolist() == ["y", "x", "y"] and pd.isna(out["m"][12])
    assert out.columns.tolist() == ["k", "n", "x", "seats_out", "m"]


def test_by_default_the_result_shares_nothing_with_left() -> None:
    left = _left()
    before = left.copy()
    out = with_columns(left, {"y": np.arange(4.0)})
    for column in left.columns:
        assert not np.shares_memory(out[column].to_numpy(), left[column].to_numpy())
        out.loc[10, column] = out[column].iloc[1]  # written in place
    pd.testing.assert_frame_equal(left, before)


def test_without_copy_the_result_takes_lefts_arrays_as_they_are() -> None:
    left = _left()
    out = with_columns(left, {"x": np.zeros(4), "y": np.ones(4)}, copy=False)
    for column in ("k", "n"):
        assert np.shares_memory(out[column].to_numpy(), left[column].to_numpy())
    pd.testing.assert_frame_equal(out[["k", "n"]], left[["k", "n"]])
    assert out["x"].tolist() == [0.0] * 4  # replaced, not shared
    assert out.columns.tolist() == ["k", "n", "x", "y"] and out.index.equals(left.index)


@pytest.mark.parametrize("copy", [True, False])
def test_repeated_column_names_still_join(copy: bool) -> None:
    left = pd.DataFrame([[1, 2, 3]], columns=["a", "a", "b"])
    out = with_columns(left, {"b": [9], "c": [7]}, copy=copy)
    assert out.columns.tolist() == ["a", "a", "b", "c"]
    assert out.iloc[0].tolist() == [1, 2, 9, 7]
    assert left.iloc[0].tolist() == [1, 2, 3]
