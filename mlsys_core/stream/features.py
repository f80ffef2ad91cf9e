"""Feature views kept fresh by a stream: the declarations the offline store computes for
training, computed incrementally from an event log, micro-batch by micro-batch.

**What the stream knows at time t.** The offline store counts, at ``t``, a source row when
``t - window <= available < t`` (and, for open events, not ``closed < t``): everything as
known strictly before ``t``. The stream publishes the same rule applied to the rows it has
received, as of its watermark ``W`` (the newest event time seen minus the stream's allowed
lateness). A declared time is never before the event that reveals it (a departure delay is
known no earlier than the departure, a close no earlier than the closing event), so every
event that can change a value as of ``W`` has an event time before ``W``; once the
watermark has passed an event time, the event has arrived unless it is *late*. Hence, for
every entity and every published ``W``, the stream's value equals the offline value at
``W``: both read the rows available strictly before ``W``, and the stream has them all. A
value published as of ``W`` is what a model predicting at ``W`` would read offline, and its
age at a later request time is that time minus ``W`` (the freshness a server can export).

**Late events** (event time before the watermark when they arrive, or revealing a time the
declarations say was known before the watermark): values already published did not count
them and are not revised; the event still counts from this batch on, so every later value
agrees with the offline store again; and it is written to the job's ``late`` table with how
late it was. An event for a row the stream has forgotten (older than the stream's retention
and out of every window) starts that row afresh.

**History.** A log usually starts long after the data the models trained on: its first
events would find windows empty that the offline store fills from the lake. So a job with
no committed state can start from a :class:`StreamSeed`, the source's rows from before the
log (a clean lake snapshot): those whose timestamp is before the first event's time, and
that can still count. From then on the log tells every row from that time, and the seeded
rows give what happened before it, so the rule above holds from the first watermark.

**State and exactly-once.** The state is the received source rows that can still count
(merged by the stream's key: a version only fills columns still null). Each micro-batch
commits, as one lake snapshot, its per-view updates, late events, the new state, the
watermark and the consumed segments (see ``engine.py``): a crash before the commit leaves the
previous snapshot in force and the rerun writes the same content; a consumed segment is
never read again.

**Output.** Each micro-batch yields one :class:`ViewUpdate` per view: the entities whose
values changed, with the time ``as_of`` they are exact for. An entity not in an update did
not change: its previous value is exact as of the new ``as_of`` too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlsys_core.data.batches import text_frame
from mlsys_core.data.contract import REASON, clean_table, record_types
from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.data.sources import iter_jsonl, joined_columns, records_frame
from mlsys_core.features.keys import KeyIndex
from mlsys_core.features.offline import (
    NAT,
    NEVER,
    availability_ns,
    closes_ns,
    counted,
    hits,
    to_ns,
)
from mlsys_core.spec import ColumnRule, DatasetSpec, TableContract
from mlsys_core.spec.definitions import Aggregation, EventStream, WindowView, check_streams
from mlsys_core.stream.engine import StreamError, content_id, pending_segments, segment_id

ENGINE_VERSION = "2"  # bump when the values change, so a rerun batch is not taken for an old one
AS_OF = "as_of"
_VIEW = "view"
_ARRIVAL = "__arrival"
_SENT = "__sent"  # an event's row in its micro-batch as sent


class FeatureStreamJob(BaseModel):
    """One event stream of a dataset and the window views it keeps fresh."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Its lake table.")
    stream: EventStream
    views: list[WindowView] = Field(min_length=1)
    max_segments: int = Field(default=100, ge=1, description="Log files per micro-batch.")
    rules: dict[str, ColumnRule] = Field(
        default_factory=dict,
        description="The source contract's rules for the columns the state keeps. An event "
        "is checked as the lake checks a row (type, bounds, allowed values) and set aside "
        "with the lake's reason if it fails; it may leave a column out (an event is part "
        "of its row), and may carry a time as the data does or as ISO 8601.",
    )
    joined: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The kept columns the source writes across others (SourceSpec.joined): "
        "an event may send the parts, as the file does, joined as the lake joins them.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureStreamJob:
        if sorted(v.name for v in self.views) != sorted(self.stream.views):
            raise ValueError(f"the job's views must be exactly {sorted(self.stream.views)}")
        check_streams([self.stream], list(self.views))
        if stray := sorted(set(self.rules) - set(self.columns)):
            raise ValueError(f"rules for columns the job does not keep: {stray}")
        return self

    @property
    def columns(self) -> list[str]:
        """The source columns the state keeps: keys, timestamp and what the views read."""
        return _kept_columns(self.stream, self.views)

    @property
    def event_contract(self) -> TableContract:
        """What an event must meet: the rules, every column optional. Where the contract is
        silent, the timestamp is ISO 8601 UTC, a column a view sums, averages or rates
        over a threshold (or offsets a time by) is a number, and a column an availability
        starts from is a time, as both engines read them: text there is set aside, not
        counted as missing."""
        numbers = {c: ColumnRule(dtype="float") for c in _numeric_columns(self.views)}
        times = {c: ColumnRule(dtype="datetime") for c in _time_columns(self.views)}
        rules = {self.stream.timestamp: ColumnRule(dtype="datetime"), **times, **numbers}
        rules |= self.rules
        return TableContract(
            columns={c: r.model_copy(update={"nullable": True}) for c, r in rules.items()}
        )


def _numeric_columns(views: list[WindowView]) -> list[str]:
    keys = {c for v in views for c in [*v.entity.join_keys, v.timestamp]}
    read = [a.column for v in views for a in v.aggregations if a.numeric]
    offsets = [c for v in views for c in v.availability.offset_minutes]
    offsets += [c for v in views if v.closes for c in v.closes.offset_minutes]
    return [c for c in dict.fromkeys([*offsets, *read]) if c not in keys]


def _time_columns(views: list[WindowView]) -> list[str]:
    rules = [r for v in views for r in (v.availability, v.closes) if r is not None]
    return list(dict.fromkeys(r.from_column for r in rules if r.from_column))


def _kept_columns(stream: EventStream, views: list[WindowView]) -> list[str]:
    read = [c for v in views for c in v.source_columns]
    return list(dict.fromkeys([*stream.key, stream.timestamp, *read]))


def feature_stream_job(
    spec: DatasetSpec, stream: str | None = None, max_segments: int = 100
) -> FeatureStreamJob:
    """The job for one of the spec's event streams (the first when ``stream`` is None)."""
    if not spec.streams:
        raise StreamError(f"dataset {spec.name!r} declares no event streams")
    by_name = {s.name: s for s in spec.streams}
    chosen = by_name.get(stream or spec.streams[0].name)
    if chosen is None:
        raise StreamError(
            f"dataset {spec.name!r} has no event stream {stream!r} ({sorted(by_name)})"
        )
    by_view = {v.name: v for v in spec.feature_views}
    views: list[WindowView] = [by_view[n] for n in chosen.views]  # type: ignore[misc]
    contract = spec.contracts.get(chosen.source)
    declared = contract.columns if contract else {}
    source = next((s for s in spec.sources if s.name == chosen.source), None)
    kept = _kept_columns(chosen, views)
    return FeatureStreamJob(
        name=f"{spec.name}__{chosen.name}",
        stream=chosen,
        views=views,
        max_segments=max_segments,
        rules={c: declared[c] for c in kept if c in declared},
        joined={n: p for n, p in source.joined.items() if n in kept} if source else {},
    )


@dataclass(frozen=True)
class ViewUpdate:
    """One view's changed entities after a micro-batch: join keys and features, exact as of
    ``as_of`` (every event available strictly before it counted, none after)."""

    view: str
    join_keys: list[str]
    features: list[str]
    as_of: pd.Timestamp
    rows: pd.DataFrame
    # The watermark the previous micro-batch published (None: the first): the update is
    # exact on top of values as of it, and only on top of those.
    since: pd.Timestamp | None = None


class FeatureBatchOutcome(BaseModel):
    """What one micro-batch did (small and serialisable: a task's result)."""

    model_config = ConfigDict(frozen=True)

    snapshot: SnapshotRef | None
    segments: list[str]
    events_in: int
    late: int
    invalid: int
    state_rows: int
    watermark: str | None
    updated: dict[str, int] = Field(description="Entities written, per view.")
    seeded: int = Field(default=0, description="History rows the job started from.")
    invalid_reasons: dict[str, int] = Field(
        default_factory=dict, description="Why events were set aside: reason -> events."
    )


@dataclass(frozen=True)
class FeatureBatch:
    outcome: FeatureBatchOutcome
    updates: list[ViewUpdate]


@dataclass(frozen=True)
class StreamSeed:
    """Source rows known before the log starts, as a clean lake snapshot holds them; ``token``
    names them (a snapshot id), so a rerun of the first batch from other rows is another
    batch."""

    rows: pd.DataFrame
    token: str


def clean_seed(lake: Lake, job: FeatureStreamJob) -> StreamSeed | None:
    """The newest clean snapshot of the stream's source as a seed, only the columns the job
    keeps (None: the lake has none)."""
    source = job.stream.source
    snapshot = lake.latest("clean", source)
    if snapshot is None:
        return None
    rows = lake.read(snapshot, columns=job.columns)
    return StreamSeed(rows, f"clean/{source}/{snapshot.snapshot_id}")


def seed_rows(job: FeatureStreamJob, source: pd.DataFrame, until: int) -> pd.DataFrame:
    """The state a job starts from: the rows of ``source`` with a timestamp before ``until``
    (ns; the log tells every row from then on) that can still count once the watermark can
    be reached (``until`` minus the allowed lateness), typed as events are."""
    stream = job.stream
    if missing := sorted(set(job.columns) - set(source.columns)):
        raise StreamError(f"the history of stream {stream.name!r} has no columns {missing}")
    frame = source[job.columns].copy()
    stamp = pd.to_datetime(frame[stream.timestamp], utc=True, errors="coerce")
    frame[stream.timestamp] = stamp
    keep = stamp.notna().to_numpy() & (to_ns(stamp) < until)
    keep &= frame[stream.key].notna().all(axis=1).to_numpy()
    frame = frame[keep].reset_index(drop=True)
    for column in frame.columns:  # text as events hold it: objects, one type per column
        if isinstance(frame[column].dtype, pd.StringDtype | pd.CategoricalDtype):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame[_ROW] = _row_ids(frame, stream.key)
    frame = frame.drop_duplicates(_ROW, ignore_index=True)
    reachable = until - _ns_of(stream.allowed_lateness)
    return _Rows(frame, job).pruned(reachable).frame


def run_feature_batch(
    job: FeatureStreamJob,
    log: Path,
    lake: Lake,
    flush: bool = False,
    seed: Callable[[], StreamSeed | None] | None = None,
) -> FeatureBatch:
    """Process the next micro-batch of ``log`` (at most ``job.max_segments`` segments) and
    return each view's updated entities as of the new watermark.

    ``flush`` moves the watermark to the newest event time seen (the log is complete: the
    end of a bounded replay or a backfill). ``seed`` is called only when the job has no
    committed state yet: the history it starts from (see :func:`seed_rows`).
    """
    stream = job.stream
    previous = lake.latest("stream", job.name)
    meta = lake.manifest(previous) if previous else {}
    consumed: list[str] = meta.get("consumed", [])
    old_mark = _ns(meta.get("watermark"))
    newest_seen = _ns(meta.get("newest_event"))
    segments = pending_segments(log, set(consumed))[: job.max_segments]
    if not segments and not flush:
        return _nothing_new(previous, meta)
    segment_ids = [segment_id(p) for p in segments]
    raw = records_frame([r for p in segments for r in iter_jsonl(p)])
    types = _column_types(job, lake, meta, raw)
    events, invalid, sent = _typed_events(raw, job, types)
    state, history = _starting_state(job, lake, meta, events, seed)
    if not events.empty:
        newest = int(events[stream.time_column].max())
        newest_seen = newest if newest_seen is None else max(newest_seen, newest)
    # The rows this batch touches, as they were: what its events newly reveal is judged on them.
    hit = (
        np.isin(state[_ROW].to_numpy(np.uint64), events[_ROW].to_numpy(np.uint64))
        if not state.empty
        else np.zeros(0, dtype=bool)
    )
    before = _Rows(state[hit], job) if hit.any() else None
    merged = _Rows(_merge(state, hit, events, job), job)
    late = _late_events(events, sent, before, merged, job, old_mark)
    mark = old_mark
    if newest_seen is not None:
        lag = 0 if flush else pd.Timedelta(stream.allowed_lateness).value
        mark = newest_seen - lag if mark is None else max(mark, newest_seen - lag)
    updates: list[ViewUpdate] = []
    if mark is not None and len(merged.frame):
        in_batch = np.isin(merged.ids, events[_ROW].to_numpy())
        for view in job.views:
            rows = merged.views[view.name]
            values = rows.values_at(mark, rows.touched(in_batch, old_mark, mark))
            since = None if old_mark is None else _ts(old_mark)
            updates.append(
                ViewUpdate(
                    view.name, view.entity.join_keys, view.features, _ts(mark), values, since
                )
            )
        merged = merged.pruned(mark)

    batch_id = content_id(
        previous.snapshot_id if previous else "", *segment_ids, job.model_dump_json(),
        flush, ENGINE_VERSION, history.token if history is not None else "",
    )  # fmt: skip
    # One part for every view's updates (a view column; each view's columns, null elsewhere):
    # one file to make durable per batch, not one per view.
    published = [u.rows.assign(**{_VIEW: u.view}) for u in updates if not u.rows.empty]
    parts = []
    if published:
        frame = pd.concat(published, ignore_index=True).assign(**{AS_OF: _ts(mark)})
        parts.append(lake.write_part("stream", job.name, "updates", batch_id, frame))
    late_parts = [PartRef.model_validate(p) for p in meta.get("late_parts", [])]
    rejected = [f for f in (late, invalid) if not f.empty]
    if rejected:
        frame = text_frame(pd.concat(rejected, ignore_index=True))
        late_parts.append(lake.write_part("stream", job.name, "late", batch_id, frame))
    state_part = lake.write_part("stream", job.name, "state", batch_id, merged.frame)
    manifest = {
        "parents": [f"stream/{job.name}/{previous.snapshot_id}"] if previous else [],
        "consumed": [*consumed, *segment_ids],
        "watermark": _iso(mark),
        "newest_event": _iso(newest_seen),
        "state": state_part.model_dump(),
        "late_parts": [p.model_dump() for p in late_parts],
        "job": job.model_dump(mode="json"),
        "column_types": types,
    }
    if history is not None:
        manifest["seeded_from"] = {"rows": len(state), "source": history.token}
    # Only this batch's updates are the snapshot's data; the state and late parts ride along.
    snapshot = lake.write_snapshot("stream", job.name, batch_id, parts, manifest)
    outcome = FeatureBatchOutcome(
        snapshot=snapshot,
        segments=[p.name for p in segments],
        events_in=len(raw),
        late=len(late),
        invalid=len(invalid),
        state_rows=len(merged.frame),
        watermark=manifest["watermark"],
        updated={u.view: len(u.rows) for u in updates},
        seeded=len(state) if history is not None else 0,
        invalid_reasons=_reason_counts(invalid),
    )
    return FeatureBatch(outcome, updates)


def _reason_counts(invalid: pd.DataFrame) -> dict[str, int]:
    """Events per reason; an event with several reasons counts under each."""
    if invalid.empty:
        return {}
    reasons = invalid["_reason"].astype(str).str.split("; ").explode().value_counts()
    return {str(k): int(v) for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))}


def _starting_state(
    job: FeatureStreamJob,
    lake: Lake,
    meta: dict,
    events: pd.DataFrame,
    seed: Callable[[], StreamSeed | None] | None,
) -> tuple[pd.DataFrame, StreamSeed | None]:
    """The committed state; for a job that has published nothing and holds nothing, the
    seed's rows from before this batch's first event (and the seed)."""
    state = (
        lake.read_part(PartRef.model_validate(meta["state"]))
        if meta.get("state")
        else pd.DataFrame()
    )
    fresh = meta.get("watermark") is None and state.empty
    if seed is None or not fresh or events.empty or (history := seed()) is None:
        return state, None
    return seed_rows(job, history.rows, int(events[job.stream.time_column].min())), history


def read_updates(lake: Lake, snapshot: SnapshotRef) -> list[ViewUpdate]:
    """The updates one committed micro-batch published (to deliver them again)."""
    manifest = lake.manifest(snapshot)
    job = FeatureStreamJob.model_validate(manifest["job"])
    mark = _ns(manifest["watermark"])
    frame = lake.read(snapshot)
    out = []
    for view in job.views:
        columns = [*view.entity.join_keys, *view.features]
        if frame.empty:
            rows = pd.DataFrame(columns=columns)
        else:
            rows = frame.loc[frame[_VIEW] == view.name, columns].reset_index(drop=True)
            counts = [a.name for a in view.aggregations if a.function == "count"]
            rows[counts] = rows[counts].astype(np.int64)
        out.append(ViewUpdate(view.name, view.entity.join_keys, view.features, _ts(mark), rows))
    return out


def current_values(lake: Lake, job_name: str) -> list[ViewUpdate]:
    """Every entity the stream holds rows of, per view, as of its watermark: what a store
    that starts empty (or replaces a view wholesale) needs; any other entity is empty."""
    snapshot = lake.latest("stream", job_name)
    if snapshot is None:
        raise LookupError(f"stream job {job_name!r} has not run in {lake.root}")
    manifest = lake.manifest(snapshot)
    job = FeatureStreamJob.model_validate(manifest["job"])
    mark = _ns(manifest["watermark"])
    state = lake.read_part(PartRef.model_validate(manifest["state"]))
    out = []
    for view in job.views:
        if mark is None or state.empty:
            rows = pd.DataFrame(columns=[*view.entity.join_keys, *view.features])
        else:
            rows = view_values(view, state, mark)
        out.append(ViewUpdate(view.name, view.entity.join_keys, view.features, _ts(mark), rows))
    return out


# -- the computation -------------------------------------------------------------------------
_ROW = "__row"  # a row's identity: a hash of its key values


def view_values(view: WindowView, rows: pd.DataFrame, as_of: int) -> pd.DataFrame:
    """Every entity of ``rows`` with its features as of ``as_of`` (ns), straight from the
    rule: the rows with ``available < as_of <= end`` (end: availability + window, or the
    close if earlier); count 0 and nulls for an entity with nothing counting."""
    prepared = _ViewRows(view, _Columns(rows.reset_index(drop=True)))
    return prepared.values_at(as_of, np.ones(prepared.n_entities, dtype=bool))


class _Columns:
    """The stream's rows, with what the views compute from them memoized for one
    micro-batch: views that share a rule or an entity compute it once. It reads like a
    frame (``cols[name]``, ``len``), so the offline store's rule functions take it."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._series: dict[str, pd.Series] = {}
        self._memo: dict[tuple, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, column: str) -> pd.Series:
        if column not in self._series:
            self._series[column] = self.frame[column]
        return self._series[column]

    def _memoized(self, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def numeric(self, column: str) -> np.ndarray:
        return self._memoized(
            ("numeric", column),
            lambda: pd.to_numeric(self[column], errors="coerce").to_numpy(np.float64),
        )

    def counted(self, column: str) -> np.ndarray:
        return self._memoized(("counted", column), lambda: counted(self[column]))

    def hits(self, agg: Aggregation) -> np.ndarray:
        key = ("hits", agg.column, agg.threshold, str(agg.positive))
        return self._memoized(key, lambda: hits(self[agg.column], agg.threshold, agg.positive))

    def available(self, view: WindowView) -> np.ndarray:
        key = ("available", view.timestamp, view.availability.model_dump_json())
        return self._memoized(key, lambda: availability_ns(view, self))  # type: ignore[arg-type]

    def closed(self, view: WindowView) -> np.ndarray:
        key = ("closed", view.timestamp, view.closes and view.closes.model_dump_json())
        return self._memoized(key, lambda: closes_ns(view, self))  # type: ignore[arg-type]

    def codes(self, keys: list[str]) -> np.ndarray:
        return self._memoized(("codes", *keys), lambda: KeyIndex.fit(self.frame, keys)[1])


class _ViewRows:
    """One view's declared times, entity codes and values over the stream's rows, computed
    once per micro-batch."""

    def __init__(self, view: WindowView, cols: _Columns) -> None:
        self.view = view
        self.cols = cols
        self.frame = cols.frame
        self.avail = cols.available(view)
        self.known = self.avail != NAT
        self.closed = cols.closed(view)
        self.code = cols.codes(view.entity.join_keys)  # dense entity codes; -1: a null key
        self.n_entities = int(self.code.max(initial=-1)) + 1
        self.end = {
            w: np.minimum(self.closed, np.where(self.known, self.avail, 0) + _ns_of(w))
            for w in {a.window for a in view.aggregations}
        }

    def available(self) -> np.ndarray:
        return self.avail

    def known_close(self) -> np.ndarray:
        return np.where(self.closed == NEVER, NAT, self.closed)

    def touched(self, in_batch: np.ndarray, old_mark: int | None, mark: int) -> np.ndarray:
        """Which entities' values may differ as of ``mark`` from ``old_mark``: those of rows
        the batch changed, of rows whose time to count or to stop counting came in between,
        and, for time-dependent features (mean_age), of rows counting now."""
        known = self.known
        if old_mark is None:
            hit = known
        else:
            hit = known & (in_batch | ((old_mark <= self.avail) & (self.avail < mark)))
            for end in self.end.values():
                hit |= known & (old_mark <= end) & (end < mark)
                if self.view.time_dependent:
                    hit |= known & (self.avail < mark) & (mark <= end)
        chosen = np.zeros(self.n_entities, dtype=bool)
        chosen[self.code[hit & (self.code >= 0)]] = True
        return chosen

    def values_at(self, as_of: int, entities: np.ndarray) -> pd.DataFrame:
        """The features of the entities marked in ``entities`` (by code), as of ``as_of``."""
        view, code = self.view, self.code
        keys = view.entity.join_keys
        wanted = np.flatnonzero(entities)
        first_row = np.full(self.n_entities, -1, dtype=np.int64)
        valid_code = np.flatnonzero(code >= 0)
        first_row[code[valid_code[::-1]]] = valid_code[::-1]  # the first row of each entity
        picked = first_row[wanted]
        out: dict[str, np.ndarray] = {k: self.cols[k].to_numpy()[picked] for k in keys}
        for agg in view.aggregations:
            end = self.end[agg.window]
            counting = (code >= 0) & self.known & (self.avail < as_of) & (as_of <= end)
            values = self.cols.numeric(agg.column)
            valid = counting & self.cols.counted(agg.column)
            at = code[valid]
            n = np.bincount(at, minlength=self.n_entities)[wanted]
            if agg.function == "count":
                out[agg.name] = n.astype(np.int64)
                continue
            if agg.function in ("sum", "mean"):
                weights = values[valid]
            elif agg.function == "rate":
                weights = self.cols.hits(agg)[valid].astype(np.float64)
            else:  # mean_age, in minutes
                weights = (as_of - self.avail[valid]).astype(np.float64) / 60e9
            total = np.bincount(at, weights=weights, minlength=self.n_entities)[wanted]
            if agg.function == "sum":
                out[agg.name] = total  # 0 for an empty window, as offline
                continue
            out[agg.name] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        return pd.DataFrame(out)


class _Rows:
    """The stream's rows (the state) with every view's arrays."""

    def __init__(self, frame: pd.DataFrame, job: FeatureStreamJob) -> None:
        self.job = job
        self.frame = frame.reset_index(drop=True)
        self.ids = self.frame[_ROW].to_numpy(np.uint64)
        cols = _Columns(self.frame)
        self.views = {v.name: _ViewRows(v, cols) for v in job.views}

    def pruned(self, mark: int) -> _Rows:
        """Without the rows that can no longer count at any time from ``mark`` on: in every
        view, out of every window (or never available and older than the retention)."""
        stream = self.job.stream
        stamp = to_ns(self.frame[stream.timestamp])
        old = stamp < mark - _ns_of(stream.retention)
        done = np.ones(len(self.frame), dtype=bool)
        for rows in self.views.values():
            finished = rows.known & (np.maximum.reduce(list(rows.end.values())) < mark)
            done &= finished | (~rows.known & old)
        if not done.any():
            return self
        return _Rows(self.frame[~done], self.job)


def _merge(
    state: pd.DataFrame, hit: np.ndarray, events: pd.DataFrame, job: FeatureStreamJob
) -> pd.DataFrame:
    """The state with the batch's versions merged in by key (``hit``: the state rows they
    touch): a column, once known, stays."""
    columns = [*job.columns, _ROW]
    if events.empty:
        return state[columns] if not state.empty else pd.DataFrame(columns=columns)
    ordered = events.sort_values([job.stream.time_column, _ARRIVAL], kind="stable")[columns]
    if state.empty:
        untouched, changed = None, ordered
    else:
        untouched = state.loc[~hit, columns]
        changed = _concat_rows([state.loc[hit, columns], ordered])
    if changed[_ROW].duplicated().any():
        changed = changed.groupby(_ROW, sort=False).first().reset_index()[columns]
    if untouched is None or untouched.empty:
        return changed.reset_index(drop=True)
    return _concat_rows([untouched, changed])


def _concat_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames' rows one after another. A column without a value in one frame (a batch
    whose events do not tell it yet) takes the type another frame gives it: pandas leaves
    such columns out when it picks a column's type, and is to stop doing so, which would
    turn the state's numbers and times into objects. Integer columns, which cannot hold a
    missing value, are left as pandas joins them."""
    typed: dict[str, np.dtype | pd.api.extensions.ExtensionDtype] = {}
    for frame in frames:
        for column in frame.columns:
            if column not in typed and frame[column].notna().any():
                typed[column] = frame[column].dtype
    cast = []
    for frame in frames:
        retype = {
            c: typed[c]
            for c in frame.columns
            if c in typed
            and frame[c].dtype != typed[c]
            and typed[c].kind not in "iub"
            and frame[c].isna().all()
        }
        cast.append(frame.astype(retype) if retype else frame)  # astype({}) would copy
    return pd.concat(cast, ignore_index=True)


def _late_events(
    events: pd.DataFrame,
    sent: pd.DataFrame,
    before: _Rows | None,
    after: _Rows,
    job: FeatureStreamJob,
    old_mark: int | None,
) -> pd.DataFrame:
    """Events that arrived after the watermark passed them: their event time, or a time they
    revealed (an availability or close their row did not have before), is before the
    previous watermark. As they were sent (``sent``, row for row with ``events``)."""
    if old_mark is None or events.empty:
        return pd.DataFrame()
    stream = job.stream
    where = (
        pd.Index(before.ids).get_indexer(after.ids)
        if before is not None
        else np.full(len(after.ids), -1)
    )
    revealed = np.full(len(after.ids), np.iinfo(np.int64).max, dtype=np.int64)
    for name, rows in after.views.items():
        olds = before.views[name] if before is not None else None
        for rule in (_ViewRows.available, _ViewRows.known_close):
            new = rule(rows)
            old = np.where(where >= 0, rule(olds)[where], NAT) if olds is not None else NAT
            newly = (old == NAT) & (new != NAT)
            revealed = np.where(newly, np.minimum(revealed, new), revealed)
    per_event = revealed[pd.Index(after.ids).get_indexer(events[_ROW].to_numpy(np.uint64))]
    first = np.minimum(events[stream.time_column].to_numpy(np.int64), per_event)
    late = first < old_mark
    return sent[late].assign(_reason="late", _late_by_s=(old_mark - first[late]) / 1e9)


def _nothing_new(previous: SnapshotRef | None, meta: dict) -> FeatureBatch:
    rows = meta.get("state", {}).get("rows", 0)
    return FeatureBatch(
        FeatureBatchOutcome(
            snapshot=previous, segments=[], events_in=0, late=0, invalid=0,
            state_rows=rows, watermark=meta.get("watermark"), updated={},
        ),
        [],
    )  # fmt: skip


def _column_types(
    job: FeatureStreamJob, lake: Lake, meta: dict, raw: pd.DataFrame
) -> dict[str, str]:
    """The types of the kept columns the event contract leaves open (keys, text), recorded
    once as ingest records them: the source's types in the lake when it has them, else
    those of the first events with values. A JSON producer may send a key as 7 in one
    event and "T7" in another; typed once, each is read (or set aside) as the lake would."""
    open_columns = [c for c in job.columns if c not in job.event_contract.columns]
    known = meta.get("column_types")
    if known is None:
        ref = lake.latest("raw", job.stream.source)
        recorded = lake.manifest(ref).get("column_types", {}) if ref else {}
        known = {c: t for c, t in recorded.items() if c in open_columns}
    return record_types(known, raw[[c for c in open_columns if c in raw.columns]])


def _joined(raw: pd.DataFrame, job: FeatureStreamJob) -> pd.DataFrame:
    """Events that send a joined column's parts (a date and a time of day), given the
    column, by the lake's function; an event that sends the column itself keeps it."""
    todo = {n: p for n, p in job.joined.items() if set(p) <= set(raw.columns)}
    if not todo or raw.empty:
        return raw
    parts = list(dict.fromkeys(x for p in todo.values() for x in p))
    made = joined_columns(raw[parts].copy(), todo, f"stream {job.name}")
    raw = raw.copy()
    for name in todo:
        raw[name] = (
            made[name] if name not in raw else raw[name].where(raw[name].notna(), made[name])
        )
    return raw


def _typed_events(
    raw: pd.DataFrame, job: FeatureStreamJob, types: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Events with an event time (int ns), values typed and checked as the lake types and
    checks its rows (``types``: those of the columns the contract leaves open), and a row
    id; those set aside, with the reason; and the events kept, as they were sent."""
    stream = job.stream
    raw = _joined(raw, job)
    if raw.empty:
        columns = [*job.columns, stream.time_column, _ARRIVAL, _ROW]
        return pd.DataFrame(columns=columns), pd.DataFrame(), pd.DataFrame()
    if stream.time_column not in raw:
        raise StreamError(f"events have no event-time column {stream.time_column!r}")
    if missing := sorted(set(stream.key) - set(raw.columns)):
        raise StreamError(f"events have no key columns {missing}")
    events = raw.copy()
    for col in job.columns:
        if col not in events:
            events[col] = None  # an event kind that does not carry it: not known yet
    times = pd.to_datetime(events[stream.time_column], utc=True, errors="coerce", format="ISO8601")
    no_key = events[stream.key].isna().any(axis=1).to_numpy()
    no_time = times.isna().to_numpy()
    bad = no_time | no_key
    reasons = np.where(no_time, "no valid event time", "a key column is null")
    invalid = raw[bad].assign(_reason=reasons[bad])
    events[stream.time_column] = to_ns(times)
    events[_SENT] = np.arange(len(raw))
    # The values as the lake reads and checks them: what it would quarantine, no view counts.
    checked = clean_table(
        events[~bad], job.event_contract, f"stream {job.name}", types=types, live=True
    )
    if len(checked.quarantined):
        refused = raw.iloc[checked.quarantined[_SENT].to_numpy()]
        refused = refused.assign(_reason=checked.quarantined[REASON].to_numpy())
        invalid = pd.concat([invalid, refused], ignore_index=True)
    events = checked.clean
    sent = raw.iloc[events[_SENT].to_numpy()].reset_index(drop=True)
    events[_ARRIVAL] = np.arange(len(events))
    events[_ROW] = _row_ids(events, stream.key)
    return events[[*job.columns, stream.time_column, _ARRIVAL, _ROW]], invalid, sent


def _row_ids(frame: pd.DataFrame, key: list[str]) -> np.ndarray:
    """A 64-bit hash of each row's key values; a whole number hashes alike as int or float
    (JSON gives 7 or 7.0 depending on the rest of the segment), and a time alike at any
    resolution (events' are parsed to nanoseconds, a lake's are often microseconds)."""
    normal = {}
    for col in key:
        values = frame[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            values = values.dt.as_unit("ns")
        elif pd.api.types.is_numeric_dtype(values):
            numbers = values.astype(np.float64)
            if np.all(np.mod(numbers, 1) == 0):
                values = numbers.astype(np.int64)
        normal[col] = values.astype(object) if values.dtype == object else values
    return pd.util.hash_pandas_object(pd.DataFrame(normal), index=False).to_numpy(np.uint64)


def _ns_of(delta: timedelta) -> int:
    return pd.Timedelta(delta).value


def _ns(text: str | None) -> int | None:
    return None if text is None else pd.Timestamp(text).as_unit("ns").value


def _ts(value: int | None) -> pd.Timestamp:
    return pd.Timestamp(value, unit="ns", tz="UTC") if value is not None else pd.NaT


def _iso(value: int | None) -> str | None:
    return None if value is None else _ts(value).isoformat()


def event_log_dir(state_root: Path, dataset: str, stream: str) -> Path:
    """Where the embedded event log of a dataset's stream lives inside the state folder."""
    return Path(state_root) / "events" / dataset / stream


class StreamLag(BaseModel):
    """How far a feature stream is behind its log: segments not consumed yet, and the newest
    event time in the log (consumed or not) minus the watermark."""

    model_config = ConfigDict(frozen=True)

    job: str
    pending_segments: int
    newest_event: str | None
    watermark: str | None
    lag_s: float | None = Field(description="Newest event in the log minus the watermark.")

    def above(self, max_lag_s: float | None, max_pending: int | None) -> bool:
        """Whether either measure is above its threshold (None: not checked)."""
        late = max_lag_s is not None and self.lag_s is not None and self.lag_s > max_lag_s
        behind = max_pending is not None and self.pending_segments > max_pending
        return late or behind


def stream_lag(job: FeatureStreamJob, log: Path, lake: Lake) -> StreamLag:
    """The stream's lag now. Segments are named in the order they were written, so the
    newest event not consumed yet is in the last pending segment (read alone)."""
    previous = lake.latest("stream", job.name)
    meta = lake.manifest(previous) if previous else {}
    pending = pending_segments(log, set(meta.get("consumed", [])))
    newest = _ns(meta.get("newest_event"))
    if pending:
        times = pd.to_datetime(
            pd.Series([r.get(job.stream.time_column) for r in iter_jsonl(pending[-1])]),
            utc=True,
            errors="coerce",
            format="ISO8601",
        ).dropna()
        if len(times):
            last = int(to_ns(times).max())
            newest = last if newest is None else max(newest, last)
    mark = _ns(meta.get("watermark"))
    # Nothing published yet: no lag by event time (the pending segments say how far behind).
    lag = (newest - mark) / 1e9 if newest is not None and mark is not None else None
    return StreamLag(
        job=job.name,
        pending_segments=len(pending),
        newest_event=_iso(newest),
        watermark=meta.get("watermark"),
        lag_s=lag,
    )
