"""One definition, two engines: the stream job's values equal the offline store's
point-in-time values for every entity at every time the stream published, on real
flights replayed as events (late events included) and on a second dataset; and the
stream commits exactly once."""

from __future__ import annotations

import json
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys_core.data.lake import Lake, PartRef
from mlsys_core.datasets.nycflights13.spec import nycflights13_spec
from mlsys_core.features.offline import OfflineStore
from mlsys_core.spec import ColumnRule
from mlsys_core.spec.definitions import (
    Aggregation,
    Availability,
    Entity,
    EventKind,
    EventStream,
    WindowView,
)
from mlsys_core.stream.engine import StreamError
from mlsys_core.stream.features import (
    FeatureStreamJob,
    StreamSeed,
    ViewUpdate,
    current_values,
    feature_stream_job,
    read_updates,
    run_feature_batch,
)
from mlsys_core.stream.replay import source_events, write_segments

NY = "America/New_York"


# -- helpers -----------------------------------------------------------------------------------
class Published:
    """What a store fed by the stream's updates holds: per view, entity -> feature values."""

    def __init__(self, job: FeatureStreamJob) -> None:
        self.job = job
        self.values: dict[str, dict[tuple, dict]] = {v.name: {} for v in job.views}

    def apply(self, updates: list[ViewUpdate]) -> None:
        for update in updates:
            table = self.values[update.view]
            for row in update.rows.to_dict("records"):
                table[tuple(row[k] for k in update.join_keys)] = row

    def frame(self, view: WindowView, entities: pd.DataFrame) -> pd.DataFrame:
        """The stored values of ``entities``; one never written is empty (count 0, nulls)."""
        keys = view.entity.join_keys
        empty = {a.name: (0 if a.function == "count" else np.nan) for a in view.aggregations}
        table = self.values[view.name]
        rows = [
            {f: table.get(tuple(e), empty)[f] for f in view.features}
            for e in entities[keys].itertuples(index=False, name=None)
        ]
        return pd.DataFrame(rows, columns=view.features, index=entities.index)


def _offline(store: OfflineStore, view: WindowView, entities: pd.DataFrame, as_of) -> pd.DataFrame:
    rows = entities.assign(__t=as_of)
    return store.get_historical_features(rows, view.features, "__t")[view.features]


def _mismatch(stream: pd.DataFrame, offline: pd.DataFrame, view: WindowView) -> np.ndarray:
    """Rows where any feature differs (beyond float rounding; ages to a millisecond)."""
    bad = np.zeros(len(stream), dtype=bool)
    for agg in view.aggregations:
        a = stream[agg.name].to_numpy(np.float64)
        b = offline[agg.name].to_numpy(np.float64)
        atol = 1e-5 if agg.function == "mean_age" else 1e-9
        same = np.isclose(a, b, rtol=1e-9, atol=atol) | (np.isnan(a) & np.isnan(b))
        bad |= ~same
    return bad


def _received(events: pd.DataFrame, stream: EventStream) -> pd.DataFrame:
    """Brute force: each row as the received versions tell it (first known value wins)."""
    ordered = events.sort_values(stream.time_column, kind="stable")
    merged = ordered.groupby(stream.key, sort=False, dropna=False).first().reset_index()
    return merged.drop(columns=[stream.time_column, stream.kind_column])


def _drain(job: FeatureStreamJob, log: Path, lake: Lake, on_batch=None) -> list:
    outcomes = []
    while True:
        batch = run_feature_batch(job, log, lake)
        if not batch.outcome.segments:
            return outcomes
        outcomes.append(batch.outcome)
        if on_batch:
            on_batch(batch)


# -- real flights ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flights_job() -> FeatureStreamJob:
    return feature_stream_job(nycflights13_spec(), max_segments=1)


@pytest.fixture(scope="module")
def stretch(real_tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A day of real flights from all three airports (about 1,000), from the evening before."""
    flights = real_tables["flights"]
    local = pd.to_datetime(flights["time_hour"], utc=True).dt.tz_convert(NY)
    start = pd.Timestamp("2013-03-07 18:00", tz=NY)
    return flights[(local >= start) & (local < start + pd.Timedelta(hours=24))]


def replay_and_compare(
    job: FeatureStreamJob, events: pd.DataFrame, delay_min: np.ndarray, folder: Path, rows: int
) -> dict:
    """Replay ``events`` with each one reaching the log ``delay_min`` minutes after its event
    time, micro-batch by micro-batch; after every batch, compare what a store fed by the
    updates holds, for every entity of every view, with the offline store at the watermark:

    - computed from what the stream had received by then: equal, always;
    - computed from every event (the truth): equal whenever no late event was missing.
    """
    stream, views = job.stream, job.views
    times = pd.to_datetime(events[stream.time_column], utc=True)
    arrival = times + pd.to_timedelta(delay_min, unit="min")
    log_order = np.argsort(arrival.to_numpy(), kind="stable")
    log_events = events.iloc[log_order].reset_index(drop=True)
    write_segments(log_events, folder / "log", rows_per_segment=rows)
    is_late = delay_min > pd.Timedelta(stream.allowed_lateness) / pd.Timedelta(minutes=1)
    full = _received(events, stream)
    entities = {v.name: full[v.entity.join_keys].dropna().drop_duplicates() for v in views}
    truth_store = OfflineStore(views, {stream.source: full})
    published, lake = Published(job), Lake(folder / "lake")
    stats = {"arrived": 0, "checked": 0, "skew_cells": 0, "pending": [], "max": {}}

    def check(batch) -> None:
        published.apply(batch.updates)
        stats["arrived"] += batch.outcome.events_in
        received = _received(log_events.iloc[: stats["arrived"]], stream)
        known_store = OfflineStore(views, {stream.source: received})
        pending = int(is_late.sum() - is_late[log_order[: stats["arrived"]]].sum())
        stats["pending"].append(pending)
        as_of = pd.Timestamp(batch.outcome.watermark)
        for view in views:
            ours = published.frame(view, entities[view.name])
            expected = _offline(known_store, view, entities[view.name], as_of)
            assert not _mismatch(ours, expected, view).any(), (view.name, as_of)
            skew = _mismatch(ours, _offline(truth_store, view, entities[view.name], as_of), view)
            stats["skew_cells"] += int(skew.sum())
            assert pending or not skew.any(), (view.name, as_of)
            stats["checked"] += len(ours)
            for feature in view.features:  # the largest value published, per feature
                top = np.nanmax(ours[feature].to_numpy(np.float64), initial=0.0)
                stats["max"][feature] = max(stats["max"].get(feature, 0.0), top)

    outcomes = _drain(job, folder / "log", lake, check)
    assert sum(o.events_in for o in outcomes) == len(events)
    assert stats["pending"][-1] == 0
    # Exactly the delayed events were late, and they are recorded with their lateness.
    assert sum(o.late for o in outcomes) == int(is_late.sum())
    snapshot = lake.latest("stream", job.name)
    late_parts = lake.manifest(snapshot)["late_parts"]
    if is_late.any():
        late_rows = pd.concat([lake.read_part(PartRef.model_validate(p)) for p in late_parts])
        columns = [*stream.key, stream.kind_column]
        expected_late = sorted(map(tuple, events.loc[is_late, columns].astype(str).to_numpy()))
        assert sorted(map(tuple, late_rows[columns].astype(str).to_numpy())) == expected_late
        assert (late_rows["_late_by_s"].astype(float) > 0).all()
    return {**stats, "outcomes": outcomes, "published": published}


@pytest.mark.slow
def test_real_flights_stream_as_offline_computes_them_late_events_included(
    tmp_path: Path, flights_job: FeatureStreamJob, stretch: pd.DataFrame
):
    stream = flights_job.stream
    events = source_events(stream, stretch)
    # The departure and arrival of ten daytime flights reach the log 90 minutes late (past
    # the 10-minute allowed lateness); ten other departures 4 minutes late: on time.
    local = pd.to_datetime(events[stream.time_column], utc=True).dt.tz_convert(NY)
    daytime = local.dt.hour.between(9, 17) & (local.dt.day == 8)
    kind = events[stream.kind_column]
    landed = events.loc[kind == "arrived", stream.key]
    flying = events[(kind == "departed") & daytime].merge(landed, on=stream.key)
    assert len(flying) > 300

    def chosen(keys: pd.DataFrame, kinds: list[str]) -> np.ndarray:
        on_keys = pd.MultiIndex.from_frame(events[stream.key]).isin(pd.MultiIndex.from_frame(keys))
        return on_keys & kind.isin(kinds).to_numpy()

    late = chosen(flying.iloc[::30][stream.key].head(10), ["departed", "arrived"])
    slow = chosen(flying.iloc[5::30][stream.key].head(10), ["departed"])
    delay = np.where(late, 90, np.where(slow, 4, 0))
    stats = replay_and_compare(flights_job, events, delay, tmp_path, rows=100)
    assert late.sum() == 20 and max(stats["pending"]) > 0
    assert stats["checked"] > 10_000 and len(stats["outcomes"]) > 25
    assert stats["skew_cells"] > 0  # the late events mattered while they were missing
    # Not a vacuous agreement: flights waited, departed and arrived along the way.
    top = stats["max"]
    assert top["origin_waiting_4h"] >= 5 and top["carrier_origin_mean_wait_4h"] > 30
    assert top["origin_departures_1h"] >= 5 and top["carrier_flights_7d"] >= 50


# -- a second dataset: support tickets, open until resolved ------------------------------------
QUEUE = Entity(name="queue", join_keys=["queue"])
RESOLVED_AT = Availability(offset_minutes=["minutes_to_resolve"])
OPEN_TICKETS = WindowView(
    name="open_tickets",
    source="tickets",
    entity=QUEUE,
    timestamp="opened_at",
    closes=RESOLVED_AT,
    aggregations=[
        Aggregation(name="open_n", function="count", column="priority", window=timedelta(hours=8)),
        Aggregation(
            name="open_wait", function="mean_age", column="priority", window=timedelta(hours=8)
        ),
        Aggregation(
            name="open_priority", function="mean", column="priority", window=timedelta(hours=3)
        ),
        Aggregation(
            name="open_priority_sum", function="sum", column="priority", window=timedelta(hours=3)
        ),
    ],
)
RESOLVED = WindowView(
    name="resolved_tickets",
    source="tickets",
    entity=QUEUE,
    timestamp="opened_at",
    availability=RESOLVED_AT,
    aggregations=[
        Aggregation(
            name="resolved_n",
            function="count",
            column="minutes_to_resolve",
            window=timedelta(hours=2),
        ),
        Aggregation(
            name="resolve_minutes",
            function="mean",
            column="minutes_to_resolve",
            window=timedelta(hours=2),
        ),
        Aggregation(
            name="slow_share",
            function="rate",
            column="minutes_to_resolve",
            threshold=60.0,
            window=timedelta(hours=6),
        ),
    ],
)
TICKETS = EventStream(
    name="tickets",
    source="tickets",
    key=["ticket"],
    timestamp="opened_at",
    events=[
        EventKind(name="opened", columns=["queue", "priority"]),
        EventKind(
            name="resolved", at=RESOLVED_AT, columns=["queue", "priority", "minutes_to_resolve"]
        ),
    ],
    views=["open_tickets", "resolved_tickets"],
    allowed_lateness=timedelta(minutes=5),
)


def _tickets_job(max_segments: int = 1) -> FeatureStreamJob:
    return FeatureStreamJob(
        name="tickets", stream=TICKETS, views=[OPEN_TICKETS, RESOLVED], max_segments=max_segments
    )


def _tickets(n: int = 400, seed: int = 0, hours: float = 48) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    opened = pd.Timestamp("2024-05-01T00:00Z") + pd.to_timedelta(
        np.sort(rng.uniform(0, hours * 60, n)).round(), unit="min"
    )
    minutes = rng.exponential(50, n).round()
    minutes[rng.random(n) < 0.1] = np.nan  # never resolved
    return pd.DataFrame(
        {
            "ticket": [f"T{i:04d}" for i in range(n)],
            "queue": rng.choice(["billing", "login", "refund", "shipping"], n),
            "opened_at": opened,
            "priority": rng.integers(1, 5, n).astype(float),
            "minutes_to_resolve": minutes,
        }
    )


def test_open_and_resolved_tickets_stream_as_offline_computes_them(tmp_path: Path):
    job, table = _tickets_job(), _tickets(300, hours=12)
    events = source_events(job.stream, table)
    # Every 15th resolution reaches the log two hours late (allowed: 5 minutes), every 17th
    # two minutes late (on time).
    resolved = (events[job.stream.kind_column] == "resolved").to_numpy()
    order = np.cumsum(resolved)
    times = pd.to_datetime(events[job.stream.time_column], utc=True)
    followed = (times < times.max() - pd.Timedelta(hours=3)).to_numpy()  # not the log's end
    late = resolved & (order % 15 == 0) & followed
    delay = np.where(late, 120, np.where(resolved & (order % 17 == 0), 2, 0))
    stats = replay_and_compare(job, events, delay, tmp_path, rows=20)
    assert late.sum() >= 8 and stats["skew_cells"] > 0
    # Not a vacuous agreement: tickets were open, waiting, and resolved along the way.
    top = stats["max"]
    assert top["open_n"] >= 3 and top["open_wait"] > 30 and top["resolved_n"] >= 3


def test_a_crash_before_the_commit_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    job, table = _tickets_job(max_segments=2), _tickets(200, seed=3)
    write_segments(source_events(job.stream, table), tmp_path / "log", rows_per_segment=20)
    clean = Published(job)
    outcomes = _drain(
        job, tmp_path / "log", Lake(tmp_path / "clean"), lambda b: clean.apply(b.updates)
    )
    # The state keeps only rows that can still count: the last 8 hours of tickets and the
    # unresolved ones (for the 2-day retention), not all 2 days of them.
    assert outcomes[-1].state_rows < len(table) / 2

    lake, crashy = Lake(tmp_path / "crashy"), Published(job)
    for _ in range(3):
        crashy.apply(run_feature_batch(job, tmp_path / "log", lake).updates)

    def power_cut(*args, **kwargs):
        raise OSError("power cut before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(Lake, "write_snapshot", power_cut)
        with pytest.raises(OSError, match="power cut"):
            run_feature_batch(job, tmp_path / "log", lake)
    _drain(job, tmp_path / "log", lake, lambda b: crashy.apply(b.updates))
    for view in job.views:
        entities = table[view.entity.join_keys].drop_duplicates()
        pd.testing.assert_frame_equal(crashy.frame(view, entities), clean.frame(view, entities))
    # Drained: a rerun reads nothing and commits nothing.
    snapshot = lake.latest("stream", job.name)
    again = run_feature_batch(job, tmp_path / "log", lake)
    assert again.outcome.segments == [] and again.outcome.snapshot == snapshot
    # A committed batch's updates can be read back (to deliver them again), and the whole
    # current state equals everything the updates published.
    last = read_updates(lake, snapshot)
    assert {u.view for u in last} == {"open_tickets", "resolved_tickets"}
    for update in current_values(lake, job.name):
        view = next(v for v in job.views if v.name == update.view)
        entities = update.rows[view.entity.join_keys]
        pd.testing.assert_frame_equal(
            update.rows[view.features].reset_index(drop=True),
            clean.frame(view, entities).reset_index(drop=True),
            check_dtype=False,
        )


def test_a_batch_whose_events_lack_a_column_keeps_the_state_typed(tmp_path: Path):
    """Opened tickets do not tell their resolution yet: after a batch of only those, the
    state's resolution minutes must still be numbers, not objects (what pandas is to make
    of a column with no value joined to one with numbers)."""
    job, table = _tickets_job(), _tickets(40, hours=12)
    events = source_events(job.stream, table)
    cut = table["opened_at"].iloc[25].isoformat()
    first = events[events[job.stream.time_column] < cut]
    opened = events[job.stream.kind_column] == "opened"
    later = events[(events[job.stream.time_column] >= cut) & opened]
    assert first["minutes_to_resolve"].notna().any() and len(later) > 0
    write_segments(first, tmp_path / "log", rows_per_segment=len(first))
    write_segments(later, tmp_path / "log", rows_per_segment=len(later), start=1)
    lake = Lake(tmp_path / "lake")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        outcomes = _drain(job, tmp_path / "log", lake)
    assert len(outcomes) == 2 and outcomes[1].events_in == len(later)
    meta = lake.manifest(lake.latest("stream", job.name))
    state = lake.read_part(PartRef.model_validate(meta["state"]))
    assert state["minutes_to_resolve"].dtype == np.float64
    resolved = first[first[job.stream.kind_column] == "resolved"]
    told = state["ticket"].map(resolved.set_index("ticket")["minutes_to_resolve"])
    assert told.notna().any()  # the state still holds resolved tickets, with their minutes
    np.testing.assert_array_equal(state["minutes_to_resolve"].to_numpy(), told.to_numpy())
    assert set(later["ticket"]) <= set(state["ticket"])


def _published_against_offline(
    job: FeatureStreamJob, log: Path, lake: Lake, table: pd.DataFrame, seed=None
) -> tuple[int, list]:
    """Drain ``log``; after each batch, the cells where a store fed by the updates differs
    from the offline store over the whole ``table`` at the watermark."""
    published, offline = Published(job), OfflineStore(job.views, {job.stream.source: table})
    wrong, outcomes = 0, []
    while (batch := run_feature_batch(job, log, lake, seed=seed)).outcome.segments:
        outcomes.append(batch.outcome)
        published.apply(batch.updates)
        as_of = pd.Timestamp(batch.outcome.watermark)
        for view in job.views:
            entities = table[view.entity.join_keys].drop_duplicates()
            ours = published.frame(view, entities)
            wrong += int(_mismatch(ours, _offline(offline, view, entities, as_of), view).sum())
    return wrong, outcomes


def _every_event_published_as_offline(
    job: FeatureStreamJob, events: pd.DataFrame, table: pd.DataFrame, tmp_path: Path
) -> None:
    """``events`` logged and drained: every one taken, none set aside, and what the stream
    publishes equal to the offline store over ``table`` at each of several watermarks."""
    write_segments(events, tmp_path / "log", rows_per_segment=25)
    wrong, outcomes = _published_against_offline(
        job, tmp_path / "log", Lake(tmp_path / "lake"), table
    )
    assert wrong == 0 and len(outcomes) > 3
    assert sum(o.invalid for o in outcomes) == 0
    assert sum(o.events_in for o in outcomes) == len(events)


def test_a_log_that_starts_after_the_history_is_seeded_from_it(tmp_path: Path):
    """The lake holds two days of tickets; the log starts on the second day. Seeded with the
    lake's rows from before the log, the stream publishes the offline values from its first
    watermark on; without them, its windows miss what happened before the log."""
    job, table = _tickets_job(max_segments=2), _tickets(400, seed=5, hours=48)
    events = source_events(job.stream, table)
    start = pd.Timestamp("2024-05-02T00:00Z")
    times = pd.to_datetime(events[job.stream.time_column], utc=True)
    log_events = events[(times >= start).to_numpy()]
    before = table[table["opened_at"] < start]
    # Tickets opened before the log and resolved in it: the seed and the log both tell them.
    assert (
        (before["opened_at"] + pd.to_timedelta(before["minutes_to_resolve"], "min")).ge(start).any()
    )
    write_segments(log_events, tmp_path / "log", rows_per_segment=30)
    seed = StreamSeed(table, "clean/tickets/test")

    wrong, outcomes = _published_against_offline(
        job, tmp_path / "log", Lake(tmp_path / "seeded"), table, seed=lambda: seed
    )
    assert wrong == 0 and len(outcomes) > 3
    assert sum(o.events_in for o in outcomes) == len(log_events)
    assert sum(o.late for o in outcomes) == 0  # the log's own order: nothing late
    # The first batch started from the rows that can still count; the rest were not kept.
    assert 0 < outcomes[0].seeded < len(before) and all(o.seeded == 0 for o in outcomes[1:])
    lake = Lake(tmp_path / "seeded")
    first = lake.find("stream", job.name, outcomes[0].snapshot.snapshot_id)
    assert lake.manifest(first)["seeded_from"]["source"] == "clean/tickets/test"

    unseeded, _ = _published_against_offline(job, tmp_path / "log", Lake(tmp_path / "u"), table)
    assert unseeded > 0
    # A job that has committed state is not seeded again.
    write_segments(log_events.head(5), tmp_path / "log", rows_per_segment=5, start=1000)
    assert run_feature_batch(job, tmp_path / "log", lake, seed=lambda: seed).outcome.seeded == 0


def test_a_seed_from_the_lake_merges_with_the_events_of_its_rows(tmp_path: Path):
    """The lake's times are microseconds, events' nanoseconds: with the time in the stream's
    key, a seeded ticket and its resolution in the log must still be one row, counted once."""
    stream = TICKETS.model_copy(update={"key": ["queue", "opened_at"]})
    job = FeatureStreamJob(
        name="tickets", stream=stream, views=[OPEN_TICKETS, RESOLVED], max_segments=1
    )
    table = _tickets(200, seed=9, hours=24).drop_duplicates(["queue", "opened_at"])
    start = pd.Timestamp("2024-05-01T12:00Z")
    events = source_events(job.stream, table)
    times = pd.to_datetime(events[job.stream.time_column], utc=True)
    write_segments(events[(times >= start).to_numpy()], tmp_path / "log", rows_per_segment=10)
    lake_typed = table.assign(opened_at=table["opened_at"].dt.as_unit("us"))
    seed = StreamSeed(lake_typed, "clean/tickets/us")
    wrong, outcomes = _published_against_offline(
        job, tmp_path / "log", Lake(tmp_path / "lake"), table, seed=lambda: seed
    )
    assert wrong == 0 and outcomes[0].seeded > 0 and len(outcomes) > 5
    lake = Lake(tmp_path / "lake")
    for snapshot in lake.snapshots("stream", job.name):  # one row per ticket, every batch
        state = lake.read_part(PartRef.model_validate(lake.manifest(snapshot)["state"]))
        assert not state.duplicated(["queue", "opened_at"]).any()


def test_events_carry_the_timestamp_as_the_data_holds_it(tmp_path: Path):
    """A producer sends a source row as it holds it: ``opened_at`` written as the data
    writes it (day first, Paris local time), read by the source contract's rule, not as
    UTC ISO 8601. The stream publishes what the offline store computes from the lake's
    UTC times; read as ISO, every event would be set aside as a bad timestamp."""
    rule = ColumnRule(dtype="datetime", format="%d/%m/%Y %H:%M", timezone="Europe/Paris")
    job = _tickets_job(max_segments=2).model_copy(update={"rules": {"opened_at": rule}})
    table = _tickets(200, seed=11, hours=24)
    events = source_events(job.stream, table)
    opened = pd.to_datetime(events["opened_at"], utc=True).dt.tz_convert("Europe/Paris")
    events = events.assign(opened_at=opened.dt.strftime("%d/%m/%Y %H:%M"))
    _every_event_published_as_offline(job, events, table, tmp_path)
    # The job takes the rule from the spec's contract of the stream's source.
    spec = nycflights13_spec()
    stream = spec.streams[0]
    contract = spec.contracts[stream.source]
    local = ColumnRule(dtype="datetime", timezone="America/New_York")
    columns = {**contract.columns, stream.timestamp: local}
    changed = spec.model_copy(
        update={"contracts": {**spec.contracts, stream.source: contract.model_copy(
            update={"columns": columns})}}
    )  # fmt: skip
    assert feature_stream_job(changed, stream.name).rules[stream.timestamp] == local
    assert (
        feature_stream_job(spec, stream.name).event_contract.columns[stream.timestamp].timezone
        == "UTC"
    )


def test_events_may_send_a_time_in_the_parts_the_file_writes_it_in(tmp_path: Path):
    """A source that writes its time as a date and a time of day (``SourceSpec.joined``):
    a producer sends the parts as the file holds them, or the joined time, event by
    event; the stream joins the parts as the lake does and publishes what the offline
    store computes. Without the join every event that sent parts was set aside."""
    rule = ColumnRule(dtype="datetime", format="%d/%m/%Y %H:%M")
    parts = {"opened_at": ["opened_day", "opened_clock"]}
    job = _tickets_job(max_segments=2).model_copy(
        update={"rules": {"opened_at": rule}, "joined": parts}
    )
    table = _tickets(200, seed=12, hours=24)
    events = source_events(job.stream, table)
    opened = pd.to_datetime(events["opened_at"], utc=True)
    split = (np.arange(len(events)) % 2).astype(bool)  # every other event sends the parts
    events = events.assign(
        opened_at=opened.dt.strftime("%d/%m/%Y %H:%M").where(~split, None),
        opened_day=opened.dt.strftime("%d/%m/%Y").where(split, None),
        opened_clock=opened.dt.strftime("%H:%M").where(split, None),
    )
    _every_event_published_as_offline(job, events, table, tmp_path)
    # The job takes the parts from the spec's source, for the columns the state keeps.
    spec = nycflights13_spec()
    stream = spec.streams[0]
    joined = {stream.timestamp: ["day", "clock"], "unkept": ["a", "b"]}
    sources = [
        s.model_copy(update={"joined": joined}) if s.name == stream.source else s
        for s in spec.sources
    ]
    changed = spec.model_copy(update={"sources": sources})
    assert feature_stream_job(changed, stream.name).joined == {stream.timestamp: ["day", "clock"]}


def test_events_the_lake_would_refuse_are_set_aside_with_its_reason(tmp_path: Path):
    """A producer sends some tickets with values the source's contract refuses: a priority
    out of its range, a queue not among the allowed ones, text where a number belongs. The
    lake quarantines those rows; the stream sets their events aside, with the reason the
    lake gives, and publishes what the offline store computes from the lake's clean rows.
    Counted as they came, the priority 99 would move every mean and sum of its queue."""
    queues = ["billing", "login", "refund", "shipping"]
    rules = {
        "queue": ColumnRule(dtype="string", allowed=queues),
        "priority": ColumnRule(dtype="float", ge=1, le=4),
        "minutes_to_resolve": ColumnRule(dtype="float", ge=0),
    }
    job = _tickets_job(max_segments=2).model_copy(update={"rules": rules})
    table = _tickets(200, seed=13, hours=24)
    events = source_events(job.stream, table).astype({"priority": object, "queue": object})
    resolved_one = table.loc[table["minutes_to_resolve"].notna(), "ticket"].iloc[60]
    bad = {"T0010": "high", "T0050": "queue", "T0090": 99.0, resolved_one: "soon", "T0190": 0.0}
    for ticket, value in bad.items():
        rows = (events["ticket"] == ticket).to_numpy()
        resolved = rows & (events[job.stream.kind_column] == "resolved").to_numpy()
        if value == "queue":
            events.loc[rows, "queue"] = "Billing "  # every event of the row: as the row holds it
        elif value == "soon":
            events.loc[rows, "priority"] = "high"
            events.loc[resolved, "minutes_to_resolve"] = value
        else:
            events.loc[rows, "priority"] = value
    write_segments(events, tmp_path / "log", rows_per_segment=25)
    clean = table[~table["ticket"].isin(bad)]
    lake = Lake(tmp_path / "lake")
    wrong, outcomes = _published_against_offline(job, tmp_path / "log", lake, clean)
    assert wrong == 0 and len(outcomes) > 3
    refused = events["ticket"].isin(bad)
    assert sum(o.invalid for o in outcomes) == refused.sum()
    snapshot = lake.latest("stream", job.name)
    set_aside = pd.concat(
        [lake.read_part(PartRef.model_validate(p)) for p in lake.manifest(snapshot)["late_parts"]]
    )
    reasons = set_aside.groupby("ticket")["_reason"].agg(lambda r: set("; ".join(r).split("; ")))
    assert reasons["T0010"] == {"priority: not a float"}
    assert reasons["T0050"] == {"queue: not an allowed value"}
    assert reasons["T0090"] == {"priority: less_than_or_equal_to(4.0)"}
    assert reasons["T0190"] == {"priority: greater_than_or_equal_to(1.0)"}
    assert reasons[resolved_one] == {"priority: not a float", "minutes_to_resolve: not a float"}


def test_events_with_numbers_written_as_the_source_writes_them_count_as_numbers(tmp_path: Path):
    """A source whose minutes are written ``1,234 min`` (``strip=[" min", ","]``): the
    producer sends them so, and the stream reads them as the lake does, so its values equal
    the offline store's over the numbers."""
    rule = ColumnRule(dtype="float", ge=0, strip=[" min", ","])
    job = _tickets_job(max_segments=2).model_copy(update={"rules": {"minutes_to_resolve": rule}})
    table = _tickets(200, seed=17, hours=24)
    table.loc[table.index[::9], "minutes_to_resolve"] *= 40  # some past a thousand
    events = source_events(job.stream, table).astype({"minutes_to_resolve": object})
    minutes = events["minutes_to_resolve"]
    events["minutes_to_resolve"] = minutes.map(lambda m: m if pd.isna(m) else f"{m:,.0f} min")
    assert events["minutes_to_resolve"].str.contains(",", na=False).any()
    write_segments(events, tmp_path / "log", rows_per_segment=25)
    wrong, outcomes = _published_against_offline(job, tmp_path / "log", Lake(tmp_path / "l"), table)
    assert wrong == 0 and len(outcomes) > 3 and sum(o.invalid for o in outcomes) == 0
    # Read as plain numbers, the same events are refused, every resolution of them.
    plain = job.model_copy(update={"rules": {"minutes_to_resolve": ColumnRule(dtype="float")}})
    _, refused = _published_against_offline(plain, tmp_path / "log", Lake(tmp_path / "p"), table)
    assert sum(o.invalid for o in refused) == int(table["minutes_to_resolve"].notna().sum())


def test_a_key_sent_as_a_number_and_as_text_is_one_row_as_in_the_lake(tmp_path: Path):
    """Ticket ids are numbers; one producer sends them as JSON numbers, another (the
    resolutions) as strings. The contract does not declare the key: typed once from the
    first events, as ingest types a column, ``"1005"`` and ``1005`` are one ticket, as in
    the lake. A later event whose key is not a number is set aside with the lake's reason.
    The stream used to stop on such a log, its state unwritable (mixed types)."""
    job = _tickets_job(max_segments=2)
    table = _tickets(200, seed=17, hours=24)
    table["ticket"] = np.arange(1000, 1000 + len(table))
    events = source_events(job.stream, table).astype({"ticket": object})
    resolved = (events[job.stream.kind_column] == "resolved").to_numpy()
    events.loc[resolved, "ticket"] = events.loc[resolved, "ticket"].map(str)
    stray = events.iloc[[-1]].assign(ticket="T-1")
    write_segments(pd.concat([events, stray]), tmp_path / "log", rows_per_segment=25)
    lake = Lake(tmp_path / "lake")
    wrong, outcomes = _published_against_offline(job, tmp_path / "log", lake, table)
    assert wrong == 0 and len(outcomes) > 3
    assert sum(o.invalid for o in outcomes) == 1
    manifest = lake.manifest(lake.latest("stream", job.name))
    assert manifest["column_types"]["ticket"] == "int"
    (late,) = manifest["late_parts"]
    assert lake.read_part(PartRef.model_validate(late))["_reason"].tolist() == [
        "ticket: not an int"
    ]


def test_a_flush_after_the_log_is_drained_publishes_up_to_the_newest_event(tmp_path: Path):
    """A bounded replay ends with a flush: no new segment, the watermark moves to the newest
    event seen, and the values published then are the offline store's at that time."""
    job, table = _tickets_job(max_segments=4), _tickets(120, seed=19, hours=12)
    events = source_events(job.stream, table)
    write_segments(events, tmp_path / "log", rows_per_segment=30)
    lake = Lake(tmp_path / "lake")
    published = Published(job)
    while (batch := run_feature_batch(job, tmp_path / "log", lake)).outcome.segments:
        published.apply(batch.updates)
    drained = pd.Timestamp(batch.outcome.watermark)
    flushed = run_feature_batch(job, tmp_path / "log", lake, flush=True)
    published.apply(flushed.updates)
    newest = pd.to_datetime(events[job.stream.time_column], utc=True).max()
    assert flushed.outcome.segments == [] and flushed.outcome.events_in == 0
    assert pd.Timestamp(flushed.outcome.watermark) == newest > drained
    offline = OfflineStore(job.views, {job.stream.source: table})
    for view in job.views:
        entities = table[view.entity.join_keys].drop_duplicates()
        expected = _offline(offline, view, entities, newest)
        assert not _mismatch(published.frame(view, entities), expected, view).any()


def test_a_seed_without_the_columns_the_views_read_is_refused(tmp_path: Path):
    job, table = _tickets_job(), _tickets(30)
    write_segments(source_events(job.stream, table), tmp_path / "log", rows_per_segment=100)
    history = StreamSeed(table.drop(columns=["priority"]), "clean/tickets/x")
    with pytest.raises(StreamError, match=r"history of stream 'tickets' has no columns"):
        run_feature_batch(job, tmp_path / "log", Lake(tmp_path / "lake"), seed=lambda: history)


def test_bad_events_are_set_aside_or_refused(tmp_path: Path):
    job, table = _tickets_job(), _tickets(30)
    events = source_events(job.stream, table)
    events.loc[3, job.stream.time_column] = "not a time"
    events.loc[4, "ticket"] = None
    write_segments(events, tmp_path / "log", rows_per_segment=100)
    outcome = run_feature_batch(job, tmp_path / "log", Lake(tmp_path / "lake")).outcome
    assert outcome.invalid == 2 and outcome.events_in == len(events)
    write_segments(events.drop(columns=["ticket"]), tmp_path / "nokey", rows_per_segment=100)
    with pytest.raises(StreamError, match=r"no key columns \['ticket'\]"):
        run_feature_batch(job, tmp_path / "nokey", Lake(tmp_path / "lake2"))
    with pytest.raises(StreamError, match="does not exist"):
        run_feature_batch(job, tmp_path / "nowhere", Lake(tmp_path / "lake3"))


def test_declarations_that_cannot_agree_are_refused():
    spec = nycflights13_spec()
    with pytest.raises(StreamError, match="declares no event streams"):
        feature_stream_job(spec.model_copy(update={"streams": []}))
    with pytest.raises(StreamError, match="no event stream 'nope'"):
        feature_stream_job(spec, "nope")
    with pytest.raises(ValueError, match="no event carries"):
        FeatureStreamJob(
            name="t",
            stream=TICKETS.model_copy(update={"events": TICKETS.events[:1]}),
            views=[OPEN_TICKETS, RESOLVED],
        )
    with pytest.raises(ValueError, match="name the log's own columns"):
        EventStream.model_validate({**TICKETS.model_dump(), "time_column": "queue"})


def test_a_spec_refuses_streams_its_views_cannot_be_fed_by():
    spec = nycflights13_spec()
    stream = spec.streams[0]
    weather = next(v.name for v in spec.feature_views if not isinstance(v, WindowView))
    for change, message in [
        ({"views": [*stream.views, weather]}, "is not a window view"),
        ({"views": ["nope"]}, "feeds no declared view 'nope'"),
        ({"source": "weather"}, "carries 'weather' rows"),
    ]:
        broken = stream.model_copy(update=change)
        with pytest.raises(ValueError, match=message):
            type(spec).model_validate({**spec.model_dump(), "streams": [broken.model_dump()]})


def test_events_nested_as_the_source_writes_them_count_an_id_column(tmp_path: Path):
    """A JSON source's row ``{"ticket": "T1", "customer": {"id": 7}, ...}`` is held as
    columns ``customer.id``; its producer sends events nested the same way, and the stream
    reads them as the lake reads the file. A count of the ticket ids (text) counts tickets,
    in both engines: before, both read the ids as numbers and counted 0."""
    customer, two_hours = Entity(name="customer", join_keys=["customer.id"]), timedelta(hours=2)
    view = WindowView(
        name="customer_recent",
        source="tickets",
        entity=customer,
        timestamp="opened_at",
        aggregations=[
            Aggregation(name="tickets_2h", function="count", column="ticket", window=two_hours),
            Aggregation(name="words_2h", function="mean", column="words", window=two_hours),
        ],
    )
    stream = EventStream(
        name="tickets",
        source="tickets",
        key=["ticket"],
        timestamp="opened_at",
        events=[EventKind(name="opened", columns=["customer.id", "words"])],
        views=["customer_recent"],
    )
    job = FeatureStreamJob(name="tickets", stream=stream, views=[view], max_segments=2)
    rng = np.random.default_rng(5)
    n = 240
    table = pd.DataFrame(
        {
            "ticket": [f"T{i:04d}" for i in range(n)],
            "opened_at": pd.Timestamp("2024-05-01T00:00Z")
            + pd.to_timedelta(np.sort(rng.uniform(0, 12 * 60, n)).round(), unit="min"),
            "customer.id": rng.integers(1, 6, n),
            "words": rng.integers(5, 400, n).astype(float),
        }
    )
    log = tmp_path / "log"
    log.mkdir()
    events = source_events(stream, table).to_dict("records")
    for i in range(0, n, 30):
        lines = [
            json.dumps({**{k: v for k, v in e.items() if k != "customer.id"},
                        "customer": {"id": e["customer.id"]}})
            for e in events[i : i + 30]
        ]  # fmt: skip
        (log / f"segment-{i:06d}.jsonl").write_text("\n".join(lines) + "\n")

    wrong, outcomes = _published_against_offline(job, log, Lake(tmp_path / "lake"), table)
    assert wrong == 0 and sum(o.invalid for o in outcomes) == 0
    assert sum(o.events_in for o in outcomes) == n
    # What both publish is the count itself: each customer's tickets in the 2 hours before.
    as_of = pd.Timestamp(outcomes[-1].watermark)
    customers = table[["customer.id"]].drop_duplicates()
    offline = _offline(OfflineStore([view], {"tickets": table}), view, customers, as_of)
    since = table["opened_at"] >= as_of - pd.Timedelta(hours=2)
    truth = table[since & (table["opened_at"] < as_of)].groupby("customer.id").size()
    assert truth.min() > 0
    assert offline["tickets_2h"].tolist() == truth.reindex(customers["customer.id"]).tolist()


# -- a third dataset: bookings, whose outcome is learned on the arrival day --------------------
GUEST_HISTORY = WindowView(
    name="guest_history",
    source="bookings",
    entity=Entity(name="guest", join_keys=["guest"]),
    timestamp="booked_at",
    availability=Availability(from_column="arrival", lag=timedelta(hours=12)),
    aggregations=[
        Aggregation(name="stays_30d", function="count", column="canceled", window=timedelta(30)),
        Aggregation(
            name="canceled_30d",
            function="rate",
            column="canceled",
            positive=["yes"],
            window=timedelta(30),
        ),
    ],
)
BOOKINGS = EventStream(
    name="bookings",
    source="bookings",
    key=["booking"],
    timestamp="booked_at",
    events=[
        EventKind(name="booked", columns=["guest", "arrival"]),
        EventKind(
            name="settled",
            at=Availability(from_column="arrival", lag=timedelta(hours=12)),
            columns=["guest", "arrival", "canceled"],
        ),
    ],
    views=["guest_history"],
    retention=timedelta(days=60),
)


def test_a_rate_of_outcomes_learned_on_arrival_streams_as_offline_computes_it(tmp_path: Path):
    """A guest's share of cancelled stays, of a text column ``yes``/``no``, each known from
    its arrival day: bookings arrive as events when booked and again when settled, weeks
    later, and the stream's values equal the offline store's at every watermark. A settled
    booking is never counted before its arrival, though its booking came long before."""
    rng = np.random.default_rng(11)
    n = 240
    booked = pd.Timestamp("2024-03-01T00:00Z") + pd.to_timedelta(
        np.sort(rng.uniform(0, 90 * 24 * 60, n)).round(), unit="min"
    )
    arrival = (booked + pd.to_timedelta(rng.integers(1, 40, n), unit="D")).normalize()
    table = pd.DataFrame(
        {
            "booking": [f"B{i:04d}" for i in range(n)],
            "guest": rng.choice([f"G{i}" for i in range(12)], n),
            "booked_at": booked,
            "arrival": arrival,
            "canceled": rng.choice(["yes", "no"], n, p=[0.3, 0.7]),
        }
    )
    job = FeatureStreamJob(name="bookings", stream=BOOKINGS, views=[GUEST_HISTORY])
    events = source_events(BOOKINGS, table)
    settled = events[events[BOOKINGS.kind_column] == "settled"]
    assert (  # each outcome's event is timed by the arrival, not the booking
        pd.to_datetime(settled[BOOKINGS.time_column], utc=True).to_numpy()
        == (
            table.set_index("booking").loc[settled["booking"], "arrival"] + pd.Timedelta(hours=12)
        ).to_numpy()
    ).all()
    stats = replay_and_compare(job, events, np.zeros(len(events)), tmp_path, rows=25)
    assert stats["checked"] > 0 and stats["skew_cells"] == 0
    # Not a vacuous agreement: guests had settled stays, some cancelled, along the way.
    assert stats["max"]["stays_30d"] >= 3 and stats["max"]["canceled_30d"] > 0
    # And the rows a store holds at the end are the guests' shares over arrivals alone.
    as_of = pd.Timestamp(stats["outcomes"][-1].watermark)
    known = table["arrival"] + pd.Timedelta(hours=12)
    recent = table[(known < as_of) & (known >= as_of - pd.Timedelta(days=30))]
    share = recent.groupby("guest")["canceled"].agg(lambda c: (c == "yes").mean())
    guests = table[["guest"]].drop_duplicates()
    ours = stats["published"].frame(GUEST_HISTORY, guests).set_index(guests["guest"])
    np.testing.assert_allclose(
        ours["canceled_30d"].to_numpy(np.float64),
        share.reindex(guests["guest"]).to_numpy(np.float64),
        equal_nan=True,
    )
