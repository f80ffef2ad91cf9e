"""Times written with their zone's abbreviation, as US exports, Java and e-mail write
them, read as the instants they name in the lake and from a request alike."""

from __future__ import annotations

import pandas as pd
import pytest

from mlsys_core.data.contract import read_times, to_utc_datetimes
from mlsys_core.data.zones import abbreviations, zones_as_offsets
from mlsys_core.spec import ColumnRule

US_EXPORT = ColumnRule(dtype="datetime", format="%Y-%m-%d %H:%M:%S %Z")


@pytest.mark.parametrize(
    ("written", "utc"),
    [
        ("2024-01-05 10:00:00 EST", "2024-01-05 15:00:00"),
        ("2024-07-05 10:00:00 EDT", "2024-07-05 14:00:00"),  # pandas' %Z: unread
        ("2024-07-05 10:00:00 PDT", "2024-07-05 17:00:00"),
        ("2024-07-05 10:00:00 CDT", "2024-07-05 15:00:00"),
        ("2024-07-05 10:00:00 CEST", "2024-07-05 08:00:00"),
        ("2024-07-05 10:00:00 BST", "2024-07-05 09:00:00"),
        ("2024-07-05 10:00:00 AEST", "2024-07-05 00:00:00"),
        ("2024-07-05 10:00:00 IST", "2024-07-05 04:30:00"),
        ("2024-07-05 10:00:00 UTC", "2024-07-05 10:00:00"),
    ],
)
def test_a_zone_written_by_its_abbreviation_is_its_offset(written: str, utc: str) -> None:
    expected = pd.Timestamp(utc, tz="UTC")
    lake = to_utc_datetimes(pd.Series([written]), US_EXPORT)
    live = read_times(pd.Series([written], dtype=object), US_EXPORT)
    assert lake.tolist() == live.tolist() == [expected]


def test_an_abbreviation_not_known_is_unread_not_read_in_another_zone() -> None:
    """MEZ (German for CET) is no abbreviation the table knows: the value is unread, so
    the lake quarantines its row, rather than reading it as UTC."""
    written = pd.Series(["2024-07-05 10:00:00 MEZ", "2024-07-05 10:00:00 EDT", None])
    read = to_utc_datetimes(written, US_EXPORT)
    assert read.isna().tolist() == [True, False, True]


def test_a_format_without_a_zones_name_is_read_as_written() -> None:
    """Only ``%Z`` reads a name: a month or a day written in capitals (Oracle's JAN) is
    never taken for a zone, and a format with ``%z`` or none keeps its text."""
    text = pd.Series(["05-JAN-24 EST"])
    assert zones_as_offsets(text, "%d-%b-%y EST")[0].tolist() == ["05-JAN-24 EST"]
    oracle, fmt = zones_as_offsets(pd.Series(["05-JAN-24 10:00 EST"]), "%d-%b-%y %H:%M %Z")
    assert (oracle.tolist(), fmt) == (["05-JAN-24 10:00 -0500"], "%d-%b-%y %H:%M %z")
    assert abbreviations(pd.Series(["Fri Jan 05 10:00:00 EDT 2024", "x CST", None])) == {
        "EDT",
        "CST",
    }
