"""``mlsys spec init``: a starting spec inferred from a user's CSV, Parquet or JSON file
(or folder), written as a Python file that resolves as ``path.py:NAME``, validates and
passes its own data; the choices that are the user's are marked TODO."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import sqlite3
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from mlsys_core.cli import main
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import clean_snapshot, latest_clean
from mlsys_core.data.contract import clean_table
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import landed, read_source
from mlsys_core.datasets import resolve_spec, starter
from mlsys_core.datasets.starter import database_url, url_code
from mlsys_core.features.assemble import assemble_features, make_label
from mlsys_core.features.store import build_feature_set
from mlsys_core.serving.schema import record_model
from mlsys_core.spec import HashSplit, LookupJoin, RecentSplit
from mlsys_core.stack import postgres
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import train_and_log
from tests.services import postgres_server


def _activity(rows: int = 480) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    months = pd.date_range("2022-01-01", periods=24, freq="MS")
    tickets = rng.poisson(2, rows).astype(float)
    frame = pd.DataFrame(
        {
            "account_id": rng.integers(1, 40, rows),
            "month": [months[i].strftime("%b-%Y") for i in rng.integers(0, 24, rows)],
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "fee": rng.uniform(5, 50, rows).round(3),
            "tickets": tickets,
            "comment": [f"free text {i}" for i in range(rows)],
            "churned": (rng.uniform(size=rows) < 0.1 + 0.1 * tickets).astype(int),
        }
    )
    frame.loc[::13, "tickets"] = np.nan
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".json":
        frame.to_json(path)  # pandas' default: a column per key, a row per row number
    elif path.suffix == ".feather":
        frame.to_feather(path)
    elif path.suffix == ".dta":
        frame.to_stata(path, write_index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def _said(spec_file: Path) -> str:
    """The spec's text, a comment wrapped over lines read as one line."""
    return re.sub(r"\n *# ", " ", spec_file.read_text())


def _init(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["spec", "init", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json", ".feather", ".dta"])
def test_a_starter_spec_types_every_column_and_passes_its_own_data(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture
) -> None:
    frame = _activity()
    data = _write(frame, tmp_path / "data" / f"activity{suffix}")
    out = tmp_path / "specs" / "activity.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:activity")  # the file written is a reference like any other
    rules = spec.contracts["activity"].columns
    assert {c: r.dtype for c, r in rules.items()} == {
        "account_id": "int", "month": "datetime", "plan": "string", "fee": "float",
        "tickets": "float", "comment": "string", "churned": "int",
    }  # fmt: skip
    assert rules["month"].format == "%b-%Y"  # not ISO 8601: the format that reads them all
    # Times are bounded from the first year seen to ten years past the last (2022-2023
    # here): new months pass, a typo such as 2099 is quarantined.
    assert (rules["month"].ge, rules["month"].le) == (
        datetime(2022, 1, 1, tzinfo=UTC), datetime(2033, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    # The key has no range: an account opened later (id 5000, past the 39 seen) passes.
    later = frame.head(2).assign(month=["Jan-2030", "Jan-2099"], account_id=[5000, 2])
    assert clean_table(later, spec.contracts["activity"]).reasons == {
        "month: less_than_or_equal_to(2033-01-01 00:00:00+00:00)": 1
    }
    assert rules["tickets"].nullable and not rules["fee"].nullable
    assert (rules["fee"].ge, rules["fee"].le) == (frame["fee"].min(), frame["fee"].max())
    assert (rules["account_id"].ge, rules["account_id"].le) == (None, None)
    assert spec.event_timestamp == "month" and isinstance(spec.split, RecentSplit)
    # Its windows are lengths of time: on this data, the newest 15% of rows test and the
    # 15% before them validate (whole days, so a little either way).
    months = pd.to_datetime(frame["month"], format="%b-%Y", utc=True)
    dated = spec.split.at(months.max().to_pydatetime())
    assert 0.1 < (months >= dated.valid_end).mean() < 0.2
    assert 0.1 < ((months >= dated.train_end) & (months < dated.valid_end)).mean() < 0.2
    assert spec.entity_keys == ["account_id"]  # guessed from the name: marked TODO
    assert spec.label.column == "churned" and spec.label.threshold == 0.5
    assert set(spec.features.numeric) == {"fee", "tickets"}
    assert spec.features.categorical == ["plan"]  # free text is left out, with the reason
    text = out.read_text()
    assert "# TODO: the entity" in text and "comment: 480 distinct texts" in text
    assert '"account_id": ColumnRule(dtype="int"),  # a key: no range' in text
    # The path is relative to the spec file: data and spec can move together.
    assert f'HERE / "../data/activity{suffix}"' in text
    assert "joined=" not in text  # options at their defaults are not written


def test_a_time_far_from_the_rest_is_left_out_of_the_bounds_and_the_split(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """One month typed as 2099 among 2022-23: the bounds and the split's windows come from
    the rest, the typo's row would be quarantined, and a TODO names it."""
    clean = _activity()
    frame = clean.copy()
    frame.loc[7, "month"] = "Jan-2099"
    out = {}
    for name, data in (("clean", clean), ("typo", frame)):
        path = _write(data, tmp_path / name / "activity.csv")
        out[name] = tmp_path / f"{name}.py"
        code, printed, err = _init(capsys, str(path), "--label", "churned", "-o", str(out[name]))
        assert code == 0, err
    assert "1 would be quarantined {'month: less_than_or_equal_to(2033-01-01" in printed
    assert "TODO: 1 time lies far from the rest (2099-01-01): typos?" in out["typo"].read_text()
    typo, reference = (resolve_spec(f"{out[n]}:activity") for n in ("typo", "clean"))
    assert (
        typo.contracts["activity"].columns["month"]
        == (reference.contracts["activity"].columns["month"])
    )
    assert typo.split == reference.split


@pytest.mark.parametrize("stored", ["csv", "sqlite"])
def test_a_long_time_sorted_log_gets_the_ranges_and_split_of_all_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, stored: str
) -> None:
    """A log written in time order, longer than what spec init types from: its bounds, the
    split's windows and the nulls came from its first rows (its first weeks), so amounts
    later in the year were quarantined and the test window was a few days of a year. Types
    come from a sample spread over the file (or a database table); ranges, nulls and the
    split from every row."""
    monkeypatch.setattr(starter, "SAMPLE_ROWS", 100)
    rng = np.random.default_rng(4)
    n = 2000
    frame = pd.DataFrame(
        {
            "card_id": rng.integers(1, 50, n),
            "ts": pd.date_range("2024-01-01", "2024-12-31", periods=n).strftime("%Y-%m-%d %H:%M"),
            "amount": rng.lognormal(3, 1, n).round(2),
            "items": rng.integers(1, 9, n).astype(float),
            "fraud": (rng.uniform(size=n) < 0.2).astype(int),
        }
    )
    frame.loc[n - 7, "amount"] = 99_999.5  # a big one late in the year
    frame.loc[n - 5, "items"] = np.nan  # the only gap
    frame.loc[n - 3, "items"] = 2.5  # the only fraction
    data = _write(frame, tmp_path / "log.csv")
    if stored == "sqlite":
        data = tmp_path / "log.sqlite"
        with sqlite3.connect(data) as db:
            frame.to_sql("log", db, index=False)
    out = tmp_path / "log_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "fraud", "-o", str(out))
    assert code == 0, err
    assert "2000 rows read, 0 of 100 checked would be quarantined" in printed
    spec = resolve_spec(f"{out}:log")
    columns = spec.contracts["log"].columns
    assert columns["amount"].le == 99_999.5 and columns["amount"].ge == frame["amount"].min()
    assert columns["items"].dtype == "float" and columns["items"].nullable
    assert clean_table(frame, spec.contracts["log"]).reasons == {}
    # The newest 15% of the year tests, the 15% before validates.
    assert isinstance(spec.split, RecentSplit)
    assert spec.split.test == spec.split.valid == pd.Timedelta(days=55)


def test_whole_numbers_named_as_ids_or_codes_are_not_measures(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A card's transactions name their merchant (``merchant_id``, 3000 of them) and a
    store (``store_code``, 5): both were numeric features, as if merchant 2041 were twice
    merchant 1020. An id of many values is left out with a note, a code of few is a
    category; a count (``items``) stays a number."""
    frame = _activity().rename(columns={"account_id": "card_id"})
    rng = np.random.default_rng(6)
    frame["merchant_id"] = rng.integers(1000, 4000, len(frame))
    frame["store_code"] = rng.choice([11, 12, 31, 40, 52], len(frame))
    frame["items"] = rng.integers(1, 9, len(frame))
    data = _write(frame, tmp_path / "cards.csv")
    out = tmp_path / "cards_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:cards")
    assert spec.entity_keys == ["card_id"]
    assert "merchant_id" not in spec.input_columns and "store_code" in spec.features.categorical
    assert "items" in spec.features.numeric
    assert "merchant_id: an id of " in out.read_text()


def test_a_column_named_by_the_entitys_noun_is_its_key_not_a_measure(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Orders name their ``customer`` (300 whole numbers) beside an ``order_id`` unique on
    every row: the row's id was proposed as the entity (no history to learn from) and the
    customer as a numeric feature, as if customer 200 were twice customer 100. The noun
    names the entity now: the key, with no range; a ``store`` of a few values is a
    category; a measure with a noun in its name (``customer_age``) stays a number."""
    rng = np.random.default_rng(8)
    rows = 600
    frame = pd.DataFrame(
        {
            "order_id": np.arange(10_000, 10_000 + rows),
            "Customer": rng.integers(1, 300, rows),
            "store": rng.choice([3, 7, 12, 21], rows),
            "customer_age": rng.integers(18, 80, rows),
            "ordered_at": pd.date_range("2024-01-01", periods=rows, freq="7h").astype(str),
            "bought": rng.integers(0, 2, rows),
        }
    )
    data = _write(frame, tmp_path / "orders.csv")
    out = tmp_path / "orders_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "bought", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:orders")
    assert spec.entity_keys == ["Customer"]
    rules = spec.contracts["orders"].columns
    assert (rules["Customer"].ge, rules["Customer"].le) == (None, None)
    assert "store" in spec.features.categorical and "customer_age" in spec.features.numeric
    assert "Customer" not in spec.features.numeric + spec.features.categorical
    assert "order_id" not in spec.input_columns


@pytest.mark.parametrize(
    ("said", "positive"),
    [
        # a form's spellings, yes the more common: the rarer rule picked "N"
        (
            {"Yes": 0.5, "yes": 0.15, "Y": 0.05, "No": 0.2, "no": 0.05, "N": 0.05},
            ["Y", "Yes", "yes"],
        ),
        ({"True": 0.7, "False": 0.3}, ["True"]),  # a JSON or Parquet boolean, as the lake holds it
        ({"Ja": 0.7, "Nej": 0.3}, ["Ja"]),  # a Swedish form's, the more common
        ({"gold": 0.7, "silver": 0.3}, None),  # no yes or no: the user's to say
    ],
)
def test_a_label_that_says_yes_or_no_in_any_spelling_is_positive_for_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture, said: dict[str, float], positive: list | None
) -> None:
    rng = np.random.default_rng(13)
    rows = 400
    values = rng.choice(list(said), rows, p=list(said.values()))
    frame = pd.DataFrame({"score": rng.normal(size=rows).round(3), "answer": values})
    data = _write(frame, tmp_path / "leads.csv")
    out = tmp_path / "leads_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "answer", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:leads")
    label_line = next(line for line in out.read_text().splitlines() if "label=LabelSpec" in line)
    if positive is None:
        assert spec.label.positive == ["silver"] and "TODO: which class" in out.read_text()
        return
    assert spec.label.positive == positive
    assert "TODO" not in label_line and "TODO: which class" not in out.read_text()
    labels = make_label(frame, spec.label)
    yes = frame["answer"].str.lower().isin(["yes", "y", "true", "ja"])
    assert labels.tolist() == yes.astype(float).tolist()


@pytest.mark.parametrize(
    ("said", "positive"),
    [
        ({"Yes": 0.5, "No": 0.35, "Unknown": 0.1, "": 0.05}, ["Yes"]),  # a survey's
        ({"churned": 0.2, "stayed": 0.7, "pending": 0.1}, ["churned"]),  # the rarer known
    ],
)
def test_a_label_that_says_the_outcome_is_not_known_leaves_the_row_unlabelled(
    tmp_path: Path, capsys: pytest.CaptureFixture, said: dict[str, float], positive: list
) -> None:
    """A survey's answer ``Yes``, ``No`` or ``Unknown``: the third value made the label's
    classes three, and ``Unknown``, the rarest, was the positive class (every yes and no a
    negative). A value that says the outcome is not known is no label: the row waits."""
    rng = np.random.default_rng(14)
    rows = 600
    values = rng.choice(list(said), rows, p=list(said.values()))
    frame = pd.DataFrame({"score": rng.normal(size=rows).round(3), "answer": values})
    frame["answer"] = frame["answer"].replace("", None)  # an empty cell: no answer
    data = _write(frame, tmp_path / "leads.csv")
    out = tmp_path / "leads_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "answer", "-o", str(out))
    assert code == 0 and "0 would be quarantined" in printed, err
    spec = resolve_spec(f"{out}:leads")
    assert spec.label.positive == positive
    unknown = [v for v in said if v and v not in ("Yes", "No", "churned", "stayed")]
    assert spec.contracts["leads"].columns["answer"].missing == unknown
    clean = clean_table(frame, spec.contracts["leads"]).clean
    labels = make_label(clean, spec.label)
    known = frame["answer"].isin([v for v in said if v and v not in unknown])
    np.testing.assert_array_equal(labels.notna().to_numpy(), known.to_numpy())
    assert (
        labels[known.to_numpy()].tolist()
        == frame["answer"][known].isin(positive).astype(float).tolist()
    )


@pytest.mark.parametrize(
    ("layout", "fmt"),
    [
        ("%Y-%m-%d %H:%M:%S.%f UTC", "%Y-%m-%d %H:%M:%S.%f %Z"),  # BigQuery's export
        ("%a, %d %b %Y %H:%M:%S +0000", "%a, %d %b %Y %H:%M:%S %z"),  # e-mail
        ("%a, %d %b %Y %H:%M:%S GMT", "%a, %d %b %Y %H:%M:%S %Z"),  # HTTP's Last-Modified
        ("%B %d, %Y", "%B %d, %Y"),  # a report's date in words
        ("%b %d, %Y", "%b %d, %Y"),  # Jan 5, 2024
        ("%d %B %Y", "%d %B %Y"),  # 05 January 2024
        ("%a %b %d %H:%M:%S +0000 %Y", "%a %b %d %H:%M:%S %z %Y"),  # Twitter's API
        ("%d/%b/%Y:%H:%M:%S +0000", "%d/%b/%Y:%H:%M:%S %z"),  # a web server's access log
        ("%m/%d/%Y, %I:%M:%S %p", "%m/%d/%Y, %I:%M:%S %p"),  # a browser's local time
        ("%d/%b/%y %I:%M %p", "%d/%b/%y %I:%M %p"),  # Jira
        ("%d-%b-%y", "%d-%b-%y"),  # Oracle (05-Jan-24)
        ("%m/%d/%y", "%m/%d/%y"),  # a spreadsheet's short date (01/05/24)
        ("%Y%m%d%H%M%S", "%Y%m%d%H%M%S"),  # a time as digits (20240105100000)
        ("%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M"),  # dashes between numbers (05-01-2024 10:00)
        ("%m-%d-%Y", "%m-%d-%Y"),  # 01-05-2024
        ("%d %b %Y %H:%M", "%d %b %Y %H:%M"),  # 05 Jan 2024 10:00
        ("%b %d, %Y, %I:%M %p", "%b %d, %Y, %I:%M %p"),  # Jan 05, 2024, 10:00 AM
        ("%B %d, %Y at %I:%M %p", "%B %d, %Y at %I:%M %p"),  # a form's, a phone's
        ("%a %d %b %Y", "%a %d %b %Y"),  # Fri 05 Jan 2024
        ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S.%f"),  # SQL Server's text
        ("%d.%m.%y", "%d.%m.%y"),  # a Sparkasse export's booking day (05.01.24)
    ],
)
def test_times_written_by_exports_and_in_words_are_the_event_time(
    tmp_path: Path, capsys: pytest.CaptureFixture, layout: str, fmt: str
) -> None:
    """A BigQuery export's ``2024-01-05 10:00:00.123456 UTC`` (whole seconds without the
    fraction), an e-mail's ``Fri, 05 Jan 2024 10:00:00 +0000``, ``January 5, 2024``, a
    tweet's, an access log's, a browser's, Jira's and Oracle's times, a two-digit year, a
    time as 14 digits, dashes between numbers and months in words with a clock were text
    (or a number): no event time, rows split by hash, and the e-mail's dates a text
    feature. They are the event time now, read with the format that reads them all."""
    rng = np.random.default_rng(14)
    rows = 500
    times = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 300, rows)), "D")
    times = times.where(np.arange(rows) % 5 != 0, times.floor("s"))  # whole seconds too
    written = [t.strftime(layout) for t in times]
    if ".%f" in layout:  # as BigQuery writes a whole second: no fraction
        written = [w.replace(".000000", "") for w in written]
    frame = pd.DataFrame(
        {"user": rng.integers(1, 50, rows), "at": written, "x": rng.normal(size=rows).round(3)}
    )
    frame["clicked"] = (rng.uniform(size=rows) < 0.3).astype(int)
    data = _write(frame, tmp_path / "events.csv")
    out = tmp_path / "events_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "clicked", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:events")
    assert spec.event_timestamp == "at" and spec.contracts["events"].columns["at"].format == fmt
    assert isinstance(spec.split, RecentSplit) and not spec.features.extractors
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["events"])
    assert not clean.reasons
    unit = next((u for part, u in (("%f", "us"), ("%S", "s"), ("%M", "min")) if part in fmt), "D")
    expected = times.floor(unit)
    assert clean.clean["at"].tolist() == list(expected.tz_localize("UTC"))


@pytest.mark.parametrize(
    ("zone", "layout"),
    [
        ("America/New_York", "%Y-%m-%d %H:%M:%S %Z"),  # a US export: EST in winter, EDT
        ("America/Los_Angeles", "%a %b %d %H:%M:%S %Z %Y"),  # Java's Date: PST, PDT
        ("America/Chicago", "%m/%d/%Y %I:%M %p %Z"),  # CST, CDT: CST is China's too
    ],
)
def test_local_times_written_with_their_zones_abbreviation_are_the_event_time(
    tmp_path: Path, capsys: pytest.CaptureFixture, zone: str, layout: str
) -> None:
    """A US export writes each local time with its zone's name, which changes with the
    season (``2024-07-05 10:00:00 EDT``). Only the winter's names read (pandas knows EST,
    not EDT), so the column was text, and a format written by hand quarantined every
    summer row. Each name is read as its offset: every row is clean, at its instant; an
    abbreviation with another meaning elsewhere is named in a TODO."""
    rng = np.random.default_rng(17)
    rows = 400
    times = pd.Timestamp("2024-01-01", tz=zone) + pd.to_timedelta(
        np.sort(rng.uniform(0, 360, rows)), "D"
    )
    times = times.floor("min")
    frame = pd.DataFrame(
        {
            "at": [t.strftime(layout) for t in times],
            "x": rng.normal(size=rows).round(3),
            "clicked": (rng.uniform(size=rows) < 0.3).astype(int),
        }
    )
    out = tmp_path / "calls_spec.py"
    code, _, err = _init(capsys, str(_write(frame, tmp_path / "calls.csv")), "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:calls")
    assert spec.event_timestamp == "at" and isinstance(spec.split, RecentSplit)
    assert spec.contracts["calls"].columns["at"].format == layout
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["calls"])
    assert not clean.reasons
    assert clean.clean["at"].tolist() == list(times.tz_convert("UTC"))
    todo = "TODO: CST is read as UTC-0600, not China Standard Time"
    assert (todo in out.read_text()) == (zone == "America/Chicago")


def test_a_parquet_files_lengths_of_time_are_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A support desk's Parquet export holds each ticket's wait as a duration (pandas'
    timedelta): `spec init` stopped on "attempt to get argmax of an empty sequence". The
    wait is a number of seconds, and the ingest reads it so."""
    rng = np.random.default_rng(20)
    rows = 300
    waits = pd.to_timedelta(rng.gamma(2, 300, rows).round(), "s")
    frame = pd.DataFrame(
        {
            "queue": rng.choice(["billing", "tech"], rows),
            "wait": waits,
            "escalated": rng.integers(0, 2, rows),
        }
    )
    data = _write(frame, tmp_path / "tickets.parquet")
    out = tmp_path / "tickets_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "escalated", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:tickets")
    rule = spec.contracts["tickets"].columns["wait"]
    assert rule.dtype == "float" and "wait" in spec.features.numeric
    assert (rule.ge, rule.le) == (waits.min().total_seconds(), waits.max().total_seconds())
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["tickets"])
    assert not clean.reasons
    assert clean.clean["wait"].tolist() == waits.total_seconds().tolist()


def test_a_time_written_across_year_month_day_and_hour_columns_is_the_event_time(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An air-quality table writes each reading's ``Year``, ``Month``, ``Day`` and
    ``Hour`` as columns of their own: they were four numeric features and the rows split
    by hash, testing on the past of the training rows. They are one joined time now, the
    event time, with a split by time and calendar features; the parts keep their natural
    ranges (next year, or a month not seen yet, is no outlier)."""
    rng = np.random.default_rng(23)
    rows = 600
    at = pd.Timestamp("2022-03-01") + pd.to_timedelta(np.sort(rng.uniform(0, 300, rows)), "D")
    at = at.floor("h")
    frame = pd.DataFrame(
        {"Year": at.year, "Month": at.month, "Day": at.day, "Hour": at.hour,
         "Temp": rng.normal(15, 8, rows).round(1), "alert": rng.integers(0, 2, rows)}
    )  # fmt: skip
    data = _write(frame, tmp_path / "air.csv")
    out = tmp_path / "air_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "alert", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:air")
    assert spec.sources[0].joined == {"time": ["Year", "Month", "Day", "Hour"]}
    assert spec.event_timestamp == "time" and isinstance(spec.split, RecentSplit)
    assert "hour" in spec.features.calendar and spec.features.numeric == ["Temp"]
    rules = spec.contracts["air"].columns
    assert (rules["Year"].ge, rules["Year"].le, rules["Month"].ge, rules["Month"].le) == (
        None, None, 1, 12
    )  # fmt: skip
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["air"])
    assert not clean.reasons
    assert clean.clean["time"].tolist() == list(at.tz_localize("UTC"))


def test_version_numbers_are_no_dates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``2.10.15`` reads as the 2nd of October 2015 (``%d.%m.%y``), but a day and month
    written without their zero are a version's, not a German export's date: text."""
    rng = np.random.default_rng(18)
    rows = 300
    versions = [
        f"{rng.integers(1, 4)}.{rng.integers(1, 13)}.{rng.integers(10, 30)}" for _ in range(rows)
    ]
    frame = pd.DataFrame({"app_version": versions, "x": rng.normal(size=rows).round(3)})
    frame["crashed"] = (rng.uniform(size=rows) < 0.3).astype(int)
    out = tmp_path / "crashes_spec.py"
    code, _, err = _init(capsys, str(_write(frame, tmp_path / "crashes.csv")), "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:crashes")
    assert spec.event_timestamp is None
    assert spec.contracts["crashes"].columns["app_version"].dtype == "string"


def test_dates_in_words_that_no_format_reads_are_no_free_text(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A zone no format reads (MEZ, German Outlook's CET) leaves the dates as text; they
    are not a review to weigh word by word: most of their words are numbers."""
    rng = np.random.default_rng(15)
    rows = 300
    times = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.uniform(0, 300, rows), "D")
    frame = pd.DataFrame(
        {
            "sent": [t.strftime("%a, %d %b %Y %H:%M:%S MEZ") for t in times],
            "x": rng.normal(size=rows).round(3),
            "clicked": rng.integers(0, 2, rows),
        }
    )
    out = tmp_path / "mail_spec.py"
    code, _, err = _init(capsys, str(_write(frame, tmp_path / "mail.csv")), "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:mail")
    assert not spec.features.extractors and "sent" not in spec.input_columns


def test_numbers_written_with_their_unit_are_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A used-car listing writes ``13.29 kmpl``, ``1248 CC``, ``74 bhp``; a flat's listing
    ``1,200 m²`` and ``-5 °C``: each was text, a category of hundreds of values or left
    out. They are numbers read with their unit stripped (two units in one column are read
    alike, with a TODO that names them); a flat's number such as ``12A`` stays a code."""
    rng = np.random.default_rng(16)
    rows = 400
    mileage = rng.normal(19, 3, rows).round(2)
    engine = rng.choice([796, 1197, 1248, 1498], rows)
    power = rng.uniform(40, 170, rows).round(1)
    area = rng.integers(30, 2500, rows)
    frame = pd.DataFrame(
        {
            "mileage": [f"{m} {'km/kg' if i % 9 == 0 else 'kmpl'}" for i, m in enumerate(mileage)],
            "engine": [f"{e} CC" for e in engine],
            "max_power": [f"{p} bhp" for p in power],
            "area": [f"{a:,} m²" for a in area],
            "low": [f"{t} °C" for t in rng.integers(-20, 15, rows)],
            "flat": [f"{rng.integers(1, 40)}{rng.choice(list('ABCD'))}" for _ in range(rows)],
            "sold": rng.integers(0, 2, rows),
        }
    )
    data = _write(frame, tmp_path / "listing.csv")
    out = tmp_path / "listing_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "sold", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:listing")
    rules = spec.contracts["listing"].columns
    assert {c: (r.dtype, r.strip) for c, r in rules.items() if c != "sold"} == {
        "mileage": ("float", ["km/kg", "kmpl"]),
        "engine": ("int", ["CC"]),
        "max_power": ("float", ["bhp"]),
        "area": ("int", ["m²", ","]),
        "low": ("int", ["°C"]),
        "flat": ("string", None),
    }
    assert "TODO: 2 units (km/kg, kmpl) read alike" in _said(out)
    assert {"mileage", "engine", "max_power", "area", "low"} <= set(spec.features.numeric)
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["listing"]).clean
    assert clean["mileage"].tolist() == mileage.tolist() and clean["area"].tolist() == area.tolist()
    record = record_model(spec).model_validate({"max_power": "74.5 bhp", "engine": 1248})
    assert (record.max_power, record.engine) == (74.5, 1248)


def test_lengths_of_time_written_as_clocks_are_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A call log writes its handle time as 00:04:31 and its queue wait as 1:05: both
    were text, proposed as categories of hundreds of values. They are seconds now (the
    wait with a TODO: minutes:seconds or hours:minutes is the user's to say); a time of
    day beside them (09:18) is not a duration, nor a clock joined to a date."""
    rng = np.random.default_rng(12)
    rows = 600
    handled, waited = rng.integers(5, 4000, rows), rng.integers(0, 600, rows)
    started = pd.Timestamp("2024-02-01 08:00") + pd.to_timedelta(np.arange(rows) * 3, unit="h")
    frame = pd.DataFrame(
        {
            "call_id": [f"C-{i:05d}" for i in range(rows)],
            "day": started.strftime("%Y-%m-%d"),
            "start": started.strftime("%H:%M"),
            "handle_time": [f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}" for s in handled],
            "queue_wait": [f"{w // 60}:{w % 60:02d}" for w in waited],
            "escalated": rng.integers(0, 2, rows),
        }
    )
    data = _write(frame, tmp_path / "calls.csv")
    out = tmp_path / "calls_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "escalated", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:calls")
    rules = spec.contracts["calls"].columns
    assert (rules["handle_time"].dtype, rules["handle_time"].duration) == ("float", "h:m:s")
    assert (rules["queue_wait"].dtype, rules["queue_wait"].duration) == ("float", "m:s")
    assert {"handle_time", "queue_wait"} <= set(spec.features.numeric)
    assert 'TODO: minutes:seconds? duration="h:m"' in out.read_text()
    # The date and its time of day are one time, the event time, as before.
    assert spec.sources[0].joined == {spec.event_timestamp: ["day", "start"]}
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["calls"]).clean
    assert clean["handle_time"].tolist() == handled.astype(float).tolist()
    assert clean["queue_wait"].tolist() == waited.astype(float).tolist()


def test_lengths_of_time_written_with_units_or_in_iso_8601_are_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A fare's flight time written ``2h 50m``, ``19h`` or ``45m`` was a category of its
    hundreds of spellings; an API's ``PT4M31S``, a timedelta pandas wrote (``0 days
    00:04:31``) and a lead time of ``3 days`` were text too. Each is seconds now; a lone
    letter after a number (``12 m`` of height, ``60 W``) is still a unit, not a time."""
    rng = np.random.default_rng(43)
    rows = 500
    flown = rng.integers(1, 200, rows) * 5 * 60
    video, watched, lead = (
        rng.integers(5, 4000, rows),
        rng.integers(0, 200_000, rows),
        rng.integers(1, 30, rows),
    )

    def words(seconds: int) -> str:
        hours, minutes = divmod(seconds // 60, 60)
        return " ".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m")) if n) or "0m"

    frame = pd.DataFrame(
        {
            "Duration": [words(s) for s in flown],
            "video_length": [f"PT{s // 60}M{s % 60}S" if s >= 60 else f"PT{s}S" for s in video],
            "watched": pd.to_timedelta(watched, unit="s"),  # written as pandas writes one
            "lead": [f"{d} day{'s' if d > 1 else ''}" for d in lead],
            "height": [f"{h} m" for h in rng.integers(2, 40, rows)],
            "power": [f"{w} W" for w in rng.choice([40, 60, 75, 100], rows)],
            "expensive": rng.integers(0, 2, rows),
        }
    )
    data = _write(frame, tmp_path / "trips.csv")
    assert "0 days " in data.read_text()
    out = tmp_path / "trips_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "expensive", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:trips")
    rules = spec.contracts["trips"].columns
    assert {c: (r.dtype, r.duration, r.strip) for c, r in rules.items() if c != "expensive"} == {
        "Duration": ("float", "units", None),
        "video_length": ("float", "iso", None),
        "watched": ("float", "h:m:s", None),
        "lead": ("float", "units", None),
        "height": ("int", None, ["m"]),
        "power": ("int", None, ["W"]),
    }
    assert set(rules) - {"expensive"} <= set(spec.features.numeric)
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["trips"]).clean
    assert clean["Duration"].tolist() == flown.astype(float).tolist()
    assert clean["video_length"].tolist() == video.astype(float).tolist()
    assert clean["watched"].tolist() == watched.astype(float).tolist()
    assert clean["lead"].tolist() == (lead * 86400.0).tolist()


def test_free_text_written_by_people_is_a_bag_of_its_words(
    tmp_path: Path, capsys: pytest.CaptureFixture, settings: Settings
) -> None:
    """Reviews whose words are the whole signal: the text column was left out as "distinct
    texts (free text or an id)" and the model was at chance. A column whose values are
    mostly several words is a TF-IDF text feature now (its rows' ids and people's names,
    a word or two, are still left out), and the model learns from it."""
    rng = np.random.default_rng(11)
    rows = 1_200
    liked = rng.uniform(size=rows) < 0.5
    good, bad = ["love it", "works great", "very happy"], ["broke at once", "waste of money"]
    neutral = ["the box was blue", "bought it for my son", "ordered on a Monday"]
    texts = [
        f"{rng.choice(good if like else bad).capitalize()}. {rng.choice(neutral)}, {i} days ago."
        for i, like in enumerate(liked)
    ]
    frame = pd.DataFrame(
        {
            "review_id": [f"R{i:06d}" for i in range(rows)],
            "author": [f"{rng.choice(['Ann', 'Bo', 'Cy', 'Di'])} Smith{i}" for i in range(rows)],
            "product": rng.choice(["P1", "P2", "P3"], rows),
            "review_text": texts,
            "footer": "Sent from the shop's review page, thank you for your words",
            "reviewed_at": pd.date_range("2024-01-01", periods=rows, freq="5h").astype(str),
            "helpful": liked.astype(int),
        }
    )
    data = _write(frame, tmp_path / "reviews.csv")
    out = tmp_path / "reviews_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "helpful", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:reviews")
    (extractor,) = spec.features.extractors
    assert (extractor.kind, extractor.columns, extractor.method) == (
        "text",
        ["review_text"],
        "tfidf",
    )
    assert "review_text" not in spec.features.categorical
    assert not {"review_id", "author"} & set(spec.input_columns)
    assert "# left out or to check: author:" in out.read_text()
    assert "# left out or to check: footer: one value only" in out.read_text()
    # The record model takes a review over two lines, as the data may hold one.
    record = record_model(spec).model_validate(
        {"review_id": "R9", "reviewed_at": "2024-09-01T10:00:00", "review_text": "Love it.\nOk"}
    )
    assert record.review_text == "Love it.\nOk"
    lake = Lake(settings.lake_dir)
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    features = build_feature_set(clean, spec, lake)
    trained = train_and_log(features, TrainConfig(epochs=10), lake, settings.tracking)
    # The words tell liked from not, nothing else does (without them: about 0.5).
    assert trained.metrics["test_auc"] > 0.8


def test_a_database_is_read_table_by_table_and_ingested_by_the_specs_queries(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A SQLite file: each table (names quoted as the database needs) is a source read by a
    query, typed as the files are, and the lookup found across tables. The URL is relative
    to the spec file, so the two move together."""
    frame = _activity()
    folder = tmp_path / "crm"
    folder.mkdir()
    with sqlite3.connect(folder / "crm.sqlite") as db:
        frame.to_sql("Activity", db, index=False)
        plans = pd.DataFrame({"plan": ["basic", "pro", "team"], "seats": [1, 5, 20]})
        plans.to_sql("plans", db, index=False)
    out = folder / "crm_spec.py"
    # Given as a URL, a SQLite file is still a file, named relative to the spec file.
    assert database_url(f"sqlite:///{folder / 'crm.sqlite'}") == database_url(folder / "crm.sqlite")
    code, printed, err = _init(
        capsys, str(folder / "crm.sqlite"), "--label", "churned", "-o", str(out)
    )
    assert code == 0, err
    assert "activity: table 'SELECT * FROM \"Activity\"' of sqlite:///" in printed
    assert "480 rows read, 0 would be quarantined" in printed
    moved = shutil.move(folder, tmp_path / "elsewhere")
    spec = resolve_spec(f"{Path(moved) / 'crm_spec.py'}:crm")
    sources = {s.name: s for s in spec.sources}
    assert {n: (s.format, s.query) for n, s in sources.items()} == {
        "activity": ("sql", 'SELECT * FROM "Activity"'),
        "plans": ("sql", "SELECT * FROM plans"),
    }
    assert spec.contracts["activity"].columns["month"].format == "%b-%Y"
    assert spec.lookups == [
        LookupJoin(source="plans", on={"plan": "plan"}, columns={"seats": "seats"})
    ]
    lake = Lake(tmp_path / "lake")
    ingested = lake.read(snapshot_source(sources["activity"], lake))
    pd.testing.assert_frame_equal(ingested, frame, check_dtype=False)


@pytest.mark.slow
def test_a_database_url_with_a_password_is_read_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real PostgreSQL whose URL holds a password: the spec reads the URL from an
    environment variable, the password is written and printed nowhere, and with the
    variable set the spec ingests the table."""
    frame = _activity()
    out = tmp_path / "crm.py"
    monkeypatch.setenv("CRM_DB_URL", "unset")
    monkeypatch.delenv("CRM_DB_URL")  # restored to unset after the test, whatever init sets
    with postgres_server(tmp_path / "pg", "hunter2") as (port, _):
        postgres.ensure_databases("hunter2", port, ("crm",))
        url = postgres.url("hunter2", port, "crm")
        engine = sa.create_engine(url)
        try:  # disposed: a pooled connection collected later fails another test's warnings
            frame.to_sql("activity", engine, index=False)
        finally:
            engine.dispose()
        code, printed, err = _init(capsys, url, "--label", "churned", "-o", str(out))
        assert code == 0, err
        text = out.read_text()
        assert "hunter2" not in text + printed
        assert "url=os.environ['CRM_DB_URL'], query='SELECT * FROM activity'" in text.replace(
            '"', "'"
        )
        assert "the spec reads it from CRM_DB_URL" in printed
        monkeypatch.setenv("CRM_DB_URL", url)
        spec = resolve_spec(f"{out}:crm")
        lake = Lake(tmp_path / "lake")
        ingested = lake.read(snapshot_source(spec.sources[0], lake))
        pd.testing.assert_frame_equal(ingested, frame, check_dtype=False)
    assert url_code(url, None, tmp_path) == ("os.environ['CRM_DB_URL']", "CRM_DB_URL")
    assert url_code(f"postgresql+psycopg://me@127.0.0.1:{port}/crm", None, tmp_path)[1] == ""
    # The server gone: a clear one-line error, still without the password.
    code, printed, err = _init(capsys, url, "-o", str(tmp_path / "again.py"))
    assert code != 0 and f"127.0.0.1:{port}/crm: cannot read its tables" in err
    assert "hunter2" not in printed + err and not (tmp_path / "again.py").exists()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_the_unedited_starter_spec_builds_features_and_trains(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture, settings: Settings
) -> None:
    data = _write(_activity(), tmp_path / f"activity{suffix}")
    out = tmp_path / "activity_spec.py"
    assert _init(capsys, str(data), "--label", "churned", "--name", "acts", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:acts")
    lake = Lake(settings.lake_dir)
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    assert clean["activity"].quarantine.rows == 0
    features = build_feature_set(clean, spec, lake)
    assert features.snapshot.rows == 480
    trained = train_and_log(
        features, TrainConfig(epochs=1), Lake(settings.lake_dir), settings.tracking
    )
    assert 0.0 <= trained.metrics["test_auc"] <= 1.0


@pytest.mark.parametrize(
    ("times", "parts"),
    [
        # a session log over six weeks: the hour and the weekday
        (pd.date_range("2024-03-01 06:15", periods=480, freq="2h"), ["hour", "day_of_week"]),
        # dates alone over ten days: no hour to learn, too few weeks
        (pd.date_range("2024-03-01", periods=480, freq="D")[np.arange(480) % 10], []),
        # monthly rows over two years: the weekday and the month, no hour
        (pd.date_range("2022-01-01", periods=24, freq="MS")[np.arange(480) % 24], None),
    ],
)
def test_the_calendar_parts_proposed_are_those_the_event_time_can_tell(
    tmp_path: Path, capsys: pytest.CaptureFixture, times: pd.DatetimeIndex, parts: list | None
) -> None:
    """Hour-of-day and weekday effects (night-time fraud, weekend traffic) are learnt from
    the event time's calendar parts, which no starter spec proposed: each part is proposed
    where the times can tell it, with a comment, and none where they cannot."""
    parts = ["day_of_week", "month_sin", "month_cos"] if parts is None else parts
    frame = _activity().drop(columns=["month"])
    frame["at"] = times.strftime("%Y-%m-%dT%H:%M:%SZ")
    data = _write(frame, tmp_path / "activity.csv")
    out = tmp_path / "activity_spec.py"
    assert _init(capsys, str(data), "--label", "churned", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:activity")
    assert spec.event_timestamp == "at"
    assert spec.features.calendar == parts
    assert ("# of 'at', in UTC unless timezone= says" in out.read_text()) == bool(parts)


def test_a_folder_of_like_files_is_a_landing_folder_and_of_different_files_a_lookup(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frame = _activity()
    landing = tmp_path / "landing"
    _write(frame.iloc[:240], landing / "2022.csv")
    _write(frame.iloc[240:], landing / "2023.csv")
    out = tmp_path / "landing_spec.py"
    assert _init(capsys, str(landing), "--label", "churned", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:landing")
    (source,) = spec.sources
    assert source.incremental and Path(source.path) == landing.resolve()

    tables = tmp_path / "tables"
    _write(frame, tables / "activity.csv")
    accounts = pd.DataFrame({"account_id": range(1, 40), "region": ["n", "s", "e"] * 13})
    _write(accounts, tables / "accounts.csv")
    out = tmp_path / "tables_spec.py"
    args = [str(tables), "--label", "churned", "--keys", "account_id", "-o", str(out)]
    assert _init(capsys, *args)[0] == 0
    spec = resolve_spec(f"{out}:tables")
    assert spec.base == "activity"
    assert spec.lookups == [
        LookupJoin(source="accounts", on={"account_id": "account_id"}, columns={"region": "region"})
    ]
    assert "region" in spec.features.categorical
    assert spec.contracts["accounts"].unique == ["account_id"]
    assert "TODO: the entity" not in out.read_text()  # --keys decided it


@pytest.mark.parametrize("named", [True, False])
def test_a_kaggle_folder_trains_on_its_train_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, named: bool
) -> None:
    """A competition's folder: ``train.csv`` (labelled), ``test.csv`` (the same columns
    but the label) and ``gender_submission.csv`` (an id and a label of one class). The
    first file by name, the sample submission, was the base, joined to ``test.csv`` for its
    features: nothing to learn. The base is the table where the label is one: both
    classes, the most rows (without ``--label``, the longest table)."""
    frame = _activity()
    train, test = frame.iloc[:360], frame.iloc[360:]
    folder = tmp_path / "comp"
    _write(train, folder / "train.csv")
    _write(test.drop(columns="churned"), folder / "test.csv")
    _write(test[["account_id"]].assign(churned=0), folder / "gender_submission.csv")
    out = tmp_path / "comp_spec.py"
    args = ["--label", "churned"] if named else []
    code, _, err = _init(capsys, str(folder), *args, "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:comp")
    assert spec.base == "train" and spec.label.column == "churned" and not spec.lookups
    assert not spec.feature_views  # test.csv holds rows to predict, not a log to count
    assert {"plan", "fee", "tickets"} <= set(spec.input_columns)


@pytest.mark.parametrize("archive", ["playground-series-s4e1.zip", "churn.tar.gz"])
def test_a_competitions_download_is_read_as_it_comes_a_table_per_file_of_the_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture, archive: str
) -> None:
    """The folder above as the download comes, ``competition.zip`` (zipped on a Mac, with
    its ``__MACOSX`` resource forks) or a tarball: "holds no file of a format read here".
    Each file of the archive is a table read by name (``member``), in the lake as
    ``spec init`` read it."""
    frame = _activity()
    train, test = frame.iloc[:360], frame.iloc[360:]
    folder = tmp_path / "comp"
    folder.mkdir()
    files = {
        "train.csv": train.to_csv(index=False),
        "test.csv": test.drop(columns="churned").to_csv(index=False),
        "__MACOSX/._train.csv": "\x00\x05\x16\x07",
        "sample_submission.csv": "account_id,churned\n1,0\n",
    }
    if archive.endswith(".zip"):
        with zipfile.ZipFile(folder / archive, "w") as packed:
            for name, text in files.items():
                packed.writestr(name, text)
    else:
        with tarfile.open(folder / archive, "w:gz") as packed:
            for name, text in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(text.encode())
                packed.addfile(info, io.BytesIO(text.encode()))
    out = tmp_path / "comp_spec.py"
    code, printed, err = _init(capsys, str(folder), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert f"train: file comp/{archive} (train.csv), " in printed
    spec = resolve_spec(f"{out}:comp")
    assert {s.name: s.member for s in spec.sources} == {
        "train": "train.csv",
        "test": "test.csv",
        "sample_submission": "sample_submission.csv",
    }
    assert spec.base == "train" and spec.label.column == "churned"
    assert {"plan", "fee", "tickets"} <= set(spec.input_columns)
    lake = Lake(tmp_path / "lake")
    raw = lake.read(snapshot_source(spec.sources[0], lake))
    assert raw["account_id"].tolist() == train["account_id"].tolist()


def test_a_workbook_in_an_archive_is_read_as_its_sheet_lies(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A report's workbook zipped with a README: spec init stopped on openpyxl's "does not
    support .zip file format". The sheet's title rows are found in the archive's file."""
    frame = _activity()
    book = io.BytesIO()
    with pd.ExcelWriter(book) as writer:
        frame.to_excel(writer, sheet_name="Accounts", index=False, startrow=2)
        writer.sheets["Accounts"]["A1"] = "Accounts, as of 2024-06-30"
    folder = tmp_path / "report"
    folder.mkdir()
    with zipfile.ZipFile(folder / "report.zip", "w") as packed:
        packed.writestr("accounts.xlsx", book.getvalue())
        packed.writestr("README.md", "# Accounts\n")
    out = tmp_path / "report_spec.py"
    code, _, err = _init(capsys, str(folder), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:report")
    (source,) = spec.sources
    assert (source.member, source.skip_rows) == ("accounts.xlsx", 2)
    lake = Lake(tmp_path / "lake")
    raw = lake.read(snapshot_source(source, lake))
    assert raw["account_id"].tolist() == frame["account_id"].tolist()


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
def test_a_frame_saved_with_its_key_as_pandas_index_reads_the_key_as_a_column(
    tmp_path: Path, capsys: pytest.CaptureFixture, suffix: str
) -> None:
    """``df.set_index("account_id").to_parquet(...)``: the key was no column, and as it
    repeats, ``spec init`` stopped on "cannot reindex on an axis with duplicate labels"."""
    frame = _activity()
    path = tmp_path / f"activity{suffix}"
    keyed = frame.set_index("account_id")
    (keyed.to_parquet if suffix == ".parquet" else keyed.to_feather)(path)
    out = tmp_path / "activity_spec.py"
    code, printed, err = _init(capsys, str(path), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:activity")
    assert list(spec.contracts["activity"].columns) == list(frame.columns)
    assert spec.entity_keys == ["account_id"]
    lake = Lake(tmp_path / "lake")
    raw = lake.read(snapshot_source(spec.sources[0], lake))
    assert raw["account_id"].tolist() == frame["account_id"].tolist()


def test_monthly_exports_that_gain_a_column_are_one_landing_table_beside_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A shop exports its orders month by month (``orders_2024-01.csv``, ...), and from
    March adds a coupon column and reorders the others. Each file was a table of its own:
    January was the base (a quarter of the rows trained on) and March a lookup of it. The
    files named alike but for their digits are one landing table read by a glob that
    leaves out a summary and a lookup beside them; a column the early files lack is null
    there, and the ingest reads every row."""
    frame = _activity()
    folder = tmp_path / "exports"
    for month, rows in enumerate(np.array_split(np.arange(len(frame)), 4), start=1):
        part = frame.iloc[rows]
        if month >= 3:  # noqa: PLR2004 -- from March: a new column, another order
            part = part.assign(coupon=["SPRING10", ""] * (len(part) // 2))[
                ["coupon", *reversed(frame.columns)]
            ]
        _write(part, folder / f"orders_2024-{month:02d}.csv")
    _write(pd.DataFrame({"month": ["2024-01"], "orders": [120]}), folder / "orders_summary.csv")
    plans = pd.DataFrame({"plan": ["basic", "pro", "team"], "seats": [1, 5, 20]})
    _write(plans, folder / "plans.csv")
    out = tmp_path / "orders_spec.py"
    code, _, err = _init(capsys, str(folder), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:exports")
    sources = {s.name: s for s in spec.sources}
    assert set(sources) == {"orders", "orders_summary", "plans"} and spec.base == "orders"
    orders = sources["orders"]
    assert orders.incremental and orders.pattern == "orders_[0-9]*.csv"
    assert [f.path.name for f in landed(orders)] == [f"orders_2024-0{m}.csv" for m in (1, 2, 3, 4)]
    clean = clean_table(read_source(orders), spec.contracts["orders"])
    assert not clean.reasons and len(clean.clean) == len(frame)
    assert spec.contracts["orders"].columns["coupon"].nullable
    coupons = clean.clean["coupon"]  # January and February's rows first, in name order
    assert coupons.iloc[:240].isna().all() and (coupons.iloc[240:] == "SPRING10").sum() == 120


@pytest.mark.parametrize("nested", [False, True])
def test_a_partitioned_dataset_is_one_landing_table_with_its_folders_values(
    tmp_path: Path, capsys: pytest.CaptureFixture, nested: bool
) -> None:
    """A dataset as Spark or pyarrow writes it (``year=2022/plan=pro/part-0.parquet``, a
    ``_SUCCESS`` marker): spec init said the folder "holds no CSV, Parquet or JSON files".
    It is now one landing table whose files are found below it and whose folders' values
    are columns; a year folder gets no range (next year's is past every one seen); the lake
    reads every row. ``nested``: the dataset is a folder beside a lookup file."""
    frame = _activity()
    frame["year"] = pd.to_datetime(frame["month"], format="%b-%Y").dt.year
    data = tmp_path / "export"
    dataset = data / "activity" if nested else data
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_to_dataset(table, dataset, partition_cols=["year", "plan"])
    (dataset / "_SUCCESS").write_bytes(b"")
    assert not list(dataset.glob("*.parquet"))  # only the partitions' folders hold files
    if nested:
        accounts = pd.DataFrame({"account_id": range(1, 40), "region": ["n", "s", "e"] * 13})
        _write(accounts, data / "accounts.parquet")
    out = tmp_path / "activity_spec.py"
    args = [str(data), "--label", "churned", "--keys", "account_id", "-o", str(out)]
    code, printed, err = _init(capsys, *args)
    assert code == 0, err
    assert "0 would be quarantined" in printed
    assert "its folders name year=, plan=: columns of their files' rows" in _said(out)
    spec = resolve_spec(f"{out}:export")
    source = next(s for s in spec.sources if s.name == spec.base)
    assert source.incremental and source.pattern == "**/*.parquet"
    assert Path(source.path) == dataset.resolve()
    if nested:
        assert spec.lookups[0].source == "accounts" and "region" in spec.features.categorical
    rules = spec.contracts[spec.base].columns
    assert rules["year"].dtype == "int" and (rules["year"].ge, rules["year"].le) == (None, None)
    assert rules["plan"].dtype == "string" and "plan" in spec.features.categorical
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), spec.contracts[spec.base], lake)
    assert clean.quarantine.rows == 0
    read = lake.read(clean.clean).sort_values(["account_id", "fee"], ignore_index=True)
    want = frame.sort_values(["account_id", "fee"], ignore_index=True)
    assert read["plan"].tolist() == want["plan"].tolist()
    assert read["year"].tolist() == want["year"].tolist()


def _workbook(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """An order export as a business keeps it: a title, the export date and a blank row
    above the table, a Total row below it; the customers on a sheet of their own; an empty
    third sheet. Returns the customers."""
    customers = pd.DataFrame(
        {
            "account_id": range(1, 40),
            "region": ["North", "South", "East"] * 13,
            "since": pd.date_range("2020-01-01", periods=39, freq="MS"),
        }
    )
    with pd.ExcelWriter(path, engine="openpyxl") as book:
        frame.to_excel(book, sheet_name="Orders", index=False, startrow=3)
        customers.to_excel(book, sheet_name="Customers", index=False)
        pd.DataFrame().to_excel(book, sheet_name="Sheet3", index=False)
        orders = book.sheets["Orders"]
        orders["A1"], orders["A2"] = "ACME Ltd. order export", "Exported 2024-12-01"
        orders.cell(row=len(frame) + 5, column=1, value="Total")
        orders.cell(row=len(frame) + 5, column=4, value=float(frame["fee"].sum()))
    return customers


def test_an_excel_workbooks_sheets_are_tables_read_as_their_cells_hold_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A workbook was refused ("save the sheet as CSV"). Its sheets are tables now: each
    read by ``SourceSpec(sheet=...)``, a report's title rows and Total row found as in a
    CSV, an empty sheet left out, the customers joined as a lookup; cells keep what they
    hold (a time stays a time, a zip code typed as text keeps its zero), and the lake
    reads every row of each."""
    frame = _activity().drop(columns=["comment"])
    frame["month"] = pd.to_datetime(frame["month"], format="%b-%Y") + pd.to_timedelta(
        np.arange(len(frame)) % 20, unit="h"
    )
    frame["zip"] = np.where(np.arange(len(frame)) % 2, "02134", "10001")
    data = tmp_path / "acme.xlsx"
    customers = _workbook(data, frame)
    out = tmp_path / "acme_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert printed.count("0 would be quarantined") == 2
    spec = resolve_spec(f"{out}:acme")
    sources = {s.name: s for s in spec.sources}
    assert set(sources) == {"orders", "customers"} and spec.base == "orders"
    orders = sources["orders"]
    assert (orders.sheet, orders.skip_rows, orders.skip_footer) == ("Orders", 3, 1)
    assert sources["customers"].sheet == "Customers"
    assert "the header follows a title: 3 lines above it" in _said(out)
    rules = spec.contracts["orders"].columns
    assert rules["month"].dtype == "datetime" and rules["zip"].dtype == "string"
    assert rules["fee"].le == pytest.approx(frame["fee"].max(), rel=1e-4)  # no total in it
    assert spec.lookups[0].source == "customers" and "region" in spec.features.categorical
    lake = Lake(tmp_path / "lake")
    for name, rows in (("orders", frame), ("customers", customers)):
        clean = clean_snapshot(snapshot_source(sources[name], lake), spec.contracts[name], lake)
        assert clean.quarantine.rows == 0 and clean.clean.rows == len(rows)
    held = lake.read(latest_clean(lake, "orders").clean)
    assert set(held["zip"]) == {"02134", "10001"}
    assert held["month"].min() == frame["month"].min().tz_localize("UTC")


def test_a_subfolder_of_like_files_is_a_landing_folder_and_stray_texts_keep_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The layout exports often have, a lookup file beside a folder of monthly JSON lines,
    where an amount is sometimes "n/a" (no value, as JSON keeps it: text) and once
    "about 7": the folder is one landing table, the amount is numbers, "n/a" is read as
    null (``missing``), and the row with "about 7" is counted as the one it would
    quarantine."""
    frame = _activity()
    frame["fee"] = frame["fee"].astype(object)
    frame.loc[[5, 50, 150], "fee"] = "n/a"
    frame.loc[77, "fee"] = "about 7"
    data = tmp_path / "export"
    _write(frame.iloc[:240], data / "activity" / "2022.jsonl")
    _write(frame.iloc[240:], data / "activity" / "2023.jsonl")
    accounts = pd.DataFrame({"account_id": range(1, 40), "region": ["n", "s", "e"] * 13})
    _write(accounts, data / "accounts.parquet")
    out = tmp_path / "export_spec.py"
    args = [str(data), "--label", "churned", "--keys", "account_id", "-o", str(out)]
    code, printed, err = _init(capsys, *args)
    assert code == 0, err
    spec = resolve_spec(f"{out}:export")
    sources = {s.name: s for s in spec.sources}
    assert set(sources) == {"activity", "accounts"} and spec.base == "activity"
    assert sources["activity"].incremental
    assert Path(sources["activity"].path) == (data / "activity").resolve()
    assert not sources["accounts"].incremental
    fee = spec.contracts["activity"].columns["fee"]
    assert (fee.dtype, fee.missing, fee.nullable) == ("float", ["n/a"], True)
    assert "fee" in spec.features.numeric
    assert "1 would be quarantined {'fee: not a float': 1}" in printed
    assert "'n/a': no value (3 rows); TODO: 1 values are not numbers ('about 7')" in _said(out)
    lake = Lake(tmp_path / "lake")
    contract = spec.contracts["activity"]
    clean = clean_snapshot(snapshot_source(sources["activity"], lake), contract, lake)
    assert clean.quarantine.rows == 1
    assert lake.read(clean.clean)["fee"].isna().sum() == 3


def test_a_banks_monthly_statements_are_read_without_their_titles_and_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A bank's export writes its title, the period and a blank line above the table and a
    Total row below it, in each monthly file: spec init failed in pandas' tokenizer
    ("Expected 1 fields in line 4, saw 6"). It now says how many lines to skip at each
    end, and the lake reads every file's rows as the table holds them: none quarantined,
    no total among the amounts or in their bounds, the booking date read as a time."""
    frame = _activity().drop(columns=["month", "comment"])
    frame["booked"] = pd.date_range("2024-01-01", periods=len(frame), freq="9h").strftime(
        "%d/%m/%Y %H:%M"
    )
    landing = tmp_path / "statements"
    landing.mkdir()
    for month, part in ((1, frame.iloc[:240]), (2, frame.iloc[240:])):
        table = part.to_csv(index=False, sep=";")
        total = ";" * list(part.columns).index("fee") + f"{part['fee'].sum():.2f}"
        total += ";" * (len(part.columns) - 1 - list(part.columns).index("fee"))
        (landing / f"2024-{month:02d}.csv").write_text(
            f"Example Bank statement\nPeriod: 2024-{month:02d}\n\n{table}Total{total}\n"
        )
    out = tmp_path / "statements_spec.py"
    code, printed, err = _init(capsys, str(landing), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    assert "the header follows a title: 3 lines above it; a row below the table" in _said(out)
    spec = resolve_spec(f"{out}:statements")
    (source,) = spec.sources
    assert source.incremental
    assert (source.delimiter, source.skip_rows, source.skip_footer) == (";", 3, 1)
    contract = spec.contracts["statements"]
    assert contract.columns["booked"].dtype == "datetime"
    assert spec.event_timestamp == "booked"
    assert contract.columns["fee"].le == pytest.approx(frame["fee"].max(), rel=1e-4)
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), contract, lake)
    assert clean.quarantine.rows == 0
    read = lake.read(clean.clean).sort_values("booked").reset_index(drop=True)
    assert len(read) == len(frame)
    np.testing.assert_allclose(read["fee"], frame["fee"])


def test_a_table_aligned_for_the_eye_is_read_column_by_column(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``DataFrame.to_string`` output (a report's fixed-width layout): spec init read it as
    one column, so ``--label`` named no column. It is ``delimiter=r"\\s+"`` now, typed
    and read whole by the lake."""
    frame = _activity().drop(columns=["comment"])
    data = tmp_path / "activity.txt"
    data.write_text(frame.to_string(index=False) + "\n")
    out = tmp_path / "activity_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:activity")
    (source,) = spec.sources
    assert source.delimiter == r"\s+"
    assert spec.contracts["activity"].columns["fee"].dtype == "float"
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), spec.contracts["activity"], lake)
    assert clean.quarantine.rows == 0 and clean.clean.rows == len(frame)


def test_a_question_mark_for_no_value_is_null_not_text(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """UCI's auto-mpg.data: aligned columns, no header, a car's name quoted after a tab,
    and '?' for six unknown horsepowers. The column was typed as text (a category of 90
    numbers) or its rows quarantined; it is a number now, '?' its ``missing`` text, read as
    null by the lake."""
    rng = np.random.default_rng(13)
    rows = 400
    hp = rng.integers(46, 230, rows).astype(float).astype(str).astype(object)
    hp[[30, 120, 200, 250, 310, 380]] = "?"
    lines = [
        f"{rng.uniform(9, 46):.1f}   {rng.choice([4, 6, 8])}   {rng.uniform(68, 455):.1f}"
        f"      {h:>6}      {rng.integers(1600, 5100)}.   {rng.integers(70, 83)}  1\t"
        f'"car {i}"'
        for i, h in enumerate(hp)
    ]
    data = tmp_path / "auto-mpg.data"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "auto_spec.py"
    args = [str(data), "--label", "column_1", "--threshold", "25", "-o", str(out)]
    code, printed, err = _init(capsys, *args)
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:auto_mpg")
    (source,) = spec.sources
    assert source.delimiter == r"\s+" and not source.header
    assert len(source.column_names or []) == 8
    hp_rule = spec.contracts["auto_mpg"].columns["column_4"]
    assert (hp_rule.dtype, hp_rule.missing, hp_rule.nullable) == ("float", ["?"], True)
    assert "column_4" in spec.features.numeric
    assert "'?': no value (6 rows)" in _said(out)
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), spec.contracts["auto_mpg"], lake)
    assert clean.quarantine.rows == 0
    assert lake.read(clean.clean)["column_4"].isna().sum() == 6


def test_two_files_joined_end_to_end_are_told_by_their_second_header(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``cat 2022.csv 2023.csv > all.csv`` puts the second file's header among the rows:
    spec init counted it as three rows to quarantine (one per column's reason) and said
    only that values are not numbers. It is one row, and the TODO says what it is."""
    frame = _activity().drop(columns=["comment", "month", "plan"])
    first, second = tmp_path / "2022.csv", tmp_path / "2023.csv"
    _write(frame.iloc[:240], first)
    _write(frame.iloc[240:], second)
    data = tmp_path / "all.csv"
    data.write_text(first.read_text() + second.read_text())
    out = tmp_path / "all_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "1 would be quarantined {'account_id: not an int': 1, 'fee: not a float': 1" in printed
    assert "TODO: 1 lines repeat the header (files joined end to end?)" in _said(out)
    assert "values are not numbers" not in _said(out)


def test_a_dash_for_a_date_or_an_amount_not_yet_known_is_null(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A bank's export writes '-' for a value date not yet known and for an amount not yet
    booked: the date column was text (a category of dates) and the amount's rows
    quarantined. Both are typed now, '-' their ``missing`` text, read as null."""
    rng = np.random.default_rng(6)
    rows = 600
    booked = pd.date_range("2024-01-01", periods=rows, freq="11h")
    pending = rng.uniform(size=rows) < 0.1
    frame = pd.DataFrame(
        {
            "Booked": booked.strftime("%d.%m.%Y %H:%M"),
            "Value date": np.where(
                pending, "-", (booked + pd.Timedelta(days=2)).strftime("%d.%m.%Y")
            ),
            "Amount": [f"{x:,.2f}" for x in rng.uniform(-500, 3000, rows)],
            "Account": rng.integers(1, 40, rows),
            "Flag": rng.integers(0, 2, rows),
        }
    )
    frame.loc[pending, "Amount"] = "-"
    data = tmp_path / "stmt.csv"
    frame.to_csv(data, index=False, sep=";")
    out = tmp_path / "stmt_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "Flag", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    rules = resolve_spec(f"{out}:stmt").contracts["stmt"].columns
    value, amount = rules["Value date"], rules["Amount"]
    assert (value.dtype, value.format, value.missing) == ("datetime", "%d.%m.%Y", ["-"])
    assert (amount.dtype, amount.strip, amount.missing) == ("float", [","], ["-"])
    cleaned = clean_table(pd.read_csv(data, sep=";"), resolve_spec(f"{out}:stmt").contracts["stmt"])
    assert cleaned.quarantined.empty
    assert cleaned.clean["Value date"].isna().sum() == pending.sum()
    assert cleaned.clean["Amount"].isna().sum() == pending.sum()


def test_a_spreadsheets_formula_errors_and_dashes_are_no_value(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A report saved as CSV keeps what Excel shows where a formula has no value
    (``#DIV/0!``, ``#VALUE!``) and the dashes of a typeset report (an en dash, an em dash):
    with three of them in a column, their rows were quarantined ("not a float"). They are
    the column's ``missing`` texts, read as null; the numbers are kept."""
    rng = np.random.default_rng(22)
    rows = 900
    margin = rng.uniform(-0.2, 0.6, rows).round(4)
    written = np.array([f"{m}" for m in margin], dtype=object)
    gaps = {"#DIV/0!": slice(0, None, 20), "#VALUE!": slice(7, None, 45), "–": slice(3, None, 30)}
    for text, rows_ in gaps.items():
        written[rows_] = text
    frame = pd.DataFrame({"store": rng.integers(1, 30, rows), "margin": written})
    frame["closed"] = rng.integers(0, 2, rows)
    data = _write(frame, tmp_path / "stores.csv")
    out = tmp_path / "stores_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "closed", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    contract = resolve_spec(f"{out}:stores").contracts["stores"]
    rule = contract.columns["margin"]
    assert rule.dtype == "float" and set(rule.missing) == set(gaps)
    cleaned = clean_table(pd.read_csv(data), contract)
    assert cleaned.quarantined.empty
    gone = pd.Series(written).isin(list(gaps))
    assert cleaned.clean["margin"].isna().tolist() == gone.tolist()
    np.testing.assert_allclose(cleaned.clean["margin"][~gone], margin[~gone])


def test_a_database_dumps_null_is_no_value_in_every_column(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """MySQL's ``SELECT ... INTO OUTFILE`` and PostgreSQL's ``COPY`` write ``\\N`` for a
    null. Among text it was a category the model learned (two thirds of the coupons),
    which a request sending ``null`` never meets; it is no value in every column now."""
    rng = np.random.default_rng(24)
    rows = 600
    coupon = np.where(rng.uniform(size=rows) < 0.6, "\\N", rng.choice(["A10", "B20"], rows))
    amount = np.where(np.arange(rows) % 9 == 0, "\\N", rng.gamma(2, 40, rows).round(2).astype(str))
    frame = pd.DataFrame({"coupon": coupon, "amount": amount, "refunded": rng.integers(0, 2, rows)})
    data = tmp_path / "orders.tsv"
    frame.to_csv(data, sep="\t", index=False)
    out = tmp_path / "orders_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "refunded", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:orders")
    rules = spec.contracts["orders"].columns
    assert rules["coupon"].missing == rules["amount"].missing == ["\\N"]
    assert rules["amount"].dtype == "float" and "coupon" in spec.features.categorical
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["orders"]).clean
    assert clean["coupon"].isna().tolist() == (coupon == "\\N").tolist()
    assert clean["amount"].isna().tolist() == (amount == "\\N").tolist()


@pytest.mark.parametrize("delimiter", [",", " ", ", "])
def test_a_file_without_a_header_line_is_read_from_its_first_row(
    tmp_path: Path, capsys: pytest.CaptureFixture, delimiter: str
) -> None:
    """The UCI repository's files name no columns (``adult.data``; SECOM's values one space
    apart): the first row was taken for the header, its values for names. The spec now reads
    every row as data under names of ours, marked TODO, and the lake reads it so."""
    frame = _activity().drop(columns=["month", "comment"])
    frame["plan"] = frame["plan"].str.title()
    frame["fee"] = frame["fee"] - 20.0  # a signed decimal in the first row
    data = tmp_path / "activity.data"
    text = frame.to_csv(sep=delimiter[0], header=False, index=False)
    data.write_text(text.replace(",", delimiter))  # ", ": adult.data's layout
    out = tmp_path / "activity_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "column_5", "-o", str(out))
    assert code == 0, err
    assert f"{len(frame)} rows read, 0 would be quarantined" in printed
    assert "TODO: the file names no columns: these names are ours, rename them" in _said(out)
    spec = resolve_spec(f"{out}:activity")
    (source,) = spec.sources
    names = [f"column_{i}" for i in range(1, 6)]
    assert (source.header, source.column_names) == (False, names)
    assert (source.delimiter, source.skip_initial_space) == (delimiter[0], delimiter == ", ")
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), spec.contracts["activity"], lake)
    assert clean.quarantine.rows == 0
    read = lake.read(clean.clean)
    assert len(read) == len(frame)  # the first row too
    np.testing.assert_allclose(read["column_3"], frame["fee"])  # the first row's -x.yz too
    assert spec.label.column == "column_5" and "column_2" in spec.features.categorical
    assert set(read["column_2"]) == {"Basic", "Pro", "Team"}  # as a request sends them


@pytest.mark.parametrize(
    ("day", "clock"),
    [("%d/%m/%Y", "%H:%M:%S"), ("%Y-%m-%d", "%I:%M %p")],
)
def test_a_date_and_a_time_of_day_in_two_columns_are_one_event_time(
    tmp_path: Path, capsys: pytest.CaptureFixture, day: str, clock: str
) -> None:
    """A bank writes "Booking Date" and "Booking Time" apart: the date alone was the event
    time (every payment of a day at midnight, no hour to learn) and the time of day a text
    left out. They are joined into one time now, in the lake and in a request that sends
    them as the file does: the event time, with its hour proposed as a feature."""
    frame = _activity().drop(columns=["month"])
    times = pd.date_range("2024-01-01 06:10", periods=len(frame), freq="157min")
    frame.insert(0, "Booking Date", times.strftime(day))
    frame.insert(1, "Booking Time", times.strftime(clock))
    data = _write(frame, tmp_path / "bookings.csv")
    out = tmp_path / "bookings_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:bookings")
    (source,) = spec.sources
    assert source.joined == {"Booking Datetime": ["Booking Date", "Booking Time"]}
    assert spec.event_timestamp == "Booking Datetime"
    assert spec.features.calendar[0] == "hour"
    assert "Booking Time" not in spec.features.categorical
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), spec.contracts["bookings"], lake)
    assert clean.quarantine.rows == 0
    read = lake.read(clean.clean)["Booking Datetime"].sort_values()
    assert read.tolist() == times.tz_localize("UTC").tolist()
    record = record_model(spec)
    assert "'Booking Datetime' may be sent as its parts" in (record.__doc__ or "")
    row = frame.iloc[7]
    parts = {"Booking Date": row["Booking Date"], "Booking Time": row["Booking Time"]}
    sent = record.model_validate({"account_id": 3, **parts})
    assert getattr(sent, "Booking Datetime") == times[7].tz_localize("UTC")
    whole = f"{row['Booking Date']} {row['Booking Time']}"
    assert sent == record.model_validate({"account_id": 3, "Booking Datetime": whole})
    with pytest.raises(ValidationError, match="Booking Datetime"):
        record.model_validate({"account_id": 3, **parts, "Booking Time": "25:61:00"})


def test_without_a_time_the_split_is_by_hash_and_a_text_label_names_its_positive_class(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frame = _activity().drop(columns=["month"])
    frame["churned"] = frame["churned"].map({0: "stayed", 1: "left"})
    data = _write(frame, tmp_path / "rows.csv")
    out = tmp_path / "rows_spec.py"
    assert _init(capsys, str(data), "--label", "churned", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:rows")
    assert spec.event_timestamp is None and isinstance(spec.split, HashSplit)
    assert spec.label.positive == ["left"]  # the rarer class, marked TODO
    assert "TODO: which class is positive?" in out.read_text()
    out2 = tmp_path / "rows2_spec.py"
    args = [str(data), "--label", "churned", "--positive", "stayed", "-o", str(out2)]
    assert _init(capsys, *args)[0] == 0
    assert resolve_spec(f"{out2}:rows").label.positive == ["stayed"]


@pytest.mark.parametrize(
    ("every", "share", "said"),
    [
        (20, 0.15, ""),  # 5%: 30 in each 15% window
        (80, 0.2, " (wider than 15%: 1.25% of the labeled rows are positive, 10 or more in each)"),
        (200, 0.25, " (the widest proposed: 0.50% of the labeled rows are positive, 5 and 5 in"),
    ],
)
def test_a_rare_labels_windows_are_widened_until_each_holds_ten_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, every: int, share: float, said: str
) -> None:
    """Card payments, one in ``every`` a fraud: 15% windows held 3 and 5 frauds in a walk,
    so early stopping and the gate compared models on a handful of rows. The windows
    proposed widen (up to 25%) until each holds ten frauds, and say why."""
    times = pd.date_range("2024-01-01", periods=4_000, freq="72min", tz="UTC")
    frame = pd.DataFrame(
        {
            "ts": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": np.linspace(1, 500, 4_000).round(2),
            "fraud": (np.arange(4_000) % every == every - 1).astype(int),
        }
    )
    data = _write(frame, tmp_path / "payments.csv")
    out = tmp_path / "payments_spec.py"
    assert _init(capsys, str(data), "--label", "fraud", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:payments")
    dated = spec.split.at(times.max().to_pydatetime())
    test = frame["fraud"][times >= dated.valid_end]
    valid = frame["fraud"][(times >= dated.train_end) & (times < dated.valid_end)]
    assert len(test) == pytest.approx(share * 4_000, abs=25)
    assert len(valid) == pytest.approx(share * 4_000, abs=25)
    assert min(test.sum(), valid.sum()) >= (10 if every < 200 else 4)
    assert f"the newest {share:.0%} tests, the {share:.0%} before validates{said}" in _said(out)
    # Without an event time, a hash deals the rows out: its fractions widen alike.
    data = _write(frame.drop(columns=["ts"]), tmp_path / "hashed" / "payments.csv")
    code, _, err = _init(capsys, str(data), "--label", "fraud", "-o", str(out), "--force")
    assert code == 0, err
    split = resolve_spec(f"{out}:payments").split
    assert isinstance(split, HashSplit)
    assert split.valid_fraction == split.test_fraction == share
    if said:
        assert said.replace(" 5 and 5 in", " 5 and 5 in these") in _said(out)


@pytest.mark.parametrize(
    ("digits", "fmt"), [("%Y%m%d", "%Y%m%d"), ("%Y%m", "%Y%m"), ("%Y%m%d%H", "%Y%m%d%H")]
)
def test_dates_written_as_numbers_are_the_event_time(
    tmp_path: Path, capsys: pytest.CaptureFixture, digits: str, fmt: str
) -> None:
    """A store's daily sales with the day written 20230105 (a mainframe's, SAS's or a
    database's export): spec init typed it int, a numeric feature, found no event time and
    split by hash. It is a time now, read by its digits' format in the lake and the service
    (the number or its text), the event time of a sliding split; an id whose numbers look
    like dates (``order_id`` 20230105) stays an id. Google Analytics exports an hour as
    ``dateHour`` (2023010513): ten digits, read as epoch seconds (2034) before."""
    rng = np.random.default_rng(12)
    rows = 900
    days = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 700, rows)), "D")
    frame = pd.DataFrame(
        {
            "order_id": days.strftime("%Y%m%d").astype(int) * 1000 + np.arange(rows) % 1000,
            "store_id": rng.integers(1, 30, rows),
            "day": days.strftime(digits).astype(int),
            "promo": rng.integers(0, 2, rows),
            "big": rng.integers(0, 2, rows),
        }
    )
    frame["order_id"] = frame["order_id"] // 1000  # 8 digits that read as dates too
    frame = frame.drop_duplicates("order_id")
    frame["day"] = frame["day"].astype(float)
    frame.loc[frame.index[::50], "day"] = np.nan  # a null makes pandas read floats
    nulls = len(frame.index[::50])
    data = _write(frame, tmp_path / "sales.csv")
    out = tmp_path / "sales_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "big", "-o", str(out))
    assert code == 0, err
    # An event without its time has no place in the split: quarantined, and said so.
    assert f"{nulls} would be quarantined {{'day: null': {nulls}}}" in printed
    assert f"TODO: {nulls} rows have no time: quarantined" in _said(out)
    spec = resolve_spec(f"{out}:sales")
    rules = spec.contracts["sales"].columns
    assert (rules["day"].dtype, rules["day"].format) == ("datetime", fmt)
    assert rules["order_id"].dtype == "int" and "order_id" not in spec.input_columns
    assert spec.event_timestamp == "day" and isinstance(spec.split, RecentSplit)
    assert f"dates written as numbers ({fmt})" in _said(out)
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(spec.sources[0], lake), spec.contracts["sales"], lake)
    assert clean.quarantine.rows == nulls and clean.clean.rows == len(frame) - nulls
    held = lake.read(clean.clean)
    first = pd.to_datetime(str(int(frame["day"].min())), format=fmt).tz_localize("UTC")
    assert held["day"].min() == first
    record = record_model(spec)
    sent = {"store_id": 3, "promo": 1}
    as_number = record.model_validate({**sent, "day": int(frame["day"].min())})
    as_text = record.model_validate({**sent, "day": str(int(frame["day"].min()))})
    assert as_number.day == as_text.day == first.to_pydatetime()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_codes_with_leading_zeros_are_categories_held_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, suffix: str
) -> None:
    """Zip codes (02134) and article numbers (000048) in a CSV were typed int: 02134 was
    2134 in the lake, a numeric feature, and a caller's "02134" was refused (or, typed as
    text by hand, an unseen category). They are codes now: read as written
    (``text_columns`` for a CSV; a JSON file keeps its text), categories, and the value a
    caller sends is the one the lake holds. A zero-padded time of day stays a number."""
    frame = _activity().drop(columns=["comment"])
    rng = np.random.default_rng(4)
    frame["zip"] = rng.choice(["02134", "00501", "10001", "94103"], len(frame))
    frame["sku"] = [f"{i:06d}" for i in rng.integers(0, 60, len(frame))]
    frame["opens"] = rng.choice(["0830", "0900", "1000"], len(frame))
    data = tmp_path / f"activity{suffix}"
    if suffix == ".csv":
        frame.to_csv(data, index=False)
    else:
        frame.to_json(data, orient="records", lines=True)
    out = tmp_path / "activity_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:activity")
    (source,) = spec.sources
    rules = spec.contracts["activity"].columns
    assert (rules["zip"].dtype, rules["sku"].dtype) == ("string", "string")
    assert {"zip", "sku"} <= set(spec.features.categorical)
    assert "codes: read as written, the leading zeros kept ('02134')" in _said(out)
    if suffix == ".csv":
        assert source.text_columns == ["zip", "sku"]
        assert rules["opens"].dtype == "int" and "opens" in spec.features.numeric
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), spec.contracts["activity"], lake)
    assert clean.quarantine.rows == 0
    held = lake.read(clean.clean)
    assert set(held["zip"]) == set(frame["zip"]) and set(held["sku"]) == set(frame["sku"])
    record = record_model(spec)
    sent = record.model_validate({"month": "Jan-2022", "account_id": 3, "zip": "02134"})
    assert sent.zip == "02134" and "02134" in set(held["zip"])
    with pytest.raises(ValidationError, match="zip"):
        record.model_validate({"month": "Jan-2022", "account_id": 3, "zip": 2134})


@pytest.mark.parametrize(("negative", "positive"), [(-1, 1), (1, 2), (0.0, 5.0)])
def test_a_label_of_two_numbers_is_split_between_them_not_at_the_median(
    tmp_path: Path, capsys: pytest.CaptureFixture, negative: float, positive: float
) -> None:
    """A process line's pass/fail written -1 and 1, and 92% of it -1: the median is -1, so
    "label > the median" happened to hold; the comment now says which value is positive."""
    frame = _activity()
    frame["churned"] = np.where(frame["churned"] == 1, positive, negative)
    data = _write(frame, tmp_path / "rows.csv")
    out = tmp_path / "rows_spec.py"
    assert _init(capsys, str(data), "--label", "churned", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:rows")
    assert spec.label.threshold == negative
    labels = (frame["churned"] > spec.label.threshold).astype(int)
    assert labels.tolist() == (frame["churned"] == positive).astype(int).tolist()
    share = (frame["churned"] == positive).mean()
    assert f"TODO: two values: {positive} is positive ({share:.0%} of rows)" in out.read_text()


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    ("stamp", "naive", "read_with"),
    [
        ("%Y-%m-%dT%H:%M:%S%z", False, None),
        ("%Y-%m-%dT%H:%M:%SZ", False, None),
        ("%Y-%m-%d %H:%M", True, None),
        # an export's notation: a time of day without an offset asks too; a date alone not
        ("%m/%d/%Y %H:%M", True, "%m/%d/%Y %H:%M"),
        ("%d.%m.%Y", False, "%d.%m.%Y"),
        # a 12-hour clock, as spreadsheets and US exports write it
        ("%m/%d/%Y %I:%M %p", True, "%m/%d/%Y %I:%M %p"),
        ("%Y-%m-%d %I:%M:%S %p", True, "%Y-%m-%d %I:%M:%S %p"),
    ],
)
def test_times_are_read_and_only_those_of_a_day_without_an_offset_ask_for_a_timezone(
    tmp_path: Path, capsys: pytest.CaptureFixture, stamp: str, naive: bool, read_with: str | None
) -> None:
    frame = _activity().drop(columns=["month"])
    berlin = pd.date_range("2024-01-01", periods=len(frame), freq="6h", tz="Europe/Berlin")
    times = berlin if "%z" in stamp else berlin.tz_convert("UTC")
    frame["taken_at"] = times.strftime(stamp)
    data = _write(frame, tmp_path / "readings.csv")
    out = tmp_path / "readings_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:readings")
    rule = spec.contracts["readings"].columns["taken_at"]
    assert (rule.dtype, rule.format) == ("datetime", read_with)
    assert spec.event_timestamp == "taken_at"
    assert ("TODO: times without an offset are UTC" in out.read_text()) is naive


def test_rows_numbered_in_order_are_the_key_and_a_12_hour_clock_reads_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An export whose id column no name marks (``Parcel``) and whose times have AM/PM: the
    numbers rising down the file are the key, not a feature, and every time is read."""
    frame = _activity().drop(columns=["month", "account_id"])
    frame.insert(0, "Parcel", np.arange(500001, 500001 + len(frame)))
    times = pd.date_range("2024-01-01 05:30", periods=len(frame), freq="7h", tz="UTC")
    frame["Created At"] = times.strftime("%m/%d/%Y %I:%M %p")
    data = _write(frame, tmp_path / "parcels.csv")
    out = tmp_path / "parcels_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:parcels")
    contract = spec.contracts["parcels"]
    assert spec.entity_keys == ["Parcel"] and spec.event_timestamp == "Created At"
    assert "Parcel" not in spec.input_columns
    assert (contract.columns["Parcel"].ge, contract.columns["Parcel"].le) == (None, None)
    assert contract.columns["Created At"].format == "%m/%d/%Y %I:%M %p"
    cleaned = clean_table(pd.read_csv(data), contract)
    assert cleaned.reasons == {}
    assert cleaned.clean["Created At"].tolist() == times.tolist()  # 05:30 PM is 17:30
    # Unique numbers that do not rise down the file measure something: still a feature.
    shuffled = frame.sample(frac=1, random_state=0)
    data = _write(shuffled, tmp_path / "shuffled" / "parcels.csv")
    out = tmp_path / "shuffled_spec.py"
    assert _init(capsys, str(data), "--label", "churned", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:parcels")
    assert spec.entity_keys != ["Parcel"] and "Parcel" in spec.features.numeric


@pytest.mark.parametrize("start", [0, 1])
def test_the_row_numbers_pandas_writes_are_neither_the_key_nor_a_feature(
    tmp_path: Path, capsys: pytest.CaptureFixture, start: int
) -> None:
    """``DataFrame.to_csv`` writes its index in a column with an empty header unless told
    not to: 0, 1, 2, ... (restarting in each file of a landing folder). Taken as the key, every
    request had to send a row number; it is the export's, so it is left out, with the reason,
    and the key named in the data is found."""
    frame = _activity()
    frame.index += start
    landing = tmp_path / "landing"
    for half, rows in enumerate((frame.iloc[:240], frame.iloc[240:].reset_index(drop=True))):
        _write(
            rows.rename_axis(None).reset_index().rename(columns={"index": ""}),
            landing / f"{half}.csv",
        )
    out = tmp_path / "activity_spec.py"
    code, printed, err = _init(capsys, str(landing), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:landing")
    assert spec.entity_keys == ["account_id"]
    assert "Unnamed: 0" in spec.contracts["landing"].columns  # read, so a row passes whole
    assert "Unnamed: 0" not in spec.input_columns
    assert "Unnamed: 0: the file's row numbers (its header is empty), not data" in _said(out)
    # One file and no key named in the data: still not the key (no entity, marked TODO).
    alone = _write(frame.drop(columns=["account_id"]), tmp_path / "alone" / "rows.csv")
    out = tmp_path / "rows_spec.py"
    assert _init(capsys, str(alone), "--label", "churned", "-o", str(out))[0] == 0
    spec = resolve_spec(f"{out}:rows")
    assert spec.entity_keys == [] and "Unnamed: 0" not in spec.input_columns


def test_a_german_export_names_its_customer_and_order_numbers_in_its_own_words(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``Bestellnr`` (the order number, one per row, rising) and ``Kundennummer`` (the
    customer, repeated) were named like no key: the rising order numbers were the entity,
    with a range that quarantined the next order. A yes/no column whose name ends in "id"
    (``Paid``) is no one. Names keep their accents in the spec file."""
    frame = _activity().drop(columns=["account_id"])
    frame.insert(0, "Bestellnr", np.arange(100000, 100000 + len(frame)))
    frame.insert(1, "Paid", np.where(np.arange(len(frame)) % 3 == 0, "yes", "no"))
    frame.insert(2, "Kundennummer", [f"K{i % 60:04d}" for i in range(len(frame))])
    frame = frame.rename(columns={"churned": "Gekündigt"})
    data = _write(frame, tmp_path / "abos.csv")
    out = tmp_path / "abos_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "Gekündigt", "-o", str(out))
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    assert '"Gekündigt": ColumnRule(' in text and "\\u00fc" not in text
    spec = resolve_spec(f"{out}:abos")
    assert spec.entity_keys == ["Kundennummer"] and spec.label.column == "Gekündigt"
    assert "Bestellnr" not in spec.input_columns and "Paid" in spec.features.categorical
    contract = spec.contracts["abos"]
    assert (contract.columns["Bestellnr"].ge, contract.columns["Bestellnr"].le) == (None, None)
    later = frame.tail(3).assign(Bestellnr=[200000, 200001, 200002])  # the next orders
    assert clean_table(later.reset_index(drop=True), contract).reasons == {}


def test_numbers_a_spreadsheet_formatted_are_numbers_read_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An export of formatted cells: a discount ``26.6%``, a price ``$1,234.50``, a fee
    ``1.234,56 €`` and a count ``1 200`` were text, a category of hundreds of values or
    left out. Each is a number with the rule that reads it, the lake holds the numbers, and
    text that only mentions a percent stays text."""
    frame = _activity()
    rng = np.random.default_rng(8)
    n = len(frame)
    discount = rng.uniform(0, 40, n).round(1)
    price = rng.uniform(5, 2500, n).round(2)
    fee = rng.uniform(100, 9000, n).round(2)
    seats = rng.integers(900, 5000, n)
    frame["discount"] = [f"{d}%" for d in discount]
    frame["price"] = [f"${p:,.2f}" for p in price]
    frame.loc[5, "price"] = "ask us"  # a stray text: named, and its row quarantined
    frame["fee"] = [
        f"{f:,.2f} €".replace(",", "_").replace(".", ",").replace("_", ".") for f in fee
    ]
    frame["seats"] = [f"{s:,}".replace(",", " ") for s in seats]
    frame["remark"] = [f"up to {i % 7}% off, ask" for i in range(n)]
    data = _write(frame, tmp_path / "offers.csv")
    out = tmp_path / "offers_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    assert "# written as '" in text and "1 values are not numbers ('ask us')" in _said(out)
    spec = resolve_spec(f"{out}:offers")
    columns = spec.contracts["offers"].columns
    assert (columns["discount"].dtype, columns["discount"].strip) == ("float", ["%"])
    assert (columns["price"].strip, columns["price"].decimal) == (["$", ","], ".")
    assert (columns["fee"].strip, columns["fee"].decimal) == (["€", "."], ",")
    assert (columns["seats"].dtype, columns["seats"].strip) == ("int", [" "])
    assert columns["remark"].dtype == "string"
    assert {"discount", "price", "fee", "seats"} <= set(spec.features.numeric)
    cleaned = clean_table(pd.read_csv(data), spec.contracts["offers"])
    assert cleaned.reasons == {"price: not a float": 1}
    kept = cleaned.clean
    rows = kept["comment"].str.split().str[-1].astype(int).to_numpy()  # "free text 17"
    assert 5 not in rows and len(rows) == n - 1
    np.testing.assert_allclose(kept["discount"], discount[rows])
    np.testing.assert_allclose(kept["price"], price[rows])
    np.testing.assert_allclose(kept["fee"], fee[rows])
    np.testing.assert_array_equal(kept["seats"], seats[rows])


def test_amounts_grouped_in_lakhs_are_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An Indian loan book writes ``₹2,35,951.08``: lakhs and crores, two digits a group
    above the thousands. The amount was text, left out; it is a number now, and the lake
    holds it."""
    frame = _activity()
    amount = np.random.default_rng(21).uniform(500, 5e7, len(frame)).round(2)

    def lakhs(v: float) -> str:
        whole, cents = f"{v:.2f}".split(".")
        head, tail = whole[:-3], whole[-3:]
        pairs = [head[max(0, i - 2) : i] for i in range(len(head), 0, -2)][::-1]
        return "₹" + ",".join([*pairs, tail]) + "." + cents

    frame["amount"] = [lakhs(v) for v in amount]
    assert "1,23,45,678.00" in lakhs(12345678.0)
    data = _write(frame, tmp_path / "loans.csv")
    out = tmp_path / "loans_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:loans")
    rule = spec.contracts["loans"].columns["amount"]
    assert (rule.dtype, rule.strip) == ("float", ["₹", ","]) and "amount" in spec.features.numeric
    cleaned = clean_table(pd.read_csv(data), spec.contracts["loans"])
    assert not cleaned.reasons
    np.testing.assert_allclose(cleaned.clean["amount"], amount)


def test_a_ledgers_negatives_and_thousands_are_numbers_read_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A ledger export writes amounts without a currency: ``1,373.60`` and ``(282.10)`` as
    accounts do, ``1'373.60`` as Swiss software does, ``282,10-`` as SAP does. Each was
    text and left out ("distinct texts"); each is a number now, read by the rule the lake
    reads it with, negatives included."""
    frame = _activity()
    n = len(frame)
    amount = np.random.default_rng(13).normal(200, 1500, n).round(2)

    def accounts(v: float) -> str:
        return f"({abs(v):,.2f})" if v < 0 else f"{v:,.2f}"

    def sap(v: float) -> str:
        german = f"{abs(v):,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
        return f"{german}-" if v < 0 else german

    frame["net"] = [accounts(v) for v in amount]
    frame["chf"] = [f"{v:,.2f}".replace(",", "'") for v in amount]
    frame["betrag"] = [sap(v) for v in amount]
    frame["plain"] = [f"{v:,.2f}" for v in amount]
    frame["note"] = [f"see ({i})" if i % 3 else f"row {i}-" for i in range(n)]  # text
    data = _write(frame, tmp_path / "ledger.csv")
    out = tmp_path / "ledger_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:ledger")
    columns = spec.contracts["ledger"].columns
    assert (columns["net"].strip, columns["net"].negative) == ([","], "(5)")
    assert (columns["chf"].strip, columns["chf"].negative) == (["'"], "-5")
    assert (columns["betrag"].strip, columns["betrag"].decimal) == (["."], ",")
    assert columns["betrag"].negative == "5-"
    assert (columns["plain"].dtype, columns["plain"].strip) == ("float", [","])
    assert columns["note"].dtype == "string"
    assert {"net", "chf", "betrag", "plain"} <= set(spec.features.numeric)
    cleaned = clean_table(pd.read_csv(data), spec.contracts["ledger"])
    assert cleaned.reasons == {}
    kept = cleaned.clean
    for column in ("net", "chf", "betrag", "plain"):
        np.testing.assert_allclose(kept[column], amount, err_msg=column)
    assert (amount < 0).sum() > n // 10


@pytest.mark.parametrize("packed", ["", ".gz", ".zip"])
def test_a_spreadsheet_export_with_semicolons_and_decimal_commas_is_read_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, packed: str
) -> None:
    """Where ',' marks decimals a spreadsheet writes ';' between fields, 12.345,67 for an
    amount and 05.01.2024 14:30 for a time: the spec says how the file is written, and the
    lake reads every number and time of it, none quarantined; gzipped or zipped alike."""
    frame = _activity().drop(columns=["month"])
    frame["amount"] = np.random.default_rng(5).uniform(10, 25_000, len(frame)).round(2)
    times = pd.date_range("2024-01-05 14:30", periods=len(frame), freq="5h", tz="UTC")
    frame["booked"] = times.strftime("%d.%m.%Y %H:%M")

    def cell(value: object) -> str:  # 12.345,67 as the export writes it; nan as empty
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:,}".translate(str.maketrans(",.", ".,"))
        return str(value)

    lines = [";".join(frame.columns)]
    lines += [";".join(map(cell, row)) for row in frame.itertuples(index=False)]
    text = ("\n".join(lines) + "\n").encode()
    data = tmp_path / f"export.csv{packed}"
    if packed == ".gz":
        data.write_bytes(gzip.compress(text))
    elif packed == ".zip":
        with zipfile.ZipFile(data, "w") as archive:
            archive.writestr("export.csv", text)
    else:
        data.write_bytes(text)
    out = tmp_path / "export_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:export")
    source, contract = spec.sources[0], spec.contracts["export"]
    assert (source.delimiter, source.decimal) == (";", ",")
    assert contract.columns["booked"].format == "%d.%m.%Y %H:%M"
    assert spec.event_timestamp == "booked"
    for column in ("fee", "amount"):
        rule = contract.columns[column]
        assert rule.dtype == "float"
        low, high = frame[column].min(), frame[column].max()  # bounds hold them, rounded out
        assert rule.ge <= low and rule.ge == pytest.approx(low, rel=1e-4)
        assert rule.le >= high and rule.le == pytest.approx(high, rel=1e-4)
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), contract, lake)
    assert clean.quarantine.rows == 0
    read = lake.read(clean.clean).sort_values("booked").reset_index(drop=True)
    assert read["amount"].max() > 1000  # grouped thousands (12.345,67) read whole
    np.testing.assert_allclose(read["amount"], frame["amount"])
    np.testing.assert_allclose(read["fee"], frame["fee"])
    assert read["booked"].tolist() == times.tolist()


def test_a_swedish_export_reads_its_typeset_minus_and_spaced_thousands_as_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Excel in Sweden writes ``−984,09`` and ``19 015,91``: a minus sign (U+2212) and
    thousands grouped by a no-break space. An amount was left out as "distinct texts", a
    temperature was a category, and the no-break space was written into the spec as a
    space no one could see. Every column is numbers now, read from every row."""
    rng = np.random.default_rng(44)
    rows = 400
    amount = np.where(
        rng.random(rows) < 0.1, rng.normal(25_000, 3_000, rows), -rng.lognormal(6, 1.2, rows)
    ).round(2)
    balance = (20_000 + np.cumsum(amount)).round(2)
    temperature = rng.normal(5, 8, rows).round(1)

    def swedish(value: float, decimals: int = 2) -> str:
        text = f"{abs(value):,.{decimals}f}".replace(",", "\u00a0").replace(".", ",")
        return ("\u2212" if value < 0 else "") + text

    frame = pd.DataFrame(
        {
            "Bokföringsdag": pd.date_range("2024-01-01", periods=rows, freq="9h").strftime(
                "%Y-%m-%d"
            ),
            "Belopp": [swedish(a) for a in amount],
            "Saldo": [swedish(b) for b in balance],
            "Temperatur": [swedish(t, 1) for t in temperature],
            "Försenad": rng.choice(["Ja", "Nej"], rows, p=[0.2, 0.8]),
        }
    )
    data = tmp_path / "konto.csv"
    frame.to_csv(data, sep=";", index=False)
    out = tmp_path / "konto_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "Försenad", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:konto")
    assert spec.sources[0].decimal == ","
    rules = spec.contracts["konto"].columns
    assert {c: rules[c].dtype for c in ("Belopp", "Saldo", "Temperatur")} == dict.fromkeys(
        ("Belopp", "Saldo", "Temperatur"), "float"
    )
    assert {"Belopp", "Saldo", "Temperatur"} <= set(spec.features.numeric)
    assert spec.label.positive == ["Ja"] and "TODO: which class" not in out.read_text()
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["konto"])
    assert len(clean.quarantined) == 0
    np.testing.assert_allclose(clean.clean["Belopp"], amount)
    np.testing.assert_allclose(clean.clean["Saldo"], balance)
    np.testing.assert_allclose(clean.clean["Temperatur"], temperature)


def test_a_no_break_space_the_spec_strips_is_written_so_it_can_be_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A price list grouping thousands with a no-break space (``12\u00a0345.50``): the
    spec strips it, written as its escape, not as a space that reads as an ordinary one."""
    rng = np.random.default_rng(45)
    prices = rng.uniform(1_000, 90_000, 300).round(2)
    frame = pd.DataFrame(
        {
            "price": [f"{p:,.2f}".replace(",", "\u00a0") for p in prices],
            "sold": rng.integers(0, 2, 300),
        }
    )
    data = _write(frame, tmp_path / "prices.csv")
    out = tmp_path / "prices_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "sold", "-o", str(out))
    assert code == 0, err
    assert 'strip=["\\u00a0"]' in out.read_text() and "\u00a0" not in out.read_text()
    spec = resolve_spec(f"{out}:prices")
    assert spec.contracts["prices"].columns["price"].strip == ["\u00a0"]
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["prices"]).clean
    np.testing.assert_allclose(clean["price"], prices)


def test_an_app_stores_sizes_installs_and_stand_ins_are_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An app store's listing writes a size as ``14.2M`` or ``201k`` (and "Varies with
    device"), installs as ``10,000+`` and a user score as ``7.5`` or "tbd": each was a
    category; a price of ``0``, or ``$4.99`` for the few paid apps, quarantined every paid
    app. Sizes are numbers with their ``suffixes``, installs with the ``+`` stripped,
    prices with the ``$``, and a text that stands in among numbers is no value, with a
    TODO; a plan's ``5M`` and ``10M``, one suffix and no decimals, stay a category."""
    rng = np.random.default_rng(45)
    rows = 500
    size = rng.lognormal(2.8, 1.2, rows).round(1)
    varies = rng.random(rows) < 0.15
    installs = 10 ** rng.integers(2, 9, rows)
    score = rng.uniform(0, 10, rows).round(1)
    tbd = rng.random(rows) < 0.2
    price = np.where(rng.random(rows) < 0.08, rng.choice([0.99, 4.99, 14.99], rows), 0.0)
    frame = pd.DataFrame(
        {
            "Size": np.where(
                varies,
                "Varies with device",
                [f"{int(s * 1000)}k" if s < 1 else f"{s}M" for s in size],
            ),
            "Installs": [f"{i:,}+" for i in installs],
            "User_Score": np.where(tbd, "tbd", score.astype(str)),
            "Price": [f"${p}" if p else "0" for p in price],
            "Plan": rng.choice(["5M", "10M", "20M"], rows),
            "Top Rated": rng.choice(["Yes", "No"], rows),
        }
    )
    data = _write(frame, tmp_path / "apps.csv")
    out = tmp_path / "apps_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "Top Rated", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:apps")
    rules = spec.contracts["apps"].columns
    assert rules["Size"].suffixes == {"M": 1e6, "k": 1e3}
    assert rules["Size"].missing == ["Varies with device"]
    assert (rules["Installs"].dtype, rules["Installs"].strip) == ("int", ["+", ","])
    assert (rules["User_Score"].dtype, rules["User_Score"].missing) == ("float", ["tbd"])
    assert (rules["Price"].dtype, rules["Price"].strip) == ("float", ["$"])
    assert rules["Plan"].dtype == "string"
    assert {"Size", "Installs", "User_Score"} <= set(spec.features.numeric)
    assert "TODO: 'Varies with device': no value" in _said(out)
    assert "TODO: 'tbd': no value" in _said(out)
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["apps"])
    assert len(clean.quarantined) == 0
    sizes = np.where(size < 1, (size * 1000).astype(int) * 1e3, size * 1e6)
    np.testing.assert_allclose(clean.clean["Size"].to_numpy(float), np.where(varies, np.nan, sizes))
    assert clean.clean["Installs"].tolist() == installs.tolist()
    assert clean.clean["Price"].tolist() == price.tolist()
    np.testing.assert_allclose(
        clean.clean["User_Score"].to_numpy(float), np.where(tbd, np.nan, score)
    )


def test_a_blank_text_among_numbers_and_times_is_no_value(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A telecom's churn export writes ``" "`` for the total charges of a customer in their
    first month, and a cancellation date for those who left: each new customer's row was
    quarantined ("not numbers (' ')"), so the service could score no new customer. Blank
    is no value: the columns are nullable and every row passes."""
    rng = np.random.default_rng(46)
    rows = 500
    tenure = rng.integers(0, 72, rows)
    monthly = rng.uniform(20, 110, rows).round(2)
    left = rng.random(rows) < 0.3
    frame = pd.DataFrame(
        {
            "customerID": [f"{i:04d}-ABCDE" for i in range(rows)],
            "signup": pd.date_range("2023-01-01", periods=rows, freq="13h").strftime("%Y-%m-%d"),
            "tenure": tenure,
            "TotalCharges": [
                " " if t == 0 else f"{m * t:.2f}" for t, m in zip(tenure, monthly, strict=True)
            ],
            "cancelled": np.where(left, pd.Timestamp("2024-01-01").strftime("%Y-%m-%d"), " "),
            "Churn": np.where(left, "Yes", "No"),
        }
    )
    data = _write(frame, tmp_path / "telco.csv")
    out = tmp_path / "telco_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "Churn", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:telco")
    rules = spec.contracts["telco"].columns
    assert (rules["TotalCharges"].dtype, rules["TotalCharges"].nullable) == ("float", True)
    assert rules["TotalCharges"].missing is None  # blank needs no naming
    assert spec.event_timestamp == "signup"
    assert (rules["cancelled"].dtype, rules["cancelled"].nullable) == ("datetime", True)
    assert f"blank: no value ({int((tenure == 0).sum())} rows)" in _said(out)
    clean = clean_table(read_source(spec.sources[0]), spec.contracts["telco"])
    assert len(clean.quarantined) == 0
    assert clean.clean["TotalCharges"].isna().tolist() == (tenure == 0).tolist()
    assert clean.clean["cancelled"].isna().tolist() == (~left).tolist()


def test_the_lock_and_backup_files_beside_the_data_are_no_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Excel leaves ``~$orders.xlsx`` beside a workbook it has open, a Mac ``._orders.csv``
    on a shared drive, an editor ``orders.csv~``: spec init failed on the lock file ("not
    valid xlsx"). They are skipped, as the ingest skips them."""
    data = tmp_path / "data"
    _write(_activity(), data / "orders.csv")
    (data / "~$orders.xlsx").write_bytes(b"\x05lock")
    (data / "._orders.csv").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (data / "orders.csv~").write_text("a,b\n1,2\n")
    out = tmp_path / "spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:data")
    assert [Path(s.path).name for s in spec.sources] == ["orders.csv"]
    assert "~$" not in printed + out.read_text()


def test_a_spreadsheets_unicode_text_export_is_a_table_and_a_readme_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Excel's "Unicode Text" export is a ``.txt`` file, tab-separated, in UTF-16: spec init
    said the folder "holds no CSV" (and read as UTF-8 or cp1252 it would be NULs). It is
    read as the table it is, accents and all; the README beside it is left out."""
    frame = _activity().drop(columns=["month"])
    frame["street"] = np.resize(["Hauptstraße", "Königsallee", "Čapkova"], len(frame))
    data = tmp_path / "data"
    data.mkdir()
    frame.to_csv(data / "export.txt", sep="\t", index=False, encoding="utf-16")
    (data / "README.txt").write_text("Exported from the CRM on 5 January.\nAsk Ann.\n")
    out = tmp_path / "spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:data")
    (source,) = spec.sources
    assert (Path(source.path).name, source.delimiter, source.encoding) == (
        "export.txt",
        "\t",
        "utf-16",
    )
    said = _said(out)
    assert "UTF-16, as a spreadsheet's Unicode Text" in said and "check accents" not in said
    read = read_source(source)
    assert read["street"].tolist() == frame["street"].tolist()
    assert len(clean_table(read, spec.contracts[source.name]).quarantined) == 0


def test_a_typed_parquet_file_keeps_its_values_and_gets_short_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Parquet carries its own types: float32 amounts, whole numbers with nulls (Int64), a
    pandas category, times with a zone, a boolean label. Every row passes the spec written
    from them, and a float32 bound reads as a short number (70.0275, not the float32's
    70.02755737304688) that still holds the value."""
    rng = np.random.default_rng(8)
    rows = 400
    frame = pd.DataFrame(
        {
            "policy_id": [f"P{i:03d}" for i in rng.integers(1, 60, rows)],
            "claim_ts": pd.date_range("2024-01-01", periods=rows, freq="7h", tz="Europe/Paris"),
            "region": pd.Categorical(rng.choice(["Nord", "Sud", "Est"], rows)),
            "vehicle_age": pd.array(rng.integers(0, 25, rows), dtype="Int64"),
            "premium": rng.uniform(70, 4000, rows).astype("float32"),
            "fraud": rng.uniform(size=rows) < 0.2,
        }
    )
    frame.loc[::17, "vehicle_age"] = pd.NA
    frame.loc[0, "premium"] = np.float32(70.02756)  # no short float64 text of its own
    data = _write(frame, tmp_path / "claims.parquet")
    out = tmp_path / "claims_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "fraud", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:claims")
    contract = spec.contracts["claims"]
    premium = contract.columns["premium"]
    assert premium.ge == 70.0275
    high = float(frame["premium"].max())
    assert high <= premium.le == float(f"{premium.le:.6g}") and premium.le - high < 0.01
    assert contract.columns["vehicle_age"].dtype == "int"
    assert contract.columns["vehicle_age"].nullable
    assert spec.event_timestamp == "claim_ts" and spec.entity_keys == ["policy_id"]
    assert "region" in spec.features.categorical
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(spec.sources[0], lake), contract, lake)
    assert clean.quarantine.rows == 0
    read = lake.read(clean.clean).sort_values("claim_ts").reset_index(drop=True)
    np.testing.assert_allclose(read["premium"], frame["premium"].astype(float))
    assert read["claim_ts"].tolist() == frame["claim_ts"].dt.tz_convert("UTC").tolist()
    assert read["vehicle_age"].isna().sum() == frame["vehicle_age"].isna().sum()
    labels = spec.label.positive
    assert sorted(read["fraud"].unique()) == ["False", "True"] and labels == ["True"]


def test_a_json_export_with_nested_objects_is_typed_and_served_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An API's export: a JSON array (not JSON lines) whose records nest the customer's
    fields and list their tags. Each nested field is a column (``customer.id``), typed and
    checked like any other; the entity is found among them, and a request may nest them as
    the export does: the service reads them as the lake reads the file."""
    rng = np.random.default_rng(4)
    records = [
        {
            "ticket": f"T-{i:05d}",
            "opened_at": f"2025-03-{1 + i // 20:02d}T{i % 20:02d}:15:00Z",
            "customer": {"id": int(rng.integers(1, 40)), "tier": str(rng.choice(["free", "pro"]))},
            "words": int(rng.integers(5, 400)),
            "tags": list(rng.choice(["api", "bug", "ui"], int(rng.integers(0, 3)), replace=False)),
            "escalated": bool(rng.uniform() < 0.3),
        }
        for i in range(400)
    ]
    data = tmp_path / "tickets.json"
    data.write_text(json.dumps({"results": records, "next": None}, indent=1))
    out = tmp_path / "tickets_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "escalated", "-o", str(out))
    assert code == 0, err
    assert "0 would be quarantined" in printed
    spec = resolve_spec(f"{out}:tickets")
    rules = spec.contracts["tickets"].columns
    assert (rules["customer.id"].dtype, rules["customer.tier"].dtype) == ("int", "string")
    assert spec.entity_keys == ["customer.id"] and spec.event_timestamp == "opened_at"
    assert {"customer.tier", "tags"} <= set(spec.features.categorical)
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(spec.sources[0], lake), spec.contracts["tickets"], lake)
    assert clean.quarantine.rows == 0
    held = lake.read(clean.clean).sort_values("ticket").iloc[0]
    assert held["customer.id"] == records[0]["customer"]["id"]

    record = record_model(spec)
    assert "may be sent nested" in (record.__doc__ or "")
    as_written = {k: records[0][k] for k in ("opened_at", "customer", "words")}
    flat = {
        "opened_at": held["opened_at"].isoformat(),
        "customer.id": int(held["customer.id"]),
        "customer.tier": held["customer.tier"],
        "words": int(held["words"]),
    }
    assert record.model_validate(as_written) == record.model_validate(flat)
    # A list is sent as the text the lake holds for it, as the schema says: a list itself
    # stays a 422 (a type the field does not take), as an object sent for a field does.
    assert held["tags"] == json.dumps(records[0]["tags"])
    assert record.model_validate({**flat, "tags": held["tags"]}).tags == held["tags"]
    for refused, message in [
        ({**flat, "tags": records[0]["tags"]}, r"tags\n  Input should be a valid string"),
        ({**flat, "words": {"n": 3}}, r"words\n  Input should be a valid number"),
        (as_written | {"customer": {"id": 3, "seats": 2}}, r"`customer\.seats`\n  Extra inputs"),
        (as_written | {"customer.id": 3}, r"customer\n  Extra inputs"),  # sent both ways
    ]:
        with pytest.raises(ValidationError, match=message):
            record.model_validate(refused)


def test_json_epoch_times_are_read_alike_by_the_lake_and_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An app's export writes ``created_at`` in epoch milliseconds. spec init says so
    (``unit="ms"``), the lake reads those instants, and a request sending the time as the
    data writes it is the same record as one sending ISO 8601: before, pandas read the
    column as times by its name, the spec said nothing of a unit, and the service refused
    the data's own notation (``time must be ISO 8601 text``)."""
    start = 1_735_689_600_000  # 2025-01-01T00:00:00Z
    rng = np.random.default_rng(6)
    rows = [
        {"user_id": int(rng.integers(1, 30)), "created_at": start + i * 3_600_000,
         "amount": round(float(rng.uniform(1, 500)), 2), "refunded": int(rng.uniform() < 0.2)}
        for i in range(300)
    ]  # fmt: skip
    data = tmp_path / "orders.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "orders_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "refunded", "-o", str(out))
    assert code == 0 and "0 would be quarantined" in printed, err
    spec = resolve_spec(f"{out}:orders")
    assert spec.contracts["orders"].columns["created_at"].unit == "ms"
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(spec.sources[0], lake), spec.contracts["orders"], lake)
    held = lake.read(clean.clean)["created_at"].sort_values()
    assert held.iloc[0] == pd.Timestamp("2025-01-01", tz="UTC")
    assert held.iloc[-1] == pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(hours=299)
    record = record_model(spec)
    sent = record.model_validate({"user_id": 3, "created_at": start + 7_200_000})
    iso = record.model_validate({"user_id": 3, "created_at": "2025-01-01T02:00:00Z"})
    assert sent == iso


def test_a_spreadsheets_serial_days_are_the_event_time_read_alike_by_the_lake_and_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A tool that drops a sheet's formats exports its dates as the numbers Excel keeps:
    days since 1899-12-30, the time of day a fraction (``45296.4375`` is 2024-01-05 10:30).
    ``order_date`` was a numeric feature and the split a hash; it is the event time, read as
    local times in the column's zone, in the lake and in a request alike."""
    frame = _activity().drop(columns="month")
    frame.insert(1, "order_date", 45296 + np.arange(len(frame)) * 0.5625)
    data = _write(frame, tmp_path / "orders.csv")
    out = tmp_path / "orders_spec.py"
    code, printed, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0 and "0 would be quarantined" in printed, err
    assert "a spreadsheet's serial days (45296 is 2024-01-05)" in _said(out)
    spec = resolve_spec(f"{out}:orders")
    assert spec.contracts["orders"].columns["order_date"].unit == "excel"
    assert spec.event_timestamp == "order_date" and isinstance(spec.split, RecentSplit)
    assert "order_date" not in spec.features.numeric
    text = out.read_text().replace('unit="excel")', 'unit="excel", timezone="Europe/Berlin")')
    out.write_text(text)
    spec = resolve_spec(f"{out}:orders")
    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(spec.sources[0], lake), spec.contracts["orders"], lake)
    held = lake.read(clean.clean)["order_date"]
    assert held.iloc[0] == pd.Timestamp("2024-01-04 23:00", tz="UTC")  # midnight in Berlin
    assert held.iloc[3] == pd.Timestamp("2024-01-06 15:30", tz="UTC")  # 45297.6875
    record = record_model(spec)
    sent = record.model_validate({"account_id": 3, "order_date": 45296.4375})
    iso = record.model_validate({"account_id": 3, "order_date": "2024-01-05T09:30:00Z"})
    assert sent == iso


def test_a_tab_separated_export_with_a_rate_per_pair_of_columns_is_read_and_joined(
    tmp_path: Path, capsys: pytest.CaptureFixture, settings: Settings
) -> None:
    """A hotel's booking export: a ``.tsv`` file (left out of the folder before, so the
    label was "not found"), booked times in camelCase epoch seconds (``BookedAt``, typed a
    plain int before), a rate per hotel *and* room type (no lookup proposed before: no one
    column is unique there), and a booking id that names each row when the entity and the
    time do not (no unique key proposed before)."""
    rng = np.random.default_rng(8)
    rows = 400
    day = 1_704_067_200  # 2024-01-01T00:00:00Z; bookings are dated to the day
    bookings = pd.DataFrame(
        {
            "BookingID": [f"BK{i:06d}" for i in range(rows)],
            "GuestID": [f"G-{g:03d}" for g in rng.integers(1, 20, rows)],
            "BookedAt": day + 86_400 * np.sort(rng.integers(0, 60, rows)),
            "Hotel": rng.choice(["City Hotel", "Resort Hotel"], rows),
            "RoomType": rng.choice(["A", "B", "C"], rows),
            "LeadTime": rng.integers(0, 300, rows),
            "IsCanceled": rng.choice(["yes", "no"], rows, p=[0.3, 0.7]),
        }
    )
    rates = pd.DataFrame(
        [(h, r, 80.0 + 15 * i + 10 * j) for i, h in enumerate(["City Hotel", "Resort Hotel"])
         for j, r in enumerate("ABC")],
        columns=["Hotel", "RoomType", "RackRate"],
    )  # fmt: skip
    data = tmp_path / "export"
    data.mkdir()
    bookings.to_csv(data / "bookings.tsv", sep="\t", index=False)
    _write(rates, data / "room_rates.csv")
    (data / "notes.txt").write_text("exported by the front desk\n")
    out = tmp_path / "bookings_spec.py"
    args = [str(data), "--label", "IsCanceled", "--keys", "GuestID", "-o", str(out)]
    code, _, err = _init(capsys, *args)
    assert code == 0, err
    spec = resolve_spec(f"{out}:export")
    sources = {s.name: s for s in spec.sources}
    assert set(sources) == {"bookings", "room_rates"} and sources["bookings"].delimiter == "\t"
    booked = spec.contracts["bookings"].columns["BookedAt"]
    assert (booked.dtype, booked.unit, spec.event_timestamp) == ("datetime", "s", "BookedAt")
    assert spec.lookups == [
        LookupJoin(
            source="room_rates",
            on={"Hotel": "Hotel", "RoomType": "RoomType"},
            columns={"RackRate": "RackRate"},
        )
    ]
    assert spec.contracts["room_rates"].unique == ["Hotel", "RoomType"]
    assert bookings.duplicated(["GuestID", "BookedAt"]).any()  # so the id is the key
    assert spec.contracts["bookings"].unique == ["BookingID"]

    lake = Lake(settings.lake_dir)
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    assert clean["bookings"].quarantine.rows == 0
    features = lake.read(build_feature_set(clean, spec, lake).snapshot)
    expected = bookings.merge(rates, on=["Hotel", "RoomType"])
    assert len(features) == rows
    assert sorted(features["RackRate"]) == sorted(expected["RackRate"])

    # The label asked for is in no file read: the files left out by their names are named.
    (data / "bookings.tsv").rename(data / "bookings.export")
    code, _, err = _init(capsys, *args, "--force")
    assert code == 2 and "(files not read, by their names: bookings.export, notes.txt)" in err


def test_a_csv_excel_saved_on_windows_is_read_in_its_code_page(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An accent late in the file (row 300) as one cp1252 byte: spec init failed inside
    pandas' UTF-8 decoder; it now names the encoding in the spec, with a TODO, and the
    lake holds the accents as written."""
    frame = _activity()
    frame["city"] = ["Lyon"] * 300 + ["Besançon"] + ["Köln"] * (len(frame) - 301)
    data = tmp_path / "activity.csv"
    data.write_bytes(frame.to_csv(index=False).encode("cp1252"))
    out = tmp_path / "activity_spec.py"
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 0, err
    assert "# TODO: not UTF-8; read as cp1252: check accents" in out.read_text()
    spec = resolve_spec(f"{out}:activity")
    assert spec.sources[0].encoding == "cp1252"
    lake = Lake(tmp_path / "lake")
    raw = lake.read(snapshot_source(spec.sources[0], lake))
    assert raw["city"].tolist() == frame["city"].tolist()
    data.write_bytes(frame.to_csv(index=False).encode("utf-8"))  # the same, saved as UTF-8
    utf8 = tmp_path / "utf8_spec.py"
    assert _init(capsys, str(data), "--label", "churned", "-o", str(utf8))[0] == 0
    assert resolve_spec(f"{utf8}:activity").sources[0].encoding == "utf-8"


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("ok", ["--label", "nope"], "no column 'nope'"),
        ("wide", ["--label", "nope"], "sensor_029 and 70 more"),  # not 100 names
        ("ok", ["--label", "churned", "--time", "plan"], "--time 'plan': not a column"),
        ("ok", ["--label", "churned", "-o", "spec.txt"], "a spec file is Python"),
        ("empty", ["--label", "churned"], "no rows to learn"),
        ("missing", ["--label", "churned"], "no file or folder"),
        ("bad", ["--label", "churned"], "not valid jsonl"),
        ("workbook", ["--label", "churned"], "data.ods: a spreadsheet workbook; save it as .xlsx"),
        ("workbooks", ["--label", "churned"], "(data.ods: spreadsheet workbooks; save it as .xlsx"),
        ("xlsx", ["--label", "churned"], "data.xlsx: not an .xlsx workbook"),
        ("spss", ["--label", "churned"], "data.sav: a statistics package's data file; export"),
        ("spss_folder", ["--label", "churned"], "(data.sav: statistics packages' data files;"),
        # cut past the first 64 KB: the separator is sniffed, the whole text is not there
        ("truncated", ["--label", "churned"], "not valid csv: Compressed file ended before"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, setup: str, args: list[str], message: str
) -> None:
    data = tmp_path / "data.csv"
    if setup == "ok":
        _write(_activity(), data)
    elif setup == "wide":
        _write(pd.DataFrame({f"sensor_{i:03d}": [1.0, 2.0] for i in range(100)}), data)
    elif setup == "empty":
        data.write_text("a,b,churned\n")
    elif setup == "bad":
        data = tmp_path / "data.jsonl"
        data.write_text('{"a": 1}\n{oops\n')
    elif setup.startswith("workbook"):  # a LibreOffice file: a zip of XML parts
        data = tmp_path / "books" / "data.ods"
        data.parent.mkdir()
        with zipfile.ZipFile(data, "w") as book:
            book.writestr("content.xml", "<office:document/>")
        data = data.parent if setup == "workbooks" else data
    elif setup.startswith("spss"):  # SPSS's own format: its reader is not installed
        data = tmp_path / "survey" / "data.sav"
        data.parent.mkdir()
        data.write_bytes(b"$FL2@(#) IBM SPSS STATISTICS 64-bit Linux")
        data = data.parent if setup == "spss_folder" else data
    elif setup == "xlsx":  # named as a workbook, but not one
        data = tmp_path / "data.xlsx"
        with zipfile.ZipFile(data, "w") as book:
            book.writestr("xl/workbook.xml", "<workbook/>")
    elif setup == "truncated":
        data = tmp_path / "data.csv.gz"
        packed = gzip.compress(_activity(6000).to_csv(index=False).encode())
        data.write_bytes(packed[: len(packed) * 3 // 4])
    if "-o" not in args:
        args = [*args, "-o", str(tmp_path / "spec.py")]
    code, _, err = _init(capsys, str(data), *args)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_existing_spec_file_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _write(_activity(), tmp_path / "activity.csv")
    out = tmp_path / "spec.py"
    out.write_text("# mine\n")
    code, _, err = _init(capsys, str(data), "--label", "churned", "-o", str(out))
    assert code == 2 and "exists; pass --force" in err and out.read_text() == "# mine\n"
    assert _init(capsys, str(data), "--label", "churned", "-o", str(out), "--force")[0] == 0
    assert resolve_spec(f"{out}:activity").name == "activity"


def test_spec_check_summarizes_a_reference_and_refuses_a_bad_one(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["spec", "check", "digits"]) == 0
    assert '"event_timestamp": null' in capsys.readouterr().out
    assert main(["spec", "check", "nycflights13"]) == 0
    assert "note:" not in capsys.readouterr().err  # every view feeds the model
    assert main(["spec", "check", "no_such_dataset"]) == 2
    err = capsys.readouterr().err
    assert "no dataset 'no_such_dataset'" in err and err.count("\n") == 1


def test_spec_check_notes_a_view_whose_features_the_model_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A view declared, its features forgotten in ``features``: it is built, stored and
    streamed, and the model never sees it. ``spec check`` says so, on stderr."""
    (tmp_path / "idle.py").write_text(
        "from mlsys_core.datasets.nycflights13.spec import nycflights13_spec\n\n\n"
        "def idle():\n"
        "    spec = nycflights13_spec()\n"
        "    view = spec.feature_views[0]\n"
        "    numeric = [c for c in spec.features.numeric if c not in view.features]\n"
        "    features = spec.features.model_copy(update={'numeric': numeric})\n"
        "    return spec.model_copy(update={'features': features})\n"
    )
    assert main(["spec", "check", f"{tmp_path / 'idle.py'}:idle"]) == 0
    err = capsys.readouterr().err
    view = resolve_spec("nycflights13").feature_views[0]
    assert err.count("note:") == 1, err
    assert f"feature view {view.name!r} gives the model no input" in err
    assert ", ".join(view.features) in err


def _payments(rows: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Payments, and the chargebacks that name some of them, filed 2 to 60 days later."""
    rng = np.random.default_rng(21)
    at = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.uniform(0, 300, rows)), "D"
    )
    payments = pd.DataFrame(
        {
            "payment_id": [f"P{i:06d}" for i in range(rows)],
            "customer_id": [f"C{c:04d}" for c in rng.integers(0, 300, rows)],
            "paid_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": rng.lognormal(3, 1, rows).round(2),
            "channel": rng.choice(["web", "app", "shop"], rows),
        }
    )
    named = rng.random(rows) < 0.08
    chargebacks = pd.DataFrame(
        {
            "paid_at": payments["paid_at"][named],  # the event's time: names no payment
            "customer_id": payments["customer_id"][named],  # repeated: names no payment
            "payment_id": payments["payment_id"][named],
            "filed_at": (
                at[named] + pd.to_timedelta(rng.uniform(2, 60, named.sum()), "D")
            ).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": rng.choice(["fraud", "not received"], named.sum(), p=[0.6, 0.4]),
        }
    )
    return payments, chargebacks


def test_a_label_of_times_is_whether_the_outcome_came(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Subscriptions keep ``cancelled_at``, empty while a subscription runs. ``--label
    cancelled_at`` made each date a class (``positive=["2023-01-17"]``) and every running
    subscription unlabelled: the pipeline failed for want of positives. The label is
    whether a cancellation came (``present``), with ``known_after`` from how late they
    came, so a subscription too new to have cancelled waits, and the split's windows end
    at the newest labelled start."""
    rng = np.random.default_rng(19)
    rows = 1_200
    started = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 500, rows)), "D")
    tickets = rng.poisson(2, rows)
    churned = rng.uniform(size=rows) < 0.1 + 0.1 * tickets
    cancelled = pd.Series(started + pd.to_timedelta(rng.uniform(10, 120, rows), "D"))
    subs = pd.DataFrame(
        {
            "subscription_id": [f"S{i}" for i in range(rows)],
            "started_at": started.strftime("%Y-%m-%d"),
            "tickets": tickets,
            "cancelled_at": cancelled.where(churned).dt.strftime("%Y-%m-%d"),
        }
    )
    out = tmp_path / "subs_spec.py"
    data = _write(subs, tmp_path / "subs.csv")
    code, _, err = _init(capsys, str(data), "--label", "cancelled_at", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:subs")
    start, end = pd.to_datetime(subs["started_at"]), pd.to_datetime(subs["cancelled_at"])
    late = (end - start).max()
    assert spec.label.present and spec.label.column == "cancelled_at"
    assert spec.label.known_after.days == int(np.ceil(late / pd.Timedelta(days=1)))
    assert "cancelled_at" not in spec.input_columns and "tickets" in spec.features.numeric
    rows_ = assemble_features({"subs": clean_table(subs, spec.contracts["subs"]).clean}, spec)
    known = start <= start.max() - spec.label.known_after
    label = rows_[spec.label.name]
    np.testing.assert_array_equal(label.notna(), known)
    np.testing.assert_array_equal(label[known], churned[known].astype(float))
    test_from = start[known].max() - spec.split.test  # the newest labelled window tests
    assert 0 < label[known & (start > test_from)].sum() < (known & (start > test_from)).sum()


def test_a_log_of_each_entitys_events_is_counted_over_windows_before_each_prediction(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Subscriptions due each month beside a usage log (many rows per user, each with its
    time): the log was read into the lake and used by nothing, so the model saw the plan
    alone. ``spec init`` proposes a window view of it: counts over 7 and 30 days, sums and
    means of its numbers, each row counted only once its time is strictly before the due
    date (none of a subscription's future)."""
    rng = np.random.default_rng(79)
    due = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(240) // 40 * 30, unit="D")
    subs = pd.DataFrame(
        {
            "user_id": np.arange(240) % 40 + 1,
            "due_at": due.strftime("%Y-%m-%d"),
            "plan": rng.choice(["basic", "team"], 240),
            "renewed": rng.integers(0, 2, 240),
        }
    )
    used = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.uniform(0, 240, 4000), unit="D")
    usage = pd.DataFrame(
        {
            "user_id": rng.integers(1, 41, 4000),
            "used_at": used.round("s").strftime("%Y-%m-%d %H:%M:%S"),
            "minutes": rng.gamma(2, 10, 4000).round(1),
            "feature": rng.choice(["editor", "export", "share"], 4000, p=[0.6, 0.3, 0.1]),
        }
    )
    usage.loc[::50, "used_at"] = None  # an event logged without its time: never counted
    _write(subs, tmp_path / "data" / "subscriptions.csv")
    _write(usage, tmp_path / "data" / "usage.csv")
    out = tmp_path / "subs_spec.py"
    code, _, err = _init(capsys, str(tmp_path / "data"), "--label", "renewed", "-o", str(out),
                         "--name", "subs")  # fmt: skip
    assert code == 0, err
    spec = resolve_spec(f"{out}:subs")
    (view,) = spec.feature_views
    assert (view.source, view.entity.join_keys, view.timestamp) == ("usage", ["user_id"], "used_at")
    named = {a.name: (a.function, a.column, a.window.days, a.positive) for a in view.aggregations}
    assert named == {
        "usage_count_7d": ("count", "used_at", 7, None),
        "usage_count_30d": ("count", "used_at", 30, None),
        "usage_minutes_sum_30d": ("sum", "minutes", 30, None),
        "usage_minutes_mean_30d": ("mean", "minutes", 30, None),
        # the share of each kind but the most common (its share is what the others leave)
        "usage_feature_export_rate_30d": ("rate", "feature", 30, ["export"]),
        "usage_feature_share_rate_30d": ("rate", "feature", 30, ["share"]),
    }
    assert set(named) <= set(spec.features.numeric)
    # A user past the ids seen is no range error in the log either.
    assert spec.contracts["usage"].columns["user_id"].le is None
    tables = {"subscriptions": subs, "usage": usage}
    clean = {t: clean_table(f, spec.contracts[t]).clean for t, f in tables.items()}
    rows = assemble_features(clean, spec).reset_index(drop=True)
    at = pd.to_datetime(subs["due_at"], utc=True)
    when = pd.to_datetime(usage["used_at"], utc=True)
    for i in (0, 57, 239):  # by hand: the user's rows in [due - window, due)
        mine = usage[(usage["user_id"] == subs["user_id"][i]) & (when < at[i])]
        recent = mine[when[mine.index] >= at[i] - pd.Timedelta(days=30)]
        row = rows[(rows["user_id"] == subs["user_id"][i]) & (rows["due_at"] == at[i])].iloc[0]
        assert row["usage_count_30d"] == len(recent)
        assert row["usage_minutes_sum_30d"] == pytest.approx(recent["minutes"].sum())
        shared = (recent["feature"] == "share").mean()
        assert row["usage_feature_share_rate_30d"] == pytest.approx(shared)
        week = mine[when[mine.index] >= at[i] - pd.Timedelta(days=7)]
        assert row["usage_count_7d"] == len(week)


def test_a_log_that_names_the_base_by_a_foreign_key_is_counted_through_a_copy_of_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A shop's customers numbered ``id`` beside their orders, which name them as
    ``customer_id``: the log was left out with a note (a view joins on one name in both
    tables), so the model saw the plan alone. The customers now get their id under the
    orders' name for it too (a one-part ``joined`` column), made alike in the lake and in a
    request that sends the ``id`` alone, and the view of orders joins on it."""
    rng = np.random.default_rng(97)
    decided = pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.uniform(0, 200, 300), unit="D")
    customers = pd.DataFrame(
        {"id": np.arange(1, 301), "decided_at": decided.round("s").astype(str),
         "plan": rng.choice(["basic", "team"], 300), "churned": rng.integers(0, 2, 300)}
    )  # fmt: skip
    ordered = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.uniform(0, 300, 5000), unit="D")
    orders = pd.DataFrame(
        {"id": np.arange(1, 5001), "customer_id": rng.integers(1, 301, 5000),
         "ordered_at": ordered.round("s").astype(str), "amount": rng.gamma(2, 20, 5000).round(2)}
    )  # fmt: skip
    _write(customers, tmp_path / "shop" / "customers.csv")
    _write(orders, tmp_path / "shop" / "orders.csv")
    out = tmp_path / "shop_spec.py"
    code, _, err = _init(capsys, str(tmp_path / "shop"), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:shop")
    assert (spec.base, spec.entity_keys) == ("customers", ["id"])
    (view,) = spec.feature_views
    assert (view.source, view.entity.join_keys) == ("orders", ["customer_id"])
    source = next(s for s in spec.sources if s.name == "customers")
    assert source.joined == {"customer_id": ["id"]}
    contract = spec.contracts["customers"]
    assert contract.columns["customer_id"].dtype == contract.columns["id"].dtype == "int"
    assert "customer_id" not in contract.unique  # a copy of the key names no row anew
    assert "customer_id" not in spec.input_columns
    assert "name the two columns alike" not in _said(out)

    lake = Lake(tmp_path / "lake")
    clean = clean_snapshot(snapshot_source(source, lake), contract, lake)
    read = lake.read(clean.clean)
    np.testing.assert_array_equal(read["customer_id"], read["id"])
    tables = {"customers": read, "orders": clean_table(orders, spec.contracts["orders"]).clean}
    rows = assemble_features(tables, spec).set_index("id")
    at = pd.to_datetime(customers["decided_at"], utc=True)
    when = pd.to_datetime(orders["ordered_at"], utc=True)
    for i in (0, 123, 299):  # by hand: the customer's orders in [decided - 30 days, decided)
        mine = (orders["customer_id"] == customers["id"][i]) & (when < at[i])
        recent = orders[mine & (when >= at[i] - pd.Timedelta(days=30))]
        row = rows.loc[customers["id"][i]]
        assert row["orders_count_30d"] == len(recent)
        assert row["orders_amount_sum_30d"] == pytest.approx(recent["amount"].sum())
    assert rows["orders_count_30d"].gt(0).mean() > 0.5

    record = record_model(spec)
    assert "'customer_id' may be sent as its parts ['id']" in (record.__doc__ or "")
    sent = record.model_validate({"id": 7, "decided_at": "2024-05-01 10:00:00", "plan": "team"})
    assert sent.customer_id == 7  # the key itself, as a number: not its text

    # A log that names the base's rows, not its entity: payments of each subscription,
    # the subscriptions keyed by their customer. Each subscription counts its own payments.
    subs = customers.rename(columns={"plan": "tier"}).assign(customer_id=rng.integers(1, 60, 300))
    payments = orders.rename(columns={"customer_id": "subscription_id", "ordered_at": "paid_at"})
    _write(subs, tmp_path / "billing" / "subscriptions.csv")
    _write(payments, tmp_path / "billing" / "payments.csv")
    out = tmp_path / "billing_spec.py"
    code, _, err = _init(capsys, str(tmp_path / "billing"), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:billing")
    assert spec.entity_keys == ["customer_id"]
    (view,) = spec.feature_views
    assert (view.source, view.entity.join_keys) == ("payments", ["subscription_id"])
    source = next(s for s in spec.sources if s.name == "subscriptions")
    assert source.joined == {"subscription_id": ["id"]}


def test_a_databases_tables_join_by_their_foreign_keys_and_not_by_their_own_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An export of a shop's database: every table numbers its rows ``id``, and orders name
    their customer and product as ``customer_id`` and ``product_id``. Order 5 was joined to
    customer 5 (both ``id``, both unique): each order got an unrelated customer's columns,
    and its own customer's were never joined. The ids join by their names now."""
    rng = np.random.default_rng(87)
    customers = pd.DataFrame(
        {"id": np.arange(1, 41), "tier": rng.choice(["bronze", "gold"], 40),
         "age": rng.integers(18, 80, 40)}
    )  # fmt: skip
    products = pd.DataFrame({"id": np.arange(1, 13), "price": rng.gamma(2, 20, 12).round(2)})
    orders = pd.DataFrame(
        {"id": np.arange(1, 301), "customer_id": rng.integers(1, 41, 300),
         "product_id": rng.integers(1, 13, 300),
         "ordered_at": pd.date_range("2024-01-01", periods=300, freq="7h").astype(str),
         "quantity": rng.integers(1, 4, 300), "returned": rng.integers(0, 2, 300)}
    )  # fmt: skip
    for name, frame in (("customers", customers), ("products", products), ("orders", orders)):
        _write(frame, tmp_path / "shop" / f"{name}.csv")
    out = tmp_path / "shop_spec.py"
    code, _, err = _init(capsys, str(tmp_path / "shop"), "--label", "returned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:shop")
    assert spec.base == "orders"
    assert {(j.source, tuple(j.on.items())) for j in spec.lookups} == {
        ("customers", (("customer_id", "id"),)),
        ("products", (("product_id", "id"),)),
    }
    assert {"tier", "age", "price"} <= set(spec.input_columns)
    tables = {"orders": orders, "customers": customers, "products": products}
    clean = {t: clean_table(f, spec.contracts[t]).clean for t, f in tables.items()}
    rows = assemble_features(clean, spec)  # an order by its time: each time is one order's
    rows = rows.set_index(rows["ordered_at"].dt.strftime("%Y-%m-%d %H:%M:%S")).loc[
        orders["ordered_at"]
    ]
    by_id = customers.set_index("id")
    np.testing.assert_array_equal(rows["tier"], by_id.loc[orders["customer_id"], "tier"])
    np.testing.assert_array_equal(rows["age"], by_id.loc[orders["customer_id"], "age"])


def test_one_tables_rows_in_two_files_join_by_their_id(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Features and labels in two files keyed by the same ``id`` (as competitions ship
    them): the same ids in both, so ``id`` joins them."""
    frame = _activity().reset_index(names="id")
    _write(frame.drop(columns="churned"), tmp_path / "comp" / "train_values.csv")
    _write(frame[["id", "churned"]], tmp_path / "comp" / "train_labels.csv")
    out = tmp_path / "comp_spec.py"
    code, _, err = _init(capsys, str(tmp_path / "comp"), "--label", "churned", "-o", str(out))
    assert code == 0, err
    spec = resolve_spec(f"{out}:comp")
    ((lookup,),) = [spec.lookups]
    assert (spec.base, lookup.source, lookup.on) == ("train_labels", "train_values", {"id": "id"})
    assert {"plan", "fee", "tickets"} <= set(spec.input_columns)


def test_a_label_kept_in_a_table_of_outcomes_is_read_from_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Chargebacks in a file of their own name the payments they dispute: ``--label
    chargebacks`` makes them the label (1 when a chargeback names the payment), never a
    lookup (that would hand the model its answer), matched on the payment id, with
    ``known_after`` from how late they were filed. Before, no column could be the label."""
    payments, chargebacks = _payments()
    _write(payments, tmp_path / "data" / "payments.csv")
    _write(chargebacks, tmp_path / "data" / "chargebacks.csv")
    out = tmp_path / "pay.py"
    code, printed, err = _init(capsys, str(tmp_path / "data"), "--label", "chargebacks",
                               "-o", str(out), "--name", "pay")  # fmt: skip
    assert code == 0, err
    spec = resolve_spec(f"{out}:pay")
    paid = pd.to_datetime(payments.set_index("payment_id")["paid_at"])
    filed = pd.to_datetime(chargebacks.set_index("payment_id")["filed_at"])
    late = filed - paid[filed.index]
    assert spec.base == "payments" and not spec.lookups
    # The payment id names each payment for good; a customer and a second may meet twice.
    assert spec.contracts["payments"].unique == ["payment_id"]
    assert (spec.label.source, spec.label.on) == ("chargebacks", {"payment_id": "payment_id"})
    assert spec.label.column is None
    assert spec.label.known_after.days == int(np.ceil(late.max() / pd.Timedelta(days=1)))
    assert "'filed_at' came up to" in out.read_text(encoding="utf-8")
    assert not {"filed_at", "reason", "payment_id"} & {
        *spec.features.numeric,
        *spec.features.categorical,
    }
    tables = {"payments": payments, "chargebacks": chargebacks}
    rows = assemble_features(
        {t: clean_table(f, spec.contracts[t]).clean for t, f in tables.items()}, spec
    )
    until = pd.to_datetime(payments["paid_at"]).max() - spec.label.known_after
    known = pd.to_datetime(payments["paid_at"]) <= until
    disputed = payments["payment_id"].isin(chargebacks["payment_id"])
    np.testing.assert_array_equal(rows[spec.label.name].notna(), known)
    np.testing.assert_array_equal(rows[spec.label.name][known], disputed[known].astype(float))

    # Only frauds count: the column that holds the class is found.
    code, _, err = _init(capsys, str(tmp_path / "data"), "--label", "chargebacks",
                         "--positive", "fraud", "-o", str(tmp_path / "fraud.py"),
                         "--name", "pay")  # fmt: skip
    assert code == 0, err
    spec = resolve_spec(f"{tmp_path / 'fraud.py'}:pay")
    assert (spec.label.column, spec.label.positive) == ("reason", ["fraud"])
