"""The micro-batch engine: read new log segments, apply operators, window on event time,
emit windows the watermark has passed, and commit output and state in one snapshot.

Exactly-once by construction: a micro-batch's outputs, its late events, the open windows'
partial aggregates, the watermark and the list of consumed segments are committed together
as one immutable lake snapshot. A crash before the commit leaves the previous snapshot in
force, and the rerun reprocesses the same segments into the same content-named parts; a
segment already consumed is never read again. So rerunning over the same events gives the
same results with no double counting.

The embedded event log is a folder of JSON-lines segments, each dropped in whole (written
under a temporary name, then renamed) and never changed. At scale, a partitioned log with
consumer offsets (Kafka, Redpanda or Kinesis) replaces it: a segment becomes a
(partition, offset range), and the consumed list becomes committed offsets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.data.batches import text_frame
from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.data.sources import file_sha256, iter_jsonl, records_frame
from mlsys_core.stream.job import DeriveOp, FilterOp, JoinOp, StreamJob

ENGINE_VERSION = "1"
WINDOW_START, WINDOW_END = "window_start", "window_end"
_COUNT = "__count"
TableReader = Callable[[str], pd.DataFrame]


class StreamError(ValueError):
    """The job or its events cannot be processed as declared."""


class BatchOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    snapshot: SnapshotRef | None
    segments: list[str]
    events_in: int
    late: int
    invalid: int
    windows_emitted: int
    watermark: str | None


def segment_id(path: Path) -> str:
    """A segment's name and content hash: a segment rewritten under its name is new."""
    return f"{path.name}:{file_sha256(path)[:16]}"


def pending_segments(folder: Path, consumed: set[str]) -> list[Path]:
    """Log segments not yet consumed, oldest name first; hidden/temporary files are skipped."""
    if not folder.is_dir():
        raise StreamError(f"event log {folder} does not exist")
    files = [
        p for p in sorted(folder.glob("*.jsonl")) if p.is_file() and not p.name.startswith(".")
    ]
    return [p for p in files if segment_id(p) not in consumed]


def apply_operators(events: pd.DataFrame, job: StreamJob, read_table: TableReader) -> pd.DataFrame:
    for op in job.operators:
        if isinstance(op, FilterOp):
            events = events[_compare(events, op.column, op.op, op.value)]
        elif isinstance(op, DeriveOp):
            events = events.assign(**{op.name: _compare(events, op.column, op.op, op.value)})
        elif isinstance(op, JoinOp):
            events = _join(events, op, read_table(op.table), job.event_time)
    return events.reset_index(drop=True)


def _compare(frame: pd.DataFrame, column: str, op: str, value: object) -> pd.Series:
    if column not in frame:
        raise StreamError(f"operator needs column {column!r}, events have {sorted(frame)}")
    values = frame[column]
    if op == "notnull":
        return values.notna()
    if isinstance(value, int | float):
        values = pd.to_numeric(values, errors="coerce")
    result = {
        "eq": values == value,
        "ne": values != value,
        "gt": values > value,
        "ge": values >= value,
        "lt": values < value,
        "le": values <= value,
    }[op]
    return result.fillna(False).astype(bool)


def _join(events: pd.DataFrame, op: JoinOp, table: pd.DataFrame, event_time: str) -> pd.DataFrame:
    right_keys = list(op.on.values())
    wanted = [*right_keys, *op.columns] + ([op.time_column] if op.time_column else [])
    if missing := sorted(set(wanted) - set(table.columns)):
        raise StreamError(f"join with {op.table!r}: it has no columns {missing}")
    right = table[wanted].rename(
        columns={**op.columns, **{right: left for left, right in op.on.items()}}
    )
    left_keys = list(op.on)
    if op.time_column is None:
        right = right.drop_duplicates(left_keys, keep="last")
        return events.merge(right, on=left_keys, how="left", validate="many_to_one")
    right = right.rename(columns={op.time_column: "__right_time"})
    right["__right_time"] = pd.to_datetime(right["__right_time"], utc=True)
    left = events.assign(__order=np.arange(len(events)))
    left = left.sort_values(event_time, kind="stable")
    joined = pd.merge_asof(
        left,
        right.dropna(subset=["__right_time"]).sort_values("__right_time", kind="stable"),
        left_on=event_time,
        right_on="__right_time",
        by=left_keys,
        direction="backward",  # never a row from after the event
        tolerance=pd.Timedelta(op.tolerance) if op.tolerance else None,
    )
    return joined.sort_values("__order").drop(columns=["__order", "__right_time"])


def assign_windows(times: pd.Series, job: StreamJob) -> pd.DataFrame:
    """Row index and window start for every window each event falls in."""
    step = pd.Timedelta(job.window.step).value
    per_event = int(job.window.size / job.window.step)
    ns = times.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    last_start = ns - np.mod(ns, step)  # the newest window holding the event
    rows = np.repeat(np.arange(len(ns)), per_event)
    starts = np.repeat(last_start, per_event) - np.tile(np.arange(per_event), len(ns)) * step
    return pd.DataFrame({"row": rows, WINDOW_START: pd.to_datetime(starts, utc=True)})


def partial_aggregates(events: pd.DataFrame, job: StreamJob) -> pd.DataFrame:
    """Per key and window: the row count and the sums that every aggregate derives from."""
    windows = assign_windows(events[job.event_time], job)
    values = events.iloc[windows["row"].to_numpy()].reset_index(drop=True)
    frame = values[job.group_by].copy()
    frame[WINDOW_START] = windows[WINDOW_START].to_numpy()
    frame[_COUNT] = 1
    for column in _summed_columns(job):
        frame[f"sum:{column}"] = pd.to_numeric(values[column], errors="coerce").astype(float)
        frame[f"n:{column}"] = frame[f"sum:{column}"].notna().astype(int)
    return _group(frame, job)


def _summed_columns(job: StreamJob) -> list[str]:
    return sorted({a.column for a in job.aggregates if a.column})


def _group(frame: pd.DataFrame, job: StreamJob) -> pd.DataFrame:
    by = [*job.group_by, WINDOW_START]
    if frame.empty:
        return frame
    return frame.groupby(by, dropna=False, sort=True).sum(min_count=0).reset_index()


def finish(partials: pd.DataFrame, job: StreamJob) -> pd.DataFrame:
    """Emitted rows: keys, the window and each aggregate."""
    out = partials[[*job.group_by, WINDOW_START]].copy()
    out[WINDOW_END] = out[WINDOW_START] + pd.Timedelta(job.window.size)
    for agg in job.aggregates:
        if agg.fn == "count":
            out[agg.name] = partials[_COUNT].astype("int64")
        elif agg.fn == "sum":
            out[agg.name] = partials[f"sum:{agg.column}"]
        else:
            n = partials[f"n:{agg.column}"]
            out[agg.name] = (partials[f"sum:{agg.column}"] / n).where(n > 0)
    return out.reset_index(drop=True)


def content_id(*parts: object) -> str:
    """A batch's id from what it consumed, so a rerun of the same batch writes the same parts."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:20]


def run_micro_batch(
    job: StreamJob, log: Path, lake: Lake, read_table: TableReader, flush: bool = False
) -> BatchOutcome:
    """Process the next micro-batch of ``log`` (at most ``job.max_segments`` segments).

    ``flush`` emits every open window regardless of the watermark (end of a bounded replay).
    """
    previous = lake.latest("stream", job.name)
    meta = lake.manifest(previous) if previous else {}
    consumed: list[str] = meta.get("consumed", [])
    watermark = pd.Timestamp(meta["watermark"]) if meta.get("watermark") else None
    segments = pending_segments(log, set(consumed))[: job.max_segments]
    windows_open = bool(meta.get("state", {}).get("rows"))
    if not segments and not (flush and windows_open):  # a rerun of a done flush: no-op
        return BatchOutcome(
            snapshot=previous, segments=[], events_in=0, late=0, invalid=0,
            windows_emitted=0, watermark=meta.get("watermark"),
        )  # fmt: skip
    segment_ids = [segment_id(p) for p in segments]
    events = records_frame([r for p in segments for r in iter_jsonl(p)])
    events_in = len(events)
    state = lake.read_part(PartRef.model_validate(meta["state"])) if meta.get("state") else None

    events, invalid = _typed_times(events, job)
    late = pd.DataFrame()
    if watermark is not None and not events.empty:
        is_late = events[job.event_time] < watermark
        late = events[is_late].assign(
            _late_by_s=(watermark - events.loc[is_late, job.event_time]).dt.total_seconds()
        )
        events = events[~is_late]
    if not events.empty:
        events = apply_operators(events, job, read_table)
    partials = partial_aggregates(events, job) if not events.empty else pd.DataFrame()
    if state is not None and not state.empty:
        partials = _group(pd.concat([state, partials], ignore_index=True), job)
    if not events.empty:
        newest = events[job.event_time].max() - pd.Timedelta(job.allowed_lateness)
        watermark = newest if watermark is None else max(watermark, newest)
    if partials.empty:
        emitted, open_windows = partials, partials
    elif flush:
        emitted, open_windows = partials, partials.iloc[0:0]
    else:
        ends = partials[WINDOW_START] + pd.Timedelta(job.window.size)
        done = ends <= watermark
        emitted, open_windows = partials[done], partials[~done]
    results = finish(emitted, job) if not emitted.empty else pd.DataFrame()

    batch_id = content_id(
        previous.snapshot_id if previous else "", *segment_ids, job.model_dump_json(),
        flush, ENGINE_VERSION,
    )  # fmt: skip
    parts = [PartRef.model_validate(p) for p in meta.get("parts", [])]
    late_parts = [PartRef.model_validate(p) for p in meta.get("late_parts", [])]
    if not results.empty:
        parts.append(lake.write_part("stream", job.name, "windows", batch_id, results))
    if not late.empty or not invalid.empty:
        pieces = [f for f in (late.assign(_reason="late"), invalid) if not f.empty]
        rejected = pd.concat(pieces, ignore_index=True)
        late_parts.append(
            lake.write_part("stream", job.name, "late", batch_id, text_frame(rejected))
        )
    state_part = lake.write_part("stream", job.name, "state", batch_id, open_windows)
    manifest = {
        "parents": [f"stream/{job.name}/{previous.snapshot_id}"] if previous else [],
        "consumed": [*consumed, *segment_ids],
        "watermark": watermark.isoformat() if watermark is not None else None,
        "state": state_part.model_dump(),
        "late_parts": [p.model_dump() for p in late_parts],
        "job": job.model_dump(mode="json"),
    }
    snapshot = lake.write_snapshot("stream", job.name, batch_id, parts, manifest)
    return BatchOutcome(
        snapshot=snapshot,
        segments=[p.name for p in segments],
        events_in=events_in,
        late=len(late),
        invalid=len(invalid),
        windows_emitted=len(results),
        watermark=manifest["watermark"],
    )


def _typed_times(events: pd.DataFrame, job: StreamJob) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events with a parsed event time, and those whose time is missing or unparsable."""
    if events.empty:
        return events, pd.DataFrame()
    if job.event_time not in events:
        raise StreamError(f"events have no event-time column {job.event_time!r}")
    if missing := sorted(set(job.group_by) - set(events.columns)):
        raise StreamError(f"events have no key columns {missing}")
    times = pd.to_datetime(events[job.event_time], utc=True, errors="coerce", format="ISO8601")
    bad = times.isna()
    invalid = events[bad].assign(_reason="no valid event time")
    return events[~bad].assign(**{job.event_time: times[~bad]}), invalid


def read_windows(lake: Lake, job_name: str) -> pd.DataFrame:
    """The job's emitted windows so far, for the feature store and for tests."""
    snapshot = lake.latest("stream", job_name)
    if snapshot is None:
        raise LookupError(f"stream job {job_name!r} has not emitted anything in {lake.root}")
    frame = lake.read(snapshot)
    if frame.empty:
        return frame
    keys = lake.manifest(snapshot)["job"]["group_by"]
    return frame.sort_values([WINDOW_START, *keys]).reset_index(drop=True)
