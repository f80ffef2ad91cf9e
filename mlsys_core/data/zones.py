"""Zone abbreviations in written times (``2024-07-05 10:00:00 EDT``), read as the UTC
offsets they stand for: strptime's ``%Z`` reads only the few that are zones of their own
name (UTC, GMT, EST), so a US export's summer rows (EDT, PDT) went unread."""

from __future__ import annotations

import re

import pandas as pd

# An abbreviation -> its offset, in the meaning exports commonly write. Four have another
# meaning elsewhere (AMBIGUOUS): they are read in the one below, and `spec init` says so.
ZONE_OFFSETS = {
    "UTC": "+0000", "UT": "+0000", "GMT": "+0000",
    # North America
    "EST": "-0500", "EDT": "-0400", "CST": "-0600", "CDT": "-0500", "MST": "-0700",
    "MDT": "-0600", "PST": "-0800", "PDT": "-0700", "AKST": "-0900", "AKDT": "-0800",
    "HST": "-1000", "AST": "-0400", "ADT": "-0300", "NST": "-0330", "NDT": "-0230",
    # Europe
    "WET": "+0000", "WEST": "+0100", "BST": "+0100", "CET": "+0100", "CEST": "+0200",
    "MET": "+0100", "MEST": "+0200", "EET": "+0200", "EEST": "+0300", "MSK": "+0300",
    # Asia and the Pacific
    "IST": "+0530", "PKT": "+0500", "WIB": "+0700", "ICT": "+0700", "SGT": "+0800",
    "HKT": "+0800", "AWST": "+0800", "JST": "+0900", "KST": "+0900", "ACST": "+0930",
    "ACDT": "+1030", "AEST": "+1000", "AEDT": "+1100", "NZST": "+1200", "NZDT": "+1300",
    # South America and Africa
    "BRT": "-0300", "ART": "-0300", "WAT": "+0100", "CAT": "+0200", "SAST": "+0200",
    "EAT": "+0300",
}  # fmt: skip
AMBIGUOUS = {
    "CST": "China Standard Time (+08:00)",
    "AST": "Arabia Standard Time (+03:00)",
    "BST": "Bangladesh Standard Time (+06:00)",
    "IST": "Irish (+01:00) or Israel (+02:00) Standard Time",
}
_ABBREVIATION = re.compile(
    r"(?<![A-Za-z])(" + "|".join(sorted(ZONE_OFFSETS, key=len, reverse=True)) + r")(?![A-Za-z])"
)


def zones_as_offsets(text: pd.Series, fmt: str) -> tuple[pd.Series, str]:
    """``text`` and ``fmt`` with each zone abbreviation written as its offset and ``%Z``
    as ``%z``, for a format that reads a zone by its name; both unchanged otherwise. An
    abbreviation not known stays, so its value is unread, not read in the wrong zone."""
    if "%Z" not in fmt:
        return text, fmt
    offsets = text.str.replace(_ABBREVIATION, lambda m: ZONE_OFFSETS[m.group(1)], regex=True)
    return offsets, fmt.replace("%Z", "%z")


def abbreviations(text: pd.Series) -> set[str]:
    """The zone abbreviations ``text`` writes."""
    return set(text.str.extract(_ABBREVIATION, expand=False).dropna())
