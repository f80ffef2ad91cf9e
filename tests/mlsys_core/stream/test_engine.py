"""The micro-batch stream engine: exact windows, watermark and late events, joins on event
time, and exactly-once results across reruns and crashes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys_core.data.lake import Lake
from mlsys_core.stream import engine
from mlsys_core.stream.engine import StreamError, read_windows, run_micro_batch
from mlsys_core.stream.job import Aggregate, DeriveOp, FilterOp, JoinOp, StreamJob, Window
from mlsys_core.stream.replay import write_segments

T0 = pd.Timestamp("2013-06-01T12:00:00Z")


def _job(slide_min: int | None = 15, lateness_min: int = 10, **kw) -> StreamJob:
    return StreamJob(
        name="delays",
        event_time="ts",
        group_by=["origin"],
        operators=[
            FilterOp(column="dep_delay", op="notnull"),
            DeriveOp(name="delayed", column="dep_delay", op="gt", value=15),
        ],
        window=Window(
            size=timedelta(minutes=60), slide=timedelta(minutes=slide_min) if slide_min else None
        ),
        aggregates=[
            Aggregate(name="departures", fn="count"),
            Aggregate(name="delayed_share", fn="mean", column="delayed"),
        ],
        allowed_lateness=timedelta(minutes=lateness_min),
        **kw,
    )


def _events(n: int, seed: int = 0, hours: float = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    minutes = np.sort(rng.uniform(0, hours * 60, n))
    delay = rng.normal(10, 30, n).round()
    delay[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "ts": [(T0 + pd.Timedelta(minutes=float(m))).isoformat() for m in minutes],
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "dep_delay": delay,
        }
    )


def _no_tables(name: str) -> pd.DataFrame:
    raise AssertionError(f"unexpected table read: {name}")


def _drain(job: StreamJob, log: Path, lake: Lake, read=_no_tables, flush: bool = True):
    while run_micro_batch(job, log, lake, read).segments:
        pass
    if flush:
        run_micro_batch(job, log, lake, read, flush=True)
    return read_windows(lake, job.name)


def _reference(events: pd.DataFrame, job: StreamJob) -> pd.DataFrame:
    """Brute force: for every window start, filter the events inside and aggregate."""
    ev = events.dropna(subset=["dep_delay"]).assign(ts=lambda f: pd.to_datetime(f["ts"]))
    step, size = pd.Timedelta(job.window.step), pd.Timedelta(job.window.size)
    first = ev["ts"].min().floor(step) - size + step
    rows = []
    start = first
    while start <= ev["ts"].max():
        inside = ev[(ev["ts"] >= start) & (ev["ts"] < start + size)]
        for origin, group in inside.groupby("origin"):
            rows.append(
                {
                    "window_start": start,
                    "origin": origin,
                    "departures": len(group),
                    "delayed_share": float((group["dep_delay"] > 15).mean()),
                }
            )
        start += step
    return pd.DataFrame(rows).sort_values(["window_start", "origin"]).reset_index(drop=True)


def _compare(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    cols = ["window_start", "origin", "departures", "delayed_share"]
    ours = ours[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, ref[cols], check_dtype=False)


@pytest.mark.parametrize("slide", [None, 15, 5], ids=["tumbling", "sliding15", "sliding5"])
def test_windows_match_a_brute_force_reference(tmp_path: Path, slide: int | None):
    events = _events(600)
    write_segments(events, tmp_path / "log", rows_per_segment=70)
    job = _job(slide_min=slide)
    _compare(_drain(job, tmp_path / "log", Lake(tmp_path / "lake")), _reference(events, job))


def test_segmenting_does_not_change_the_result(tmp_path: Path):
    events, job = _events(500, seed=1), _job()
    results = []
    for rows in (13, 100, 500):
        write_segments(events, tmp_path / f"log{rows}", rows_per_segment=rows)
        results.append(_drain(job, tmp_path / f"log{rows}", Lake(tmp_path / f"lake{rows}")))
    pd.testing.assert_frame_equal(results[0], results[1])
    pd.testing.assert_frame_equal(results[0], results[2])


def test_only_windows_behind_the_watermark_are_emitted(tmp_path: Path):
    job = _job(slide_min=None, lateness_min=10)
    events = pd.DataFrame(
        {
            "ts": [(T0 + pd.Timedelta(minutes=m)).isoformat() for m in (5, 50, 65, 71)],
            "origin": ["EWR"] * 4,
            "dep_delay": [0, 30, 0, 0],
        }
    )
    write_segments(events, tmp_path / "log", rows_per_segment=10)
    lake = Lake(tmp_path / "lake")
    outcome = run_micro_batch(job, tmp_path / "log", lake, _no_tables)
    # Watermark = 12:71 - 10 min = 13:01: the 12:00 window is closed, 13:00 is open.
    assert pd.Timestamp(outcome.watermark) == T0 + pd.Timedelta(minutes=61)
    (row,) = read_windows(lake, job.name).to_dict("records")
    assert row["window_start"] == T0 and row["departures"] == 2 and row["delayed_share"] == 0.5


def test_late_events_are_set_aside_with_their_lateness(tmp_path: Path):
    job, log, lake = _job(slide_min=None, lateness_min=10), tmp_path / "log", Lake(tmp_path / "l")
    on_time = pd.DataFrame(
        {"ts": [(T0 + pd.Timedelta(minutes=m)).isoformat() for m in (10, 130)],
         "origin": ["JFK", "JFK"], "dep_delay": [0.0, 0.0]}
    )  # fmt: skip
    write_segments(on_time, log, rows_per_segment=10)
    first = run_micro_batch(job, log, lake, _no_tables)  # watermark 14:00
    late = pd.DataFrame(
        {"ts": [(T0 + pd.Timedelta(minutes=m)).isoformat() for m in (20, 125)],
         "origin": ["JFK", "JFK"], "dep_delay": [99.0, 99.0]}
    )  # fmt: skip
    write_segments(late, log, rows_per_segment=10, start=1)
    second = run_micro_batch(job, log, lake, _no_tables)
    assert (first.late, second.late) == (0, 1)  # 12:20 is late; 14:05 is within lateness
    snapshot = lake.latest("stream", job.name)
    (late_part,) = lake.manifest(snapshot)["late_parts"]
    rejected = lake.read_part(engine.PartRef.model_validate(late_part))
    assert pd.to_datetime(rejected["ts"]).tolist() == [T0 + pd.Timedelta(minutes=20)]
    assert float(rejected["_late_by_s"].iloc[0]) == 100 * 60
    windows = _drain(job, log, lake)
    noon = windows[windows["window_start"] == T0].iloc[0]
    assert noon["departures"] == 1  # the late event never changed an emitted window
    two_pm = windows[windows["window_start"] == T0 + pd.Timedelta(hours=2)].iloc[0]
    assert two_pm["departures"] == 2


def test_rerun_reads_nothing_twice_and_a_crash_double_counts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    events, job = _events(400, seed=2), _job(max_segments=2)
    write_segments(events, tmp_path / "log", rows_per_segment=50)
    expected = _drain(job, tmp_path / "log", Lake(tmp_path / "clean-run"))

    lake = Lake(tmp_path / "crashy")
    run_micro_batch(job, tmp_path / "log", lake, _no_tables)
    real = Lake.write_snapshot

    def crash(*args, **kwargs):
        raise OSError("power cut before the commit")

    monkeypatch.setattr(Lake, "write_snapshot", crash)
    with pytest.raises(OSError, match="power cut"):
        run_micro_batch(job, tmp_path / "log", lake, _no_tables)
    monkeypatch.setattr(Lake, "write_snapshot", real)
    result = _drain(job, tmp_path / "log", lake)
    pd.testing.assert_frame_equal(result, expected)
    # Once drained, a rerun over the same log changes nothing.
    snapshot = lake.latest("stream", job.name)
    outcome = run_micro_batch(job, tmp_path / "log", lake, _no_tables)
    assert outcome.segments == [] and outcome.snapshot == snapshot


def test_join_takes_the_row_at_or_before_event_time(tmp_path: Path):
    weather = pd.DataFrame(
        {
            "origin": ["JFK", "JFK", "EWR"],
            "time_hour": pd.to_datetime(
                ["2013-06-01T12:00Z", "2013-06-01T13:00Z", "2013-06-01T11:00Z"]
            ),
            "visib": [10.0, 2.0, 7.0],
        }
    )
    job = _job(slide_min=None).model_copy(
        update={
            "operators": [
                JoinOp(
                    table="weather",
                    on={"origin": "origin"},
                    columns={"visib": "visib"},
                    time_column="time_hour",
                    tolerance=timedelta(hours=1),
                )
            ],
            "aggregates": [Aggregate(name="mean_visib", fn="mean", column="visib")],
        }
    )
    events = pd.DataFrame(
        {
            "ts": ["2013-06-01T12:59Z", "2013-06-01T13:00Z", "2013-06-01T12:30Z"],
            "origin": ["JFK", "JFK", "EWR"],
            "dep_delay": [0, 0, 0],
        }
    )
    joined = engine.apply_operators(engine._typed_times(events, job)[0], job, lambda name: weather)
    # 12:59 sees the 12:00 reading, 13:00 the 13:00 one; EWR's 11:00 reading is 90 min old,
    # past the one-hour tolerance, so it counts as missing.
    assert joined["visib"].tolist()[:2] == [10.0, 2.0]
    assert np.isnan(joined["visib"].iloc[2])


def test_bad_events_are_set_aside_or_refused(tmp_path: Path):
    job, log = _job(), tmp_path / "log"
    events = _events(20)
    events.loc[3, "ts"] = "not a time"
    events.loc[4, "ts"] = None
    write_segments(events, log, rows_per_segment=100)
    outcome = run_micro_batch(job, log, Lake(tmp_path / "lake"), _no_tables)
    assert outcome.invalid == 2 and outcome.events_in == 20
    write_segments(events.drop(columns=["origin"]), tmp_path / "nokey", rows_per_segment=100)
    with pytest.raises(StreamError, match=r"no key columns \['origin'\]"):
        run_micro_batch(job, tmp_path / "nokey", Lake(tmp_path / "lake2"), _no_tables)
    with pytest.raises(StreamError, match="does not exist"):
        run_micro_batch(job, tmp_path / "nowhere", Lake(tmp_path / "lake3"), _no_tables)


def test_window_size_must_be_whole_slides():
    with pytest.raises(ValueError, match="whole number of slides"):
        Window(size=timedelta(minutes=60), slide=timedelta(minutes=25))
