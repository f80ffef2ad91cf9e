"""The prediction log: every served (and shadow) prediction, appended to the lake.

Serving appends small immutable parts (``predictions/<dataset>/_parts/date=YYYY-MM-DD/``),
each renamed into place, so a reader never sees half a flush and replicas never share a
file. Monitoring reads the parts back by time range and joins them to labels when those
arrive; ``snapshot_prediction_log`` pins the parts read into a versioned snapshot, so a
drift check names the exact log it saw.

A log row holds these meta columns plus the spec's entity keys, its event timestamp and
every model input feature, each in a column of its own name (what the model saw, after
online lookups).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlsys_core.data.lake import PARTS, Lake, PartRef, SnapshotRef

LAYER = "predictions"
META_COLUMNS = [
    "request_id",  # one id per request record; a shadow row repeats its champion's id
    "logged_at",  # UTC time of the prediction
    "model_name",
    "model_version",
    "variant",  # the alias that produced it: champion, challenger, ...
    "served",  # True when this prediction was the response; False for shadow copies
    "probability",
    "prediction",
]


class PredictionLogError(ValueError):
    """A log batch without the columns every log row must have."""


class PredictionLogWriteError(RuntimeError):
    """Appending failed part way; ``unwritten`` holds exactly the rows not in the log, so a
    retry appends each row once."""

    def __init__(self, message: str, unwritten: pd.DataFrame) -> None:
        super().__init__(message)
        self.unwritten = unwritten


def _partition(day: pd.Timestamp) -> str:
    return f"date={day:%Y-%m-%d}"


def append_predictions(lake: Lake, dataset: str, frame: pd.DataFrame) -> list[PartRef]:
    """Append one batch of log rows as new parts, one per UTC day it spans."""
    if missing := [c for c in META_COLUMNS if c not in frame.columns]:
        raise PredictionLogError(f"prediction log rows lack columns {missing}")
    if frame.empty:
        return []
    frame = frame.assign(logged_at=pd.to_datetime(frame["logged_at"], utc=True))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    refs: list[PartRef] = []
    days = list(frame.groupby(frame["logged_at"].dt.floor("D"), sort=True))
    for i, (day, rows) in enumerate(days):
        part_id = f"{stamp}-{uuid.uuid4().hex[:12]}"
        try:
            refs.append(
                lake.write_part(
                    LAYER, dataset, _partition(day), part_id, rows.reset_index(drop=True)
                )
            )
        except Exception as err:
            # Each day's part is committed by its own rename: the days before this one are
            # in the log (and this one too if its rename happened), the rest are not.
            placed = lake.part_path(LAYER, dataset, _partition(day), part_id).is_file()
            rest = [r for _, r in days[i + 1 if placed else i :]]
            unwritten = pd.concat(rest) if rest else frame.iloc[0:0]
            raise PredictionLogWriteError(
                f"prediction log append failed after {len(frame) - len(unwritten)} of "
                f"{len(frame)} rows: {err}",
                unwritten,
            ) from err
    return refs


def log_parts(
    lake: Lake, dataset: str, since: datetime | None = None, until: datetime | None = None
) -> list[PartRef]:
    """Part files of the log whose day overlaps ``[since, until)``, oldest first."""
    folder = lake.root / LAYER / dataset / PARTS
    if not folder.is_dir():
        return []
    first = pd.Timestamp(since).tz_convert(UTC).floor("D") if since else None
    last = pd.Timestamp(until).tz_convert(UTC) if until else None
    refs = []
    for day_dir in sorted(folder.glob("date=*")):
        day = pd.Timestamp(day_dir.name.removeprefix("date="), tz=UTC)
        if (first is not None and day < first) or (last is not None and day >= last):
            continue
        for path in sorted(day_dir.glob("*.parquet")):
            rows = pq.ParquetFile(path).metadata.num_rows
            refs.append(
                PartRef(partition=day_dir.name, file=str(path.relative_to(lake.root)), rows=rows)
            )
    return refs


def read_prediction_log(
    lake: Lake,
    dataset: str,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Log rows with ``since <= logged_at < until``, in time order; empty when none."""
    parts = log_parts(lake, dataset, since, until)
    if columns is not None and "logged_at" not in columns:
        columns = [*columns, "logged_at"]
    tables = [pq.read_table(lake.root / p.file, columns=columns) for p in parts]
    if not tables:
        return pd.DataFrame(columns=columns or META_COLUMNS)
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= frame["logged_at"] >= pd.Timestamp(since)
    if until is not None:
        keep &= frame["logged_at"] < pd.Timestamp(until)
    return frame[keep].sort_values("logged_at", kind="stable").reset_index(drop=True)


def snapshot_prediction_log(lake: Lake, dataset: str) -> SnapshotRef | None:
    """Pin the log's current parts as a versioned snapshot (id: hash of the part list)."""
    parts = log_parts(lake, dataset)
    if not parts:
        return None
    digest = hashlib.sha256("\n".join(p.file for p in parts).encode()).hexdigest()[:16]
    return lake.write_snapshot(LAYER, dataset, digest, parts, {"parents": []})
