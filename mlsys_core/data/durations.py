"""Lengths of time written as text, read as seconds: the notations a column's
``ColumnRule.duration`` names, one reader for the lake, a stream's events, a request and
the command line."""

from __future__ import annotations

import re

import pandas as pd

# A length of time as the ``duration`` notations write it: each group is a count of its
# unit (``m2``: minutes, where "m:s" reads a length past an hour). A clock "h:m:s" may
# start with days, as pandas, PostgreSQL and Python write them (``1 days 02:03:04``,
# ``1 day, 2:03:04``); "units" reads ``2h 50m`` or ``1 hr 30 min``, its units in falling
# order; "iso" reads ISO 8601 (``PT4M31S``, ``P1DT2H``), without years and months, whose
# lengths vary.
_DAYS = r"(?:(?P<d>\d+)\s*days?,?\s*)?"
_UNIT_NAMES = {
    "w": "weeks?|wks?|w",
    "d": "days?|d",
    "h": "hours?|hrs?|h",
    "m": "minutes?|mins?|m",
    "s": "seconds?|secs?|s",
    "ms": "milliseconds?|msecs?|ms",
}
_UNITS = "".join(
    rf"(?:(?P<{unit}>\d+(?:\.\d+)?)\s*(?:{names})(?![^\W\d_])[\s,]*(?:and\s+)?)?"
    for unit, names in _UNIT_NAMES.items()
)
_ISO_NUMBER = r"\d+(?:[.,]\d+)?"  # ISO 8601 allows a decimal comma
_DURATIONS = {
    "h:m:s": _DAYS + r"(?P<h>\d+):(?P<m>[0-5]?\d):(?P<s>[0-5]?\d(?:\.\d+)?)",
    "m:s": r"(?:(?P<h>\d+):(?P<m2>[0-5]?\d)|(?P<m>\d+)):(?P<s>[0-5]?\d(?:\.\d+)?)",
    "h:m": r"(?P<h>\d+):(?P<m>[0-5]?\d)",
    "units": rf"(?=\d){_UNITS}",
    "iso": (
        rf"P(?!$)(?:(?P<w>{_ISO_NUMBER})W)?(?:(?P<d>{_ISO_NUMBER})D)?"
        rf"(?:T(?=\d)(?:(?P<h>{_ISO_NUMBER})H)?(?:(?P<m>{_ISO_NUMBER})M)?"
        rf"(?:(?P<s>{_ISO_NUMBER})S)?)?"
    ),
}
_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "m2": 60.0, "s": 1.0, "ms": 0.001}
# Each notation as a message names it to whoever wrote a value it does not read.
WRITTEN = {
    "h:m:s": "h:m:s (as 01:04:31 or 1 day 02:03:04)",
    "m:s": "m:s (as 4:31)",
    "h:m": "h:m (as 1:05)",
    "units": "with its units (as 2h 50m or 1 hr 30 min)",
    "iso": "in ISO 8601 (as PT4M31S or P1DT2H)",
}


def duration_parts(text: pd.Series, duration: str) -> pd.DataFrame:
    """Each text's count of each unit ``duration`` writes (``2h 50m``: h 2, m 50); a row
    of NaN where a text is no such length of time."""
    parts = text.str.strip().str.extract(f"^{_DURATIONS[duration]}$", flags=re.IGNORECASE)
    return parts.apply(lambda part: part.str.replace(",", ".", regex=False)).astype("float64")


def duration_seconds(text: pd.Series, duration: str) -> pd.Series:
    """Lengths of time written as ``duration`` says (a clock, units or ISO 8601) as
    seconds; NaN where a text is no such length of time."""
    parts = duration_parts(text, duration)
    seconds = sum(parts[unit].fillna(0.0) * _SECONDS[unit] for unit in parts)
    return seconds.where(parts.notna().any(axis=1))
