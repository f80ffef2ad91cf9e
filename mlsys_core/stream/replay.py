"""Producing an event log: turn a source table into the events its stream declares, and drop
them into a log folder as JSON-lines segments, the way a producer must (temporary name,
then rename)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from mlsys_core.features.offline import NAT, rule_ns, to_ns
from mlsys_core.spec.definitions import EventStream


def source_events(stream: EventStream, table: pd.DataFrame) -> pd.DataFrame:
    """Every event the rows of ``table`` produce, as ``stream.events`` declares them, in
    event-time order (kinds in declared order on ties): what a live producer would have
    sent. A row whose rule for a kind is null (a flight that never departed) sends none of
    that kind. Times are ISO-8601 text in UTC, as a JSON log carries them."""
    if missing := [c for c in stream.columns if c not in table.columns]:
        raise ValueError(f"stream {stream.name!r}: the table lacks columns {missing}")
    stamp = to_ns(table[stream.timestamp])
    pieces = []
    for rank, kind in enumerate(stream.events):
        at = rule_ns(stamp, kind.at, table)
        happened = at != NAT
        columns = list(dict.fromkeys([*stream.key, stream.timestamp, *kind.columns]))
        frame = table.loc[happened, columns].copy()
        frame.insert(0, stream.kind_column, kind.name)
        frame.insert(0, stream.time_column, at[happened])
        frame["__rank"] = rank
        pieces.append(frame)
    events = pd.concat(pieces, ignore_index=True)
    events = events.sort_values([stream.time_column, "__rank"], kind="stable")
    events = events.drop(columns="__rank").reset_index(drop=True)
    for col in (stream.time_column, stream.timestamp):
        times = pd.to_datetime(events[col], utc=True)
        events[col] = np.where(times.notna(), times.map(lambda t: t.isoformat()), None)
    return events


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
