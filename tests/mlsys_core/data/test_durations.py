"""Lengths of time as people, exports and APIs write them, read as seconds by the one
reader the lake, a stream, a request and the command line share."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mlsys_core.data.durations import duration_seconds

READ = {
    "units": {
        "2h 50m": 10200,  # a fare's flight time
        "19h": 68400,
        "45m": 2700,
        "1 hr 30 min": 5400,
        "1h30m": 5400,
        "90 minutes": 5400,
        "1.5 hours": 5400,
        "2 HRS": 7200,
        "3 days": 259200,
        "1 day 2 hours": 93600,
        "2 weeks": 1209600,
        "4m 31s": 271,
        "1h, 20m and 5s": 4805,
        "250ms": 0.25,
    },
    "iso": {
        "PT4M31S": 271,  # a video's length from an API
        "PT1H30M": 5400,
        "P1DT2H": 93600,
        "P2W": 1209600,
        "PT0.5S": 0.5,
        "PT0,5S": 0.5,  # ISO 8601 allows a decimal comma
    },
    "h:m:s": {
        "01:04:31": 3871,
        "0 days 00:04:31": 271,  # pandas writes a timedelta so
        "1 days 02:03:04": 93784,
        "1 day, 2:03:04": 93784,  # Python's str(timedelta)
        "2 days 02:03:04.5": 180184.5,
    },
}
UNREAD = {
    "units": ["5", "", "1:30", "2 months", "5 m/s", "2h 50m 10", "h", "50m 2h", "soon"],
    "iso": ["P1Y", "P1M", "P", "PT", "P1DT", "4M31S", "PT4M31"],
    "h:m:s": ["-1 days +23:59:00", "1:05", "1 day"],
}


@pytest.mark.parametrize("duration", list(READ))
def test_each_notation_reads_what_it_names_as_seconds(duration: str) -> None:
    texts = list(READ[duration])
    assert duration_seconds(pd.Series(texts, dtype=object), duration).tolist() == [
        float(READ[duration][t]) for t in texts
    ]


@pytest.mark.parametrize("duration", list(UNREAD))
def test_what_a_notation_does_not_write_is_no_length_of_time(duration: str) -> None:
    """Months and years have no fixed length; a bare number is no length in words; units
    come largest first."""
    seconds = duration_seconds(pd.Series(UNREAD[duration], dtype=object), duration)
    assert all(math.isnan(s) for s in seconds), dict(zip(UNREAD[duration], seconds, strict=True))
