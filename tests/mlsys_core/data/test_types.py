"""Every column has a type (declared, or recorded from the first snapshot with values), a
cell that does not parse as its type quarantines its row, a clean table always reads, times
take a format, an epoch unit and a time zone, and an empty input writes nothing."""

from __future__ import annotations

import json
import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from mlsys_core.data.cleaning import clean_snapshot, column_types
from mlsys_core.data.contract import (
    REASON,
    bool_text,
    clean_table,
    infer_column_types,
    read_times,
)
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import EmptySourceError, parse_source, read_source_bytes
from mlsys_core.features.store import build_feature_set
from mlsys_core.spec import (
    ColumnRule,
    DatasetSpec,
    FeatureGroups,
    HashSplit,
    LabelSpec,
    SourceSpec,
    TableContract,
)

# Readings of meters; only the key and the time are declared.
CONTRACT = TableContract(
    columns={
        "meter": ColumnRule(dtype="int"),
        "read_at": ColumnRule(dtype="datetime"),
    },
    unique=["meter", "read_at"],
)


def _month(month: int, bad: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "meter": range(1, 41),
            "read_at": [f"2024-{month:02d}-{d:02d}T08:00:00" for d in range(1, 41) if d < 29]
            + [f"2024-{month:02d}-28T09:{m:02d}:00" for m in range(12)],
            "kwh": [float(i) * 1.5 for i in range(40)],  # undeclared: recorded as float
            "site": ["north", "south"] * 20,  # undeclared: recorded as string
        }
    )
    if bad:
        frame["kwh"] = frame["kwh"].astype(object)
        frame.loc[7, "kwh"] = "not-a-number"
    return frame


def _land(folder: Path, name: str, frame: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)


def _landing(folder: Path) -> SourceSpec:
    return SourceSpec(name="readings", path=str(folder), incremental=True)


@pytest.mark.parametrize("together", [False, True], ids=["one-run-each", "one-run-for-both"])
def test_two_landing_files_that_disagree_give_a_readable_clean_table(
    tmp_path: Path, together: bool
) -> None:
    """February's file has "not-a-number" among the numbers of an undeclared column."""
    lake, folder = Lake(tmp_path / "lake"), tmp_path / "landing"
    _land(folder, "2024-01.csv", _month(1))
    if not together:
        snapshot_source(_landing(folder), lake)
    _land(folder, "2024-02.csv", _month(2, bad=True))
    raw = snapshot_source(_landing(folder), lake)
    # Each column is typed by the first file with values in it, however files arrived.
    assert lake.manifest(raw)["column_types"] == {
        "meter": "int", "read_at": "string", "kwh": "float", "site": "string",
    }  # fmt: skip
    cleaned = clean_snapshot(raw, CONTRACT, lake)
    clean = lake.read(cleaned.clean)  # reads as one table: every part has the same types
    assert clean["kwh"].dtype == "float64" and len(clean) == 79
    assert cleaned.reasons == {"kwh: not a float": 1}
    (bad,) = lake.read(cleaned.quarantine).to_dict("records")
    assert bad["kwh"] == "not-a-number" and bad[REASON] == "kwh: not a float"
    assert column_types(cleaned.clean, lake)["kwh"] == "float"
    # The raw table keeps what arrived, and reads too: the column that disagrees as text.
    assert set(lake.read(raw)["kwh"]) >= {"not-a-number", "1.5"}


@pytest.mark.parametrize("together", [False, True], ids=["one-run-each", "one-run-for-both"])
def test_a_column_that_only_a_later_landing_file_has_is_null_before_it(
    tmp_path: Path, together: bool
) -> None:
    """February's file adds a column (and a bad cell, so both outputs see both files)."""
    lake, folder = Lake(tmp_path / "lake"), tmp_path / "landing"
    _land(folder, "2024-01.csv", _month(1))
    if not together:
        clean_snapshot(snapshot_source(_landing(folder), lake), CONTRACT, lake)
    _land(folder, "2024-02.csv", _month(2, bad=True).assign(voltage=230.0))
    raw = snapshot_source(_landing(folder), lake)
    assert lake.manifest(raw)["column_types"]["voltage"] == "float"
    cleaned = clean_snapshot(raw, CONTRACT, lake)
    clean = lake.read(cleaned.clean)
    assert len(clean) == 79 and clean["voltage"].dtype == "float64"
    january = clean["read_at"].dt.month == 1
    assert clean.loc[january, "voltage"].isna().all()
    assert (clean.loc[~january, "voltage"] == 230.0).all()
    (bad,) = lake.read(cleaned.quarantine).to_dict("records")
    assert bad["voltage"] == "230.0" and bad[REASON] == "kwh: not a float"


def test_a_cell_of_an_undeclared_column_that_does_not_parse_is_quarantined() -> None:
    frame = pd.concat([_month(m) for m in range(1, 6)], ignore_index=True)
    frame["kwh"] = frame["kwh"].astype(object)
    frame.loc[3, "kwh"] = "n/a"  # one cell in 200: the column is numbers (1% may not be)
    types = infer_column_types(frame)
    # Text that looks like times stays text until declared (read_at is, as a datetime).
    assert types == {"meter": "int", "read_at": "string", "kwh": "float", "site": "string"}
    result = clean_table(frame, CONTRACT, "readings", types=types)
    assert result.reasons == {"kwh: not a float": 1}
    assert len(result.clean) == 199
    frame.loc[4:9, "kwh"] = "n/a"  # 3.5% of the cells: text, as the data says
    assert infer_column_types(frame)["kwh"] == "string"


def test_a_column_the_first_snapshot_never_filled_waits_for_values(tmp_path: Path) -> None:
    lake, folder = Lake(tmp_path / "lake"), tmp_path / "landing"
    _land(folder, "2024-01.csv", _month(1).assign(note=None))
    first = snapshot_source(_landing(folder), lake)
    assert "note" not in lake.manifest(first)["column_types"]
    clean_snapshot(first, CONTRACT, lake)
    _land(folder, "2024-02.csv", _month(2).assign(note="checked"))
    second = snapshot_source(_landing(folder), lake)
    assert lake.manifest(second)["column_types"]["note"] == "string"
    cleaned = clean_snapshot(second, CONTRACT, lake)
    notes = lake.read(cleaned.clean)["note"]
    assert notes.isna().sum() == 40 and (notes == "checked").sum() == 40


# -- times ---------------------------------------------------------------------------------
def test_a_date_that_is_not_iso_8601_reads_with_its_format() -> None:
    contract = TableContract(columns={"month": ColumnRule(dtype="datetime", format="%b-%Y")})
    result = clean_table(pd.DataFrame({"month": ["Mar-2018", "Apr-2018", "13-2018"]}), contract)
    assert result.clean["month"].tolist() == [
        pd.Timestamp("2018-03-01", tz="UTC"), pd.Timestamp("2018-04-01", tz="UTC"),
    ]  # fmt: skip
    assert result.reasons == {"month: not a datetime (format %b-%Y)": 1}


@pytest.mark.parametrize(
    "written", [[20240105, 20240229, 20241301], [20240105.0, 20240229.0, 20241301.0, None]]
)
def test_dates_written_as_numbers_read_with_their_format(written: list) -> None:
    """20240105 as a number (a float where its column has nulls, as pandas reads it) reads
    with ``%Y%m%d`` as its text does; 20241301 is no date."""
    contract = TableContract(
        columns={"day": ColumnRule(dtype="datetime", format="%Y%m%d", nullable=True)}
    )
    result = clean_table(pd.DataFrame({"day": written}), contract)
    assert result.clean["day"].dropna().tolist() == [
        pd.Timestamp("2024-01-05", tz="UTC"), pd.Timestamp("2024-02-29", tz="UTC"),
    ]  # fmt: skip
    assert result.reasons == {"day: not a datetime (format %Y%m%d)": 1}


def test_epoch_numbers_read_with_their_unit() -> None:
    contract = TableContract(columns={"at": ColumnRule(dtype="datetime", unit="ms")})
    # 1e30 ms is past pandas' range (the year 2262): quarantined, not an OverflowError.
    frame = pd.DataFrame({"at": [1_700_000_000_000, "1700000060000", "soon", 1e30, -1e30]})
    result = clean_table(frame, contract)
    assert result.clean["at"].tolist() == [
        pd.Timestamp(datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        pd.Timestamp(datetime(2023, 11, 14, 22, 14, 20, tzinfo=UTC)),
    ]
    assert result.reasons == {"at: not a datetime (epoch ms)": 3}


def test_a_spreadsheets_serial_days_read_as_local_times() -> None:
    """Excel keeps a time as days since 1899-12-30, the time of day a fraction, local as
    the sheet shows it: no negative days, and none past pandas' range."""
    rule = ColumnRule(dtype="datetime", unit="excel", timezone="America/New_York")
    frame = pd.DataFrame({"at": [45296.4375, "45296", 45474.75, -1, 1e7, "soon"]})
    result = clean_table(frame, TableContract(columns={"at": rule}))
    assert result.clean["at"].tolist() == [
        pd.Timestamp("2024-01-05T15:30:00Z"),  # 10:30 in New York, UTC-5
        pd.Timestamp("2024-01-05T05:00:00Z"),
        pd.Timestamp("2024-07-01T22:00:00Z"),  # 18:00 in New York, UTC-4 in summer
    ]
    assert result.reasons == {"at: not a datetime (a spreadsheet's serial days)": 3}


def test_naive_times_are_local_to_the_time_zone_and_a_skipped_hour_is_quarantined() -> None:
    rule = ColumnRule(dtype="datetime", format="%d/%m/%Y %H:%M", timezone="Europe/Paris")
    frame = pd.DataFrame({"t": ["30/03/2024 12:00", "31/03/2024 02:30", "01/07/2024 12:00"]})
    result = clean_table(frame, TableContract(columns={"t": rule}))
    assert result.clean["t"].tolist() == [
        pd.Timestamp("2024-03-30T11:00:00Z"),  # CET, UTC+1
        pd.Timestamp("2024-07-01T10:00:00Z"),  # CEST, UTC+2
    ]
    assert len(result.quarantined) == 1  # 02:30 does not exist that night


def test_values_with_offsets_keep_their_instant_whatever_the_zone() -> None:
    rule = ColumnRule(dtype="datetime", timezone="America/New_York")
    frame = pd.DataFrame({"t": ["2024-01-01T12:00:00+01:00", "2024-01-01T12:00:00"]})
    result = clean_table(frame, TableContract(columns={"t": rule}))
    assert result.clean["t"].tolist() == [
        pd.Timestamp("2024-01-01T11:00:00Z"),
        pd.Timestamp("2024-01-01T17:00:00Z"),  # naive: New York time
    ]


@pytest.mark.parametrize("live", [False, True])
def test_times_that_say_their_zone_in_a_format_are_read_as_instants(live: bool) -> None:
    """BigQuery's export writes a fraction of a second only where there is one, and says
    UTC; e-mail and HTTP dates (RFC 2822) carry their offsets, mixed across a year's
    clock changes: each is read as its instant, without pandas' mixed-offset warning."""
    bigquery = ColumnRule(dtype="datetime", format="%Y-%m-%d %H:%M:%S.%f %Z")
    mail = ColumnRule(dtype="datetime", format="%a, %d %b %Y %H:%M:%S %z")
    frame = pd.DataFrame(
        {
            "event": ["2024-01-05 10:00:00.123456 UTC", "2024-07-05 10:00:00 UTC", "soon"],
            "sent": ["Fri, 05 Jan 2024 10:00:00 +0100", "Fri, 05 Jul 2024 10:00:00 +0200", "x"],
        }
    )
    contract = TableContract(columns={"event": bigquery, "sent": mail})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = clean_table(frame, contract, live=live)
    assert result.clean["event"].tolist() == [
        pd.Timestamp("2024-01-05T10:00:00.123456Z"), pd.Timestamp("2024-07-05T10:00:00Z"),
    ]  # fmt: skip
    assert result.clean["sent"].tolist() == [
        pd.Timestamp("2024-01-05T09:00:00Z"), pd.Timestamp("2024-07-05T08:00:00Z"),
    ]  # fmt: skip
    assert len(result.quarantined) == 1
    # A request may send the data's own notation or ISO 8601.
    sent = pd.Series(["2024-07-05 10:00:00 UTC", "2024-07-05T12:00:00+02:00"], dtype=object)
    assert read_times(sent, bigquery).tolist() == [pd.Timestamp("2024-07-05T10:00:00Z")] * 2


def test_a_time_outside_the_columns_bounds_is_quarantined() -> None:
    """A typo (2099 for 2019) among local times: held to bounds in UTC, it is quarantined
    with the bound it broke, and so is a time before the first."""
    rule = ColumnRule(
        dtype="datetime", format="%d/%m/%Y %H:%M", timezone="Europe/Paris",
        ge=datetime(2019, 1, 1, tzinfo=UTC), le=datetime(2031, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    frame = pd.DataFrame({"t": ["20/06/2019 10:00", "20/06/2099 10:00", "01/01/2019 00:30"]})
    result = clean_table(frame, TableContract(columns={"t": rule}))
    assert result.clean["t"].tolist() == [pd.Timestamp("2019-06-20T08:00Z")]
    assert result.reasons == {  # 00:30 in Paris is 23:30 UTC the day before the bound
        "t: less_than_or_equal_to(2031-01-01 00:00:00+00:00)": 1,
        "t: greater_than_or_equal_to(2019-01-01 00:00:00+00:00)": 1,
    }


@pytest.mark.parametrize(
    ("rule", "sent", "instant"),
    [
        # the data's own notation and ISO 8601 both read, local to the column's zone
        (ColumnRule(dtype="datetime", format="%m/%d/%Y %H:%M", timezone="America/Chicago"),
         ["06/20/2024 10:00", "2024-06-20T10:00:00", "2024-06-20T10:00:00-05:00", "20/06/2024"],
         ["2024-06-20T15:00Z", "2024-06-20T15:00Z", "2024-06-20T15:00Z", None]),
        (ColumnRule(dtype="datetime", unit="s"),
         [1718877600, "1718877600", "2024-06-20T10:00:00", "2024-06-20T10:00:00+02:00", "x"],
         ["2024-06-20T10:00Z", "2024-06-20T10:00Z", "2024-06-20T10:00Z", "2024-06-20T08:00Z",
          None]),
        (ColumnRule(dtype="datetime", unit="excel"),
         [45463.4166666667, "45463.4166666667", "2024-06-20T10:00:00+02:00", "x"],
         ["2024-06-20T10:00Z", "2024-06-20T10:00Z", "2024-06-20T08:00Z", None]),
        (ColumnRule(dtype="datetime", timezone="Europe/Paris"),
         ["2024-07-01T12:00:00", "2024-07-01T12:00:00Z", "2024-03-31T02:30:00"],
         ["2024-07-01T10:00Z", "2024-07-01T12:00Z", None]),  # 02:30 was skipped that night
    ],
)  # fmt: skip
def test_times_sent_live_read_as_the_lake_reads_the_column(
    rule: ColumnRule, sent: list, instant: list
) -> None:
    read = read_times(pd.Series(sent, dtype=object), rule)
    assert read.tolist() == [pd.NaT if i is None else pd.Timestamp(i) for i in instant]
    # what the lake makes of the data's own notation is what a live reader makes of it
    lake = clean_table(pd.DataFrame({"t": sent[:1]}), TableContract(columns={"t": rule}))
    assert lake.clean["t"].tolist() == read.tolist()[:1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float", "format": "%Y"}, "apply to datetime columns only"),
        ({"dtype": "datetime", "format": "%Y", "unit": "s"}, "a format or a unit, not both"),
        ({"dtype": "datetime", "format": "YYYY-MM"}, "not a strptime pattern"),
        ({"dtype": "datetime", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"dtype": "datetime", "le": 2031}, "bounds are times with a zone"),
        ({"dtype": "float", "ge": datetime(2020, 1, 1, tzinfo=UTC)}, "other column's are numbers"),
        ({"dtype": "datetime", "le": datetime(2031, 1, 1)}, "timezone info"),
    ],
)
def test_time_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ColumnRule(**options)


# -- empty inputs --------------------------------------------------------------------------
def test_an_input_with_a_header_and_no_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "readings.csv"
    path.write_text("meter,read_at,kwh\n")
    lake = Lake(tmp_path / "lake")
    with pytest.raises(EmptySourceError, match="has no rows; nothing was written"):
        snapshot_source(SourceSpec(name="readings", path=str(path)), lake)
    assert not (lake.root / "raw").exists()


def test_an_empty_input_is_skipped_with_a_warning_where_the_spec_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lake, folder = Lake(tmp_path / "lake"), tmp_path / "landing"
    source = _landing(folder).model_copy(update={"on_empty": "skip"})
    _land(folder, "2024-01.csv", _month(1))
    first = snapshot_source(source, lake)
    (folder / "2024-02.csv").write_text("meter,read_at,kwh,site\n")
    (folder / "2024-03.csv").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert snapshot_source(source, lake) == first  # no new snapshot
    assert "2024-02.csv has no rows; skipped" in caplog.text
    assert "2024-03.csv has no rows; skipped" in caplog.text
    assert [p.name for p in (lake.root / "raw" / "readings").iterdir() if p.name[0] != "_"] == [
        first.snapshot_id
    ]
    strict = source.model_copy(update={"on_empty": "error"})
    with pytest.raises(EmptySourceError, match="2024-02.csv has no rows"):
        snapshot_source(strict, lake)


# -- undeclared features -------------------------------------------------------------------
def _spec(path: Path, numeric: list[str]) -> DatasetSpec:
    return DatasetSpec(
        name="meters",
        sources=[SourceSpec(name="readings", path=str(path))],
        contracts={"readings": CONTRACT},
        base="readings",
        entity_keys=["meter"],
        event_timestamp=None,
        label=LabelSpec(column="kwh", threshold=20),
        features=FeatureGroups(numeric=numeric, categorical=["site"]),
        split=HashSplit(),
    )


def test_an_undeclared_column_is_a_feature_with_its_recorded_type(tmp_path: Path) -> None:
    path = tmp_path / "readings.csv"
    _month(1).assign(load=lambda f: f["kwh"] / 10).to_csv(path, index=False)
    spec = _spec(path, numeric=["load"])  # neither "load" nor "site" is declared
    lake = Lake(tmp_path / "lake")
    cleaned = clean_snapshot(snapshot_source(spec.sources[0], lake), CONTRACT, lake)
    features = build_feature_set({"readings": cleaned}, spec, lake)
    frame = lake.read(features.snapshot)
    assert frame["load"].dtype == "float64" and frame["site"].tolist()[:2] == ["north", "south"]
    # A text column listed as numeric, or a column the data does not have: a clear error.
    with pytest.raises(ValueError, match=r"numeric features \['site'\] .* typed \['string'\]"):
        build_feature_set({"readings": cleaned}, _spec(path, numeric=["site"]), lake)
    with pytest.raises(ValueError, match=r"has no columns \['voltage'\]"):
        build_feature_set({"readings": cleaned}, _spec(path, numeric=["voltage"]), lake)


def test_a_parquet_timestamp_column_is_recorded_as_a_datetime(tmp_path: Path) -> None:
    frame = _month(1).assign(
        read_at=lambda f: pd.to_datetime(f["read_at"]),  # declared: parsed from text
        installed=pd.Timestamp("2020-05-01 10:00"),  # undeclared, naive: stored as UTC
    )
    path = tmp_path / "readings.parquet"
    frame.to_parquet(path)
    lake = Lake(tmp_path / "lake")
    raw = snapshot_source(SourceSpec(name="readings", path=str(path)), lake)
    assert lake.manifest(raw)["column_types"]["installed"] == "datetime"
    clean = lake.read(clean_snapshot(raw, CONTRACT, lake).clean)
    assert clean["installed"].iloc[0] == pd.Timestamp("2020-05-01T10:00:00Z")
    assert clean["read_at"].dt.tz is not None


@pytest.mark.parametrize("together", [False, True], ids=["one-run-each", "one-run-for-both"])
def test_json_lines_with_a_text_cell_among_numbers_give_a_readable_clean_table(
    tmp_path: Path, together: bool
) -> None:
    """JSON keeps each value's kind: February's ``"not-a-number"`` sits among floats."""
    lake, folder = Lake(tmp_path / "lake"), tmp_path / "landing"
    folder.mkdir()
    jan = _month(1).assign(extra=["x"] * 40)
    jan.to_json(folder / "2024-01.jsonl", orient="records", lines=True)
    if not together:
        snapshot_source(_landing(folder), lake)
    feb = _month(2, bad=True).assign(extra=[{"a": 1}, [1, 2], True, 2.5] * 10)
    feb.to_json(folder / "2024-02.jsonl", orient="records", lines=True)
    raw = snapshot_source(_landing(folder), lake)
    assert lake.manifest(raw)["column_types"]["kwh"] == "float"
    cleaned = clean_snapshot(raw, CONTRACT, lake)
    clean = lake.read(cleaned.clean)
    assert clean["kwh"].dtype == "float64" and len(clean) == 79
    assert cleaned.reasons == {"kwh: not a float": 1}
    # Values of several kinds arrive as text, as a CSV would hold them.
    assert set(clean["extra"].dropna()) == {"x", '{"a": 1}', "[1, 2]", "True", "2.5"}


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_json_boolean_is_one_text_with_or_without_nulls_beside_it(tmp_path: Path, suffix):
    """A column of JSON booleans with a null among them arrived as "true", one without as
    "True": the same answer, two categories, and a request's boolean meant only the second."""
    contract = TableContract(
        columns={c: ColumnRule(dtype="string", nullable=True) for c in ("full", "gaps", "mixed")}
    )
    rows = [
        {"full": True, "gaps": True, "mixed": True},
        {"full": False, "gaps": None, "mixed": "maybe"},
        {"full": True, "gaps": False, "mixed": False},
    ]
    path = tmp_path / f"t{suffix}"
    path.write_text(
        json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    )
    raw = parse_source(read_source_bytes(SourceSpec(name="t", path=str(path))))
    clean = clean_table(raw, contract).clean
    assert clean["full"].tolist() == [bool_text(True), bool_text(False), bool_text(True)]
    assert clean["gaps"].tolist() == ["True", None, "False"]
    assert clean["mixed"].tolist() == ["True", "maybe", "False"]
