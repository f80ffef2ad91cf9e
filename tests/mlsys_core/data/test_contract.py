"""Tests for mlsys_core/data/contract.py: typing, row-level quarantine with reasons."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from mlsys_core.data.contract import REASON, ContractError, clean_table, infer_column_types
from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.spec import ColumnRule, TableContract

CONTRACT = TableContract(
    columns={
        "key": ColumnRule(dtype="string"),
        "count": ColumnRule(dtype="int", ge=0, le=10),
        "ratio": ColumnRule(dtype="float", nullable=True, ge=-1, le=1),
        "kind": ColumnRule(dtype="string", allowed=["p", "q"]),
        "at": ColumnRule(dtype="datetime", nullable=True),
    },
    unique=["key"],
)


def _row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "key": "k",
        "count": "5",
        "ratio": "0.5",
        "kind": "p",
        "at": "2013-01-01T05:00:00Z",
        "note": "passes through",
    }
    row.update(overrides)
    return row


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["key"] = [f"k{i}" if r["key"] == "k" else r["key"] for i, r in enumerate(rows)]
    frame["rid"] = range(len(rows))  # not in the contract: passes through
    return frame


# Each case: one bad row, the column it names, and a word its reason must hold.
CASES = [
    (_row(count="abc"), "count", "not an int"),
    (_row(count="2.5"), "count", "integer"),
    (_row(count=None), "count", "null"),
    (_row(count="11"), "count", "less_than_or_equal_to"),
    (_row(count="-1"), "count", "greater_than_or_equal_to"),
    (_row(ratio="1.0001"), "ratio", "less_than_or_equal_to"),
    (_row(ratio="-2"), "ratio", "greater_than_or_equal_to"),
    (_row(ratio="half"), "ratio", "not a float"),
    (_row(kind="r"), "kind", "not an allowed value"),
    (_row(kind=None), "kind", "null"),
    (_row(key=None), "key", "null"),
    (_row(at="yesterday-ish"), "at", "not a datetime"),
]


@pytest.mark.parametrize(("bad", "column", "word"), CASES)
def test_each_defect_quarantines_its_row_with_a_reason(
    bad: dict[str, object], column: str, word: str
) -> None:
    rows = [_row(), bad, _row()]
    raw = _frame(rows)
    result = clean_table(raw, CONTRACT, "things")
    assert result.rows_in == len(raw) == len(result.clean) + len(result.quarantined)
    assert result.clean["rid"].tolist() == [0, 2]
    assert result.quarantined["rid"].tolist() == [1]
    reason = result.quarantined[REASON].iloc[0]
    assert reason.startswith(f"{column}: ")
    assert word in reason
    assert result.reasons == Counter({reason: 1})


def test_boundaries_and_allowed_nulls_pass() -> None:
    rows = [
        _row(count="0", ratio="-1", kind="q"),
        _row(count="10", ratio="1", at=None),
        _row(count="7.0", ratio=None),  # an integral float is an int
        _row(count=3, ratio=0.25),  # already typed values are fine too
    ]
    result = clean_table(_frame(rows), CONTRACT)
    assert len(result.quarantined) == 0
    assert result.clean["count"].tolist() == [0.0, 10.0, 7.0, 3.0]
    assert np.isnan(result.clean["ratio"].iloc[2])


@pytest.mark.parametrize(
    ("rule", "written", "read"),
    [
        (
            ColumnRule(dtype="float", strip=["%"]),
            ["26.6%", " 3 % ", "-1.5%", 4.0],
            [26.6, 3, -1.5, 4],
        ),
        (
            ColumnRule(dtype="float", strip=["$", ","]),
            ["$1,234.50", "$7", "-$12", "1,000,000"],
            [1234.5, 7, -12, 1e6],
        ),
        (
            ColumnRule(dtype="float", strip=["€", ".", " "], decimal=","),
            ["1.234,56 €", "12,5", "1 000,00 €", "3"],
            [1234.56, 12.5, 1000, 3],
        ),
        (
            ColumnRule(dtype="float", strip=["$", ","], negative="(5)"),
            ["(1,234.50)", "$(7)", "( 12 )", "-3", "1,000", 4.0],
            [-1234.5, -7, -12, -3, 1000, 4],
        ),
        (
            ColumnRule(dtype="float", strip=["."], decimal=",", negative="5-"),
            ["1.234,56-", "12,5 -", "-3", "1.000,00", 4.0],
            [-1234.56, -12.5, -3, 1000, 4],
        ),
        (  # a minus sign as typesetting and a Swedish Excel write it (U+2212)
            ColumnRule(dtype="float"),
            ["\u22125", "\u22121.5", "3", 4.0, "\uff0d2"],
            [-5, -1.5, 3, 4, -2],
        ),
        (  # an app store's sizes, a site's views: a suffix multiplies
            ColumnRule(dtype="float", suffixes={"k": 1e3, "M": 1e6}),
            ["14.2M", "201k", "3 M", 5.0, "-2k"],
            [14.2e6, 201e3, 3e6, 5, -2e3],
        ),
        (
            ColumnRule(dtype="float", strip=["$"], negative="(5)", suffixes={"B": 1e9, "Bn": 1e9}),
            ["$1.5B", "($2Bn)", "$7"],
            [1.5e9, -2e9, 7],
        ),
        (
            ColumnRule(dtype="float", strip=["\u00a0"], decimal=","),
            ["\u22121\u00a0234,56", "12,5", "\u22120,5"],
            [-1234.56, 12.5, -0.5],
        ),
    ],
)
def test_numbers_written_as_text_read_as_their_rule_says(rule, written, read) -> None:
    contract = TableContract(columns={"amount": rule})
    result = clean_table(pd.DataFrame({"amount": pd.Series(written, dtype=object)}), contract)
    assert result.reasons == {}
    np.testing.assert_allclose(result.clean["amount"].to_numpy(np.float64), read)
    # Anything else is quarantined as any text in a number column is.
    bad = clean_table(pd.DataFrame({"amount": ["about 5", "$"]}), contract)
    assert bad.quarantined[REASON].tolist() == ["amount: not a float"] * 2


@pytest.mark.parametrize("live", [False, True])
def test_a_blank_text_among_numbers_or_times_is_no_value(live: bool) -> None:
    """A spreadsheet writes ``" "`` for a total not yet known (a telecom's new customers):
    no value in a column of numbers or times, in the lake and a stream alike, so a nullable
    column keeps the row and another quarantines it for its null; a text column keeps it."""
    contract = TableContract(
        columns={
            "total": ColumnRule(dtype="float", nullable=True),
            "since": ColumnRule(dtype="datetime", nullable=True),
            "count": ColumnRule(dtype="int"),
            "note": ColumnRule(dtype="string"),
        }
    )
    frame = pd.DataFrame(
        {
            "total": [" ", "29.85", "", "\t"],
            "since": ["2024-01-05T00:00:00Z", "  ", "2024-01-06T00:00:00Z", None],
            "count": ["1", "2", "3", " "],
            "note": [" ", "a", "b", "c"],
        }
    )
    result = clean_table(frame, contract, live=live)
    assert len(result.quarantined) == 1 and "count" in result.quarantined[REASON].iloc[0]
    assert "not an int" not in result.quarantined[REASON].iloc[0]  # null, not unreadable
    clean = result.clean
    assert clean["total"].isna().tolist() == [True, False, True]
    assert clean["since"].isna().tolist() == [False, True, False]
    assert clean["note"].tolist() == [" ", "a", "b"]


def test_a_typeset_minus_is_a_minus_when_a_column_is_typed() -> None:
    """An undeclared column of ``−5`` and ``3`` is whole numbers, as ``-5`` and ``3`` are."""
    frame = pd.DataFrame({"t": ["\u22125", "3"], "x": ["\u22121.5", "2"], "s": ["a\u2212b", "c"]})
    assert infer_column_types(frame) == {"t": "int", "x": "float", "s": "string"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dtype": "string", "strip": ["%"]}, "apply to number columns only"),
        ({"dtype": "datetime", "decimal": ","}, "apply to number columns only"),
        ({"dtype": "float", "strip": ["1"]}, "holds no digit"),
        ({"dtype": "float", "strip": ["."]}, "no decimal mark ('.')"),
        ({"dtype": "float", "strip": [","], "decimal": ","}, "no decimal mark (',')"),
        ({"dtype": "float", "strip": [""]}, "holds no digit"),
        ({"dtype": "string", "suffixes": {"K": 1e3}}, "apply to number columns only"),
        ({"dtype": "float", "suffixes": {"1K": 1e3}}, "holds no digit"),
        ({"dtype": "float", "suffixes": {" ": 1e3}}, "a suffix is a text after the number"),
        ({"dtype": "float", "suffixes": {"K": 0}}, "multiplies by a positive number"),
        ({"dtype": "float", "suffixes": {"K": 1e3}, "duration": "units"}, "no strip, decimal"),
        ({"dtype": "string", "negative": "(5)"}, "apply to number columns only"),
        ({"dtype": "float", "strip": ["(", ")"], "negative": "(5)"}, "no minus"),
        ({"dtype": "float", "strip": [" -"]}, "no minus"),
    ],
)
def test_a_number_notation_that_cannot_read_is_refused(fields, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ColumnRule(**fields)


def test_unparsable_value_is_not_also_reported_as_null() -> None:
    result = clean_table(_frame([_row(count="seven")]), CONTRACT)
    assert result.quarantined[REASON].tolist() == ["count: not an int"]


def test_every_reason_of_a_row_is_listed() -> None:
    result = clean_table(_frame([_row(count="11", kind="z", at="never")]), CONTRACT)
    reasons = result.quarantined[REASON].iloc[0].split("; ")
    assert {r.split(":")[0] for r in reasons} == {"count", "kind", "at"}
    assert len(reasons) == 3
    assert sum(result.reasons.values()) == 3


def test_a_bad_first_copy_does_not_quarantine_a_good_later_copy() -> None:
    raw = pd.DataFrame(
        {
            "key": ["a", "a"],
            "count": ["99", "3"],
            "ratio": ["0", "0"],
            "kind": ["p", "p"],
            "at": [None, None],
        }
    )
    result = clean_table(raw, CONTRACT)
    assert result.clean["key"].tolist() == ["a"]
    assert result.clean["count"].tolist() == [3.0]
    assert result.quarantined[REASON].tolist() == ["count: less_than_or_equal_to(10.0)"]


def test_duplicate_keys_keep_the_first_row() -> None:
    rows = [_row(key="b"), _row(key="a"), _row(key="b", count="1"), _row(key="b", count="2")]
    result = clean_table(_frame(rows), CONTRACT)
    assert result.clean["rid"].tolist() == [0, 1]
    assert result.quarantined["rid"].tolist() == [2, 3]
    assert all("duplicate key (key)" in r for r in result.quarantined[REASON])


def test_missing_column_is_a_contract_error() -> None:
    raw = _frame([_row()]).drop(columns=["kind"])
    with pytest.raises(ContractError, match=r"things.*\['kind'\]"):
        clean_table(raw, CONTRACT, "things")
    assert issubclass(ContractError, ValueError)


def test_clean_rows_are_typed_and_quarantined_rows_are_raw() -> None:
    rows = [_row(count="3"), _row(count="x1"), _row(count="4")]
    raw = _frame(rows)
    raw.index = [100, 50, 7]  # any index: rows are matched by position
    result = clean_table(raw, CONTRACT)
    clean = result.clean
    assert clean["count"].dtype == np.float64
    assert clean["ratio"].dtype == np.float64
    assert isinstance(clean["at"].dtype, pd.DatetimeTZDtype)
    assert str(clean["at"].dt.tz) == "UTC"
    assert clean["at"].iloc[0] == pd.Timestamp("2013-01-01T05:00:00Z")
    assert clean["note"].tolist() == ["passes through"] * 2
    assert list(clean.index) == [0, 1]
    quarantined = result.quarantined.drop(columns=[REASON])
    pd.testing.assert_frame_equal(quarantined, raw.iloc[[1]].reset_index(drop=True))
    assert quarantined["count"].iloc[0] == "x1"


def test_timestamps_in_different_iso_forms_all_parse() -> None:
    stamps = ["2013-01-01T05:00:00Z", "2013-01-01 06:00:00+00:00", "2013-01-01T07:00:00.5Z"]
    result = clean_table(_frame([_row(at=s) for s in stamps]), CONTRACT)
    assert result.quarantined[REASON].tolist() == []
    assert result.clean["at"].tolist() == [pd.Timestamp(s) for s in stamps]


@pytest.mark.parametrize("live", [False, True])
def test_texts_that_mean_no_value_are_nulls_where_the_rule_names_them(live: bool) -> None:
    """The UCI repository writes '?' for a missing horsepower, a report '-': with
    ``missing`` they are nulls, in the lake and in a stream's events alike; any other text
    is still no number."""
    contract = TableContract(
        columns={
            "hp": ColumnRule(dtype="float", nullable=True, missing=["?"]),
            "make": ColumnRule(dtype="string", nullable=True, missing=["-"]),
        }
    )
    frame = pd.DataFrame(
        {"hp": ["130", "?", " ? ", "fast", None], "make": ["ford", "-", "-", "bmw", "?"]}
    )
    result = clean_table(frame, contract, live=live)
    assert result.reasons == {"hp: not a float": 1}
    assert result.clean["hp"].tolist()[0] == 130.0 and result.clean["hp"].isna().sum() == 3
    assert result.clean["make"].tolist() == ["ford", None, None, "?"]  # '?' is a make here
    assert result.quarantined["hp"].tolist() == ["fast"]  # quarantined rows stay as written


@pytest.mark.parametrize("live", [False, True])
def test_a_length_of_time_written_as_a_clock_is_its_seconds(live: bool) -> None:
    """A call's handle time (00:04:31), a queue's wait (4:31, and 1:02:03 past an hour):
    seconds with ``duration``, in the lake and in a stream's events alike; a number is
    already seconds; what no clock writes (4:75, 4 min) is quarantined."""
    contract = TableContract(
        columns={
            "handled": ColumnRule(dtype="float", duration="h:m:s"),
            "waited": ColumnRule(dtype="float", nullable=True, duration="m:s"),
            "flown": ColumnRule(dtype="int", duration="h:m"),
        }
    )
    frame = pd.DataFrame(
        {
            "handled": ["00:04:31", "27:00:00", "00:00:05.5", 30, "00:01:00", "0:01:00"],
            "waited": ["4:31", " 1:02:03 ", None, "0:07", "4:75", "4 min"],
            "flown": ["1:05", "12:00", "0:45", "2:30", "1:00", "1:00"],
        }
    )
    result = clean_table(frame, contract, live=live)
    assert result.reasons == {"waited: not a float": 2}
    clean = result.clean
    assert clean["handled"].tolist() == [271.0, 97200.0, 5.5, 30.0]
    assert clean["waited"].tolist()[:2] == [271.0, 3723.0] and clean["waited"].isna().sum() == 1
    assert clean["flown"].tolist() == [3900, 43200, 2700, 9000]
    assert result.quarantined["waited"].tolist() == ["4:75", "4 min"]  # as written


@pytest.mark.parametrize("live", [False, True])
def test_a_length_of_time_written_with_units_or_in_iso_8601_is_its_seconds(live: bool) -> None:
    """A fare's flight time (2h 50m, 19h, 45m), a video's length from an API (PT4M31S), a
    timedelta pandas wrote (0 days 00:04:31): seconds, in the lake and in a stream's events
    alike. A month has no fixed length: its row is quarantined."""
    contract = TableContract(
        columns={
            "flown": ColumnRule(dtype="float", duration="units"),
            "video": ColumnRule(dtype="float", duration="iso"),
            "watched": ColumnRule(dtype="float", duration="h:m:s"),
        }
    )
    frame = pd.DataFrame(
        {
            "flown": ["2h 50m", "19h", "45m", 600, "1 month", "2h"],
            "video": ["PT4M31S", "P1DT2H", "PT0.5S", "PT1M", "PT1M", "P1M"],
            "watched": ["0 days 00:04:31", "1 days 02:03:04", "00:00:07", 8, "0:00:01", "0:00:01"],
        }
    )
    result = clean_table(frame, contract, live=live)
    assert result.reasons == {"flown: not a float": 1, "video: not a float": 1}
    clean = result.clean
    assert clean["flown"].tolist() == [10200.0, 68400.0, 2700.0, 600.0]
    assert clean["video"].tolist() == [271.0, 93600.0, 0.5, 60.0]
    assert clean["watched"].tolist() == [271.0, 93784.0, 7.0, 8.0]
    assert sorted(result.quarantined["flown"]) == ["1 month", "2h"]  # as written


@pytest.mark.parametrize("live", [False, True])
def test_a_length_of_time_held_as_one_is_its_seconds(live: bool) -> None:
    """A Parquet file's duration column and a database's interval arrive as timedeltas, not
    text: they were typed as text (a category of their spellings) and, declared numbers,
    quarantined every row. They are seconds, in the lake and a stream's events alike; a
    timedelta among other values (an object column) too."""
    waits = pd.to_timedelta([600, 90.5, None, 3_600], unit="s")
    frame = pd.DataFrame({"wait": waits, "mixed": pd.Series([waits[0], 12, None, "30"])})
    assert infer_column_types(frame)["wait"] == "float"
    rules = {"wait": ColumnRule(dtype="float", nullable=True)}
    contract = TableContract(columns=rules | {"mixed": ColumnRule(dtype="float", nullable=True)})
    result = clean_table(frame, contract, live=live)
    assert not result.reasons
    assert (
        result.clean["wait"].tolist()[:2] == [600.0, 90.5] and result.clean["wait"].iloc[3] == 3600
    )
    assert result.clean["mixed"].tolist()[:2] == [600.0, 12.0]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dtype": "string", "duration": "m:s"}, "apply to number columns only"),
        ({"dtype": "float", "duration": "m:s", "strip": ["s"]}, "no strip, decimal, negative"),
        ({"dtype": "float", "duration": "mm:ss"}, "'h:m:s', 'm:s', 'h:m', 'units' or 'iso'"),
    ],
)
def test_a_duration_is_a_number_column_read_as_a_clock(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColumnRule(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"missing": ["?"]}, "a column with missing texts is nullable"),
        ({"missing": [" "], "nullable": True}, "texts that mean no value"),
        ({"missing": [], "nullable": True}, "texts that mean no value"),
    ],
)
def test_missing_texts_are_declared_on_a_nullable_column(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColumnRule(dtype="float", **fields)


@pytest.mark.parametrize("live", [False, True])
def test_a_local_time_a_clock_change_skips_or_repeats_is_quarantined_for_that(
    live: bool,
) -> None:
    """A till writing local time: 02:30 on the spring morning does not exist in Berlin and
    on the autumn one exists twice. Their rows were quarantined as "not a datetime", as if
    the text were no time; the reason now says which hour it is, as the service's 422 does."""
    contract = TableContract(columns={"at": ColumnRule(dtype="datetime", timezone="Europe/Berlin")})
    frame = pd.DataFrame(
        {
            "at": [
                "2024-03-30 10:00",
                "2024-03-31 02:30",
                "2024-10-27 02:30",
                "2024-10-27 01:59",
                "soon",
            ]
        }
    )
    result = clean_table(frame, contract, live=live)
    assert result.reasons == {
        "at: a local time a clock change skips or repeats in Europe/Berlin": 2,
        "at: not a datetime": 1,
    }
    assert result.clean["at"].tolist() == [
        pd.Timestamp("2024-03-30 09:00", tz="UTC"),
        pd.Timestamp("2024-10-26 23:59", tz="UTC"),
    ]


# -- randomized: compare with a row-by-row reference ------------------------------------------


def _number(value: object) -> float | None:
    """None for null, NaN for unparsable, else the float."""
    if value is None:
        return None
    try:
        return float(str(value))
    except ValueError:
        return math.nan


def _reference_bad_columns(rows: list[dict[str, object]]) -> list[set[str]]:
    """Per row, the columns it breaks, written independently of the code under test."""
    seen: set[object] = set()
    out = []
    for row in rows:
        bad = set()
        count = _number(row["count"])
        if count is None or math.isnan(count) or count % 1 or not 0 <= count <= 10:
            bad.add("count")
        ratio = _number(row["ratio"])
        if ratio is not None and (math.isnan(ratio) or not -1 <= ratio <= 1):
            bad.add("ratio")
        if row["kind"] not in ("p", "q"):
            bad.add("kind")
        if row["at"] is not None and pd.isna(pd.to_datetime(row["at"], errors="coerce")):
            bad.add("at")
        # A key repeats only among rows that pass every other rule.
        if not bad:
            if row["key"] in seen:
                bad.add("duplicate")
            seen.add(row["key"])
        out.append(bad)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_tables_split_exactly_like_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    counts = ["0", "3", "10", "11", "-1", "2.5", "abc", None, "7.0"]
    ratios = ["0", "-1", "1", "1.5", "-3", None, "x", "0.25"]
    kinds = ["p", "q", "r", None]
    ats = ["2013-01-01T05:00:00Z", "2013-06-01T17:00:00Z", "garbage", None]
    rows = [
        {
            "key": f"k{rng.randrange(40)}",
            "count": rng.choice(counts),
            "ratio": rng.choice(ratios),
            "kind": rng.choice(kinds),
            "at": rng.choice(ats),
        }
        for _ in range(120)
    ]
    raw = pd.DataFrame(rows)
    raw["rid"] = range(len(raw))
    result = clean_table(raw, CONTRACT)
    expected = _reference_bad_columns(rows)
    assert len(result.clean) + len(result.quarantined) == len(raw)
    assert result.clean["rid"].tolist() == [i for i, bad in enumerate(expected) if not bad]
    assert result.quarantined["rid"].tolist() == [i for i, bad in enumerate(expected) if bad]
    for rid, reason in zip(result.quarantined["rid"], result.quarantined[REASON], strict=True):
        named = {
            "duplicate" if r.startswith("duplicate") else r.split(":")[0]
            for r in reason.split("; ")
        }
        assert named == expected[rid], (rid, reason)
    listed = Counter(r for reason in result.quarantined[REASON] for r in reason.split("; "))
    assert result.reasons == listed


# -- the real tables --------------------------------------------------------------------------


def test_real_weather_quarantines_the_1048_mph_reading(
    real_tables: dict[str, pd.DataFrame],
) -> None:
    weather = real_tables["weather"]
    rule = nycflights13_spec().contracts["weather"]
    result = clean_table(weather, rule, "weather")
    assert len(result.clean) + len(result.quarantined) == len(weather)
    too_fast = weather[pd.to_numeric(weather["wind_speed"]) > 1000]
    assert len(too_fast) == 1
    keys = ["origin", "time_hour"]
    (bad_key,) = too_fast[keys].itertuples(index=False, name=None)
    quarantined = result.quarantined.set_index(keys)
    assert bad_key in quarantined.index
    assert "wind_speed" in quarantined.loc[bad_key, REASON]
    clean_times = result.clean["time_hour"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    clean_keys = set(zip(result.clean["origin"], clean_times, strict=True))
    assert bad_key not in clean_keys
    assert result.clean["wind_speed"].max() <= 150


@pytest.mark.parametrize("table", ["flights", "weather", "planes", "airports"])
def test_real_tables_keep_every_row_accounted_for(
    real_tables: dict[str, pd.DataFrame], table: str
) -> None:
    raw = real_tables[table]
    result = clean_table(raw, nycflights13_spec().contracts[table], table)
    assert result.rows_in == len(raw)
    assert all(isinstance(r, str) and r for r in result.quarantined[REASON])
    assert len(result.clean) >= 0.99 * len(raw)
