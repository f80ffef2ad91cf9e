"""Producing an event log: turn flights into departure events and drop them into a log
folder as JSON-lines segments, the way a producer must (temporary name, then rename)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

EVENT_TIME = "dep_ts"


def departure_events(flights: pd.DataFrame, timezone: str = "America/New_York") -> pd.DataFrame:
    """One event per flight that departed: its actual departure time (UTC) and delay."""
    departed = flights.dropna(subset=["dep_time"])
    hhmm = departed["dep_time"].astype(int)
    # dep_time 2400 is midnight at the end of the day; a departure after midnight of a
    # late flight is on the next day, which dep_delay tells apart (negative wrap).
    local = pd.to_datetime(departed[["year", "month", "day"]]) + pd.to_timedelta(
        (hhmm // 100) * 60 + hhmm % 100, unit="min"
    )
    sched = pd.to_datetime(departed[["year", "month", "day"]]) + pd.to_timedelta(
        (departed["sched_dep_time"] // 100) * 60 + departed["sched_dep_time"] % 100, unit="min"
    )
    local = local.where(local >= sched - pd.Timedelta(hours=2), local + pd.Timedelta(days=1))
    ts = local.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    events = pd.DataFrame(
        {
            EVENT_TIME: ts.map(lambda t: t.isoformat() if pd.notna(t) else None),
            "origin": departed["origin"].to_numpy(),
            "carrier": departed["carrier"].to_numpy(),
            "flight": departed["flight"].to_numpy(),
            "dep_delay": departed["dep_delay"].to_numpy(),
        }
    )
    return events.iloc[np.argsort(ts.to_numpy(), kind="stable")].reset_index(drop=True)


def write_segments(
    events: pd.DataFrame, folder: Path, rows_per_segment: int, start: int = 0
) -> list[Path]:
    """Append ``events`` to the log as numbered segments; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, offset in enumerate(range(0, len(events), rows_per_segment), start):
        chunk = events.iloc[offset : offset + rows_per_segment]
        final = folder / f"segment-{i:06d}.jsonl"
        tmp = folder / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        chunk.to_json(tmp, orient="records", lines=True, date_format="iso")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        paths.append(final)
    return paths
