"""The stream flow on real flight departures, on a real Prefect API."""

from __future__ import annotations

import pandas as pd

from flows.stream import stream_aggregate
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.spec import DatasetSpec
from mlsys_core.stream.engine import read_windows
from mlsys_core.stream.job import origin_delay_job
from mlsys_core.stream.replay import departure_events, write_segments


def test_departures_stream_into_per_origin_windows(
    settings: Settings, small_spec: DatasetSpec, tmp_path
):
    lake = Lake(settings.lake_dir)  # the join reads the newest clean weather
    weather = snapshot_source(small_spec.source("weather"), lake)
    clean_snapshot(weather, small_spec.contracts["weather"], lake)
    flights = pd.read_csv(small_spec.source("flights").path)
    events = departure_events(flights[flights["month"] == 3])
    log = tmp_path / "log"
    write_segments(events.iloc[: len(events) // 2], log, rows_per_segment=200)
    job = origin_delay_job()
    first = stream_aggregate(job, str(log))
    assert sum(o.events_in for o in first) == len(events) // 2
    write_segments(events.iloc[len(events) // 2 :], log, rows_per_segment=200, start=100)
    stream_aggregate(job, str(log), flush=True)
    windows = read_windows(Lake(settings.lake_dir), job.name)
    assert set(windows["origin"]) == {"EWR", "JFK", "LGA"}
    # Each event falls in four 60-minute windows sliding by 15: nothing lost or doubled.
    assert windows["departures"].sum() == 4 * events["dep_delay"].notna().sum()
    assert windows["delayed_share"].between(0, 1).all()
    assert windows["mean_visib"].notna().mean() > 0.9  # weather joined at event time
    # A rerun over the same log reads nothing again and changes nothing.
    snapshot = Lake(settings.lake_dir).latest("stream", job.name)
    assert stream_aggregate(job, str(log)) == []
    assert Lake(settings.lake_dir).latest("stream", job.name) == snapshot
