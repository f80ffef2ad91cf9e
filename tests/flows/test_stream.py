"""The stream flows on real flights, on a real Prefect API: the feature stream keeps the
dataset's window views as the offline store computes them; the windowed aggregation fills
its lake table."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

from flows.stream import stream_features
from flows.stream_windows import stream_windows
from mlsys_core.cli import main
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.datasets.nycflights13.stream import flight_stream, origin_delay_job
from mlsys_core.features.offline import OfflineStore
from mlsys_core.features.online import open_online_store
from mlsys_core.spec import DatasetSpec
from mlsys_core.stream.engine import read_windows
from mlsys_core.stream.features import current_values, event_log_dir, feature_stream_job
from mlsys_core.stream.replay import source_events, write_segments
from tasks.stream import LAGGING_EVENT


def _march_events(spec: DatasetSpec, days: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    flights = pd.read_csv(spec.source("flights").path)
    flights = flights[(flights["month"] == 3) & flights["day"].isin(days)]
    return flights, source_events(flight_stream(), flights)


def test_flight_events_keep_the_views_as_the_offline_store_computes_them(
    settings: Settings, small_spec: DatasetSpec
):
    flights, events = _march_events(small_spec, [4, 5, 6])
    job = feature_stream_job(small_spec)
    log = event_log_dir(settings.root, small_spec.name, job.stream.name)  # the default log
    write_segments(events.iloc[: len(events) // 2], log, rows_per_segment=150)
    first = stream_features(small_spec, max_segments=2)
    assert sum(o.events_in for o in first) == len(events) // 2
    write_segments(events.iloc[len(events) // 2 :], log, rows_per_segment=150, start=100)
    second = stream_features(small_spec, max_segments=2)
    assert sum(o.events_in for o in [*first, *second]) == len(events)
    assert sum(o.late for o in [*first, *second]) == 0  # replayed in event-time order

    lake = Lake(settings.lake_dir)
    watermark = pd.Timestamp(second[-1].watermark)
    assert watermark == pd.to_datetime(events[job.stream.time_column]).max() - pd.Timedelta(
        minutes=10
    )
    store = OfflineStore(job.views, {"flights": flights})
    for update in current_values(lake, job.name):
        assert update.as_of == watermark
        view = next(v for v in job.views if v.name == update.view)
        rows = update.rows.assign(__t=watermark)
        expected = store.get_historical_features(
            rows[view.entity.join_keys + ["__t"]], view.features, "__t"
        )
        pd.testing.assert_frame_equal(
            update.rows[view.features],
            expected[view.features],
            check_dtype=False,
            atol=1e-6,
        )
    # A rerun over the same log reads nothing again and changes nothing.
    snapshot = lake.latest("stream", job.name)
    assert stream_features(small_spec) == []
    assert Lake(settings.lake_dir).latest("stream", job.name) == snapshot


def test_flight_events_the_contract_refuses_are_set_aside_and_the_run_says_why(
    settings: Settings, small_spec: DatasetSpec, caplog: pytest.LogCaptureFixture
):
    """Two arrivals a producer got wrong: a delay sent as text, a carrier the flights
    contract does not allow. The run sets both aside with the lake's reasons and prints
    them; the other events stream as before."""
    _, events = _march_events(small_spec, [4])
    job = feature_stream_job(small_spec)
    events = events.astype({"arr_delay": object, "carrier": object}).reset_index(drop=True)
    arrived = np.flatnonzero((events[job.stream.kind_column] == "arrived").to_numpy())
    events.loc[arrived[3], "arr_delay"] = "late"
    events.loc[arrived[7], "carrier"] = "ZZ"
    log = event_log_dir(settings.root, small_spec.name, job.stream.name)
    write_segments(events, log, rows_per_segment=150)
    outcomes = stream_features(small_spec)
    reasons: dict[str, int] = {}
    for outcome in outcomes:
        for reason, n in outcome.invalid_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert reasons == {"arr_delay: not a float": 1, "carrier: not an allowed value": 1}
    assert sum(o.invalid for o in outcomes) == 2
    assert sum(o.events_in for o in outcomes) == len(events)
    # The flow prints it, and Prefect logs what a flow prints.
    said = f"set aside in the late table of {job.name}: arr_delay: not a float (1)"
    assert said in caplog.text and "carrier: not an allowed value (1)" in caplog.text


def test_departures_stream_into_per_origin_windows(
    settings: Settings, small_spec: DatasetSpec, tmp_path
):
    lake = Lake(settings.lake_dir)  # the join reads the newest clean weather
    weather = snapshot_source(small_spec.source("weather"), lake)
    clean_snapshot(weather, small_spec.contracts["weather"], lake)
    _, events = _march_events(small_spec, list(range(1, 32)))
    departures = events[events["event"] == "departed"]
    log = tmp_path / "log"
    write_segments(events.iloc[: len(events) // 2], log, rows_per_segment=300)
    job = origin_delay_job()
    first = stream_windows(job, str(log))
    assert sum(o.events_in for o in first) == len(events) // 2
    write_segments(events.iloc[len(events) // 2 :], log, rows_per_segment=300, start=100)
    stream_windows(job, str(log), flush=True)
    windows = read_windows(Lake(settings.lake_dir), job.name)
    assert set(windows["origin"]) == {"EWR", "JFK", "LGA"}
    # Each departure falls in four 60-minute windows sliding by 15: nothing lost or doubled.
    assert windows["departures"].sum() == 4 * departures["dep_delay"].notna().sum()
    assert windows["delayed_share"].between(0, 1).all()
    assert windows["mean_visib"].notna().mean() > 0.9  # weather joined at event time
    # A rerun over the same log reads nothing again and changes nothing.
    snapshot = Lake(settings.lake_dir).latest("stream", job.name)
    assert stream_windows(job, str(log)) == []
    assert Lake(settings.lake_dir).latest("stream", job.name) == snapshot


def _offline_at(store: OfflineStore, view, entities: pd.DataFrame, when) -> pd.DataFrame:
    rows = entities.reset_index(drop=True).assign(__t=when)
    return store.get_historical_features(rows, view.features, "__t")[view.features]


@pytest.mark.slow  # three flow runs and the offline reference: about 25 s when loaded
def test_the_stream_flow_writes_the_online_store_as_the_offline_store_computes_it(
    settings: Settings, small_spec: DatasetSpec
):
    flights, events = _march_events(small_spec, [11, 12])
    job = feature_stream_job(small_spec)
    log = event_log_dir(settings.root, small_spec.name, job.stream.name)
    halves = [0, len(events) // 2, len(events)]
    offline = OfflineStore(job.views, {"flights": flights})
    rng = np.random.default_rng(7)
    for i in range(2):  # the first run writes whole views, the second upserts
        write_segments(events.iloc[halves[i] : halves[i + 1]], log, 120, start=100 * i)
        outcomes = stream_features(small_spec, max_segments=2)
        # A new reader: a long-lived one re-reads the states every couple of seconds.
        online = open_online_store(settings.root, settings.online_store)
        watermark = pd.Timestamp(outcomes[-1].watermark)
        for view in job.views:
            state = online.states()[view.name]
            assert state.watermark == watermark  # the values' event-time freshness
            keys = view.entity.join_keys
            seen = flights[keys].dropna().drop_duplicates()
            sample = seen.iloc[rng.choice(len(seen), min(15, len(seen)), replace=False)]
            # An entity the stream never saw is what the offline store gives it too.
            sample = pd.concat([sample, pd.DataFrame([dict.fromkeys(keys, "ZZZ")])])
            expected = _offline_at(offline, view, sample, watermark)
            got = pd.DataFrame(
                [
                    online.get_features(dict(zip(keys, row, strict=True)), view.features)
                    for row in sample[keys].itertuples(index=False, name=None)
                ],
                columns=view.features,
            )
            pd.testing.assert_frame_equal(
                got.astype(np.float64), expected.astype(np.float64), atol=1e-6, check_names=False
            )
    # A store that lost the stream's writes (a new one, or a crash between the lake commit
    # and the write) is rewritten from the stream's state on the next run, new events or not.
    online.path.unlink()
    assert stream_features(small_spec) == []
    fresh = open_online_store(settings.root, settings.online_store)
    for update in current_values(Lake(settings.lake_dir), job.name):
        assert fresh.states()[update.view].watermark == update.as_of
        assert fresh.states()[update.view].rows == len(update.rows)


@pytest.mark.slow  # a flow run and the offline reference
def test_a_stream_whose_log_starts_after_the_lake_starts_from_its_history(
    settings: Settings, small_spec: DatasetSpec, tmp_path, capsys: pytest.CaptureFixture
):
    """The lake holds the clean flights; the log starts on March 11. ``mlsys stream`` runs
    the flow, whose first batch starts from the lake's flights before it, so the online store
    holds what the offline store computes from the lake at the watermark, 28-day windows
    included."""
    lake = Lake(settings.lake_dir)
    clean = clean_snapshot(
        snapshot_source(small_spec.source("flights"), lake), small_spec.contracts["flights"], lake
    )
    flights = lake.read(clean.clean)
    _, events = _march_events(small_spec, [11])
    job = feature_stream_job(small_spec)
    spec_file = tmp_path / "flights_spec.py"  # the command takes a reference, as a user's
    spec_file.write_text(
        "from mlsys_core.spec import DatasetSpec\n"
        f"SPEC = DatasetSpec.model_validate_json({small_spec.model_dump_json()!r})\n"
    )
    command = ["stream", "--spec", f"{spec_file}:SPEC"]
    assert main(command) == 2  # no log yet: one line, no flow run
    assert capsys.readouterr().err.startswith("mlsys stream: no event log at ")
    write_segments(events, event_log_dir(settings.root, small_spec.name, job.stream.name), 200)
    assert main(command) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith(f"stream {job.name}: ") and f"{len(events)} events" in printed
    first = lake.snapshots("stream", job.name)[0]
    assert lake.manifest(first)["seeded_from"]["rows"] > 0
    watermark = pd.Timestamp(printed.rsplit("watermark ", 1)[1])
    online = open_online_store(settings.root, settings.online_store)
    offline = OfflineStore(job.views, {"flights": flights})
    day = flights[(flights["month"] == 3) & (flights["day"] == 11)]
    for view in job.views:
        keys = view.entity.join_keys
        sample = day[keys].dropna().drop_duplicates().head(20)
        expected = _offline_at(offline, view, sample, watermark)
        got = pd.DataFrame(
            [
                online.get_features(dict(zip(keys, row, strict=True)), view.features)
                for row in sample[keys].itertuples(index=False, name=None)
            ],
            columns=view.features,
        )
        assert got.notna().any().any(), view.name
        pd.testing.assert_frame_equal(
            got.astype(np.float64), expected.astype(np.float64), atol=1e-6, check_names=False
        )


def _events_named(name: str) -> list[dict]:
    api = PREFECT_API_URL.value()
    body = {"filter": {"event": {"name": [name]}}, "limit": 50}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server persists events asynchronously
        found = httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]
        if found:
            return found
        time.sleep(1)
    return []


def test_a_stream_run_that_ends_behind_its_log_emits_the_lagging_event(
    settings: Settings, small_spec: DatasetSpec
):
    _, events = _march_events(small_spec, [20])
    job = feature_stream_job(small_spec)
    log = event_log_dir(settings.root, small_spec.name, job.stream.name)
    write_segments(events, log, rows_per_segment=len(events) // 4 + 1)  # 4 segments
    # One micro-batch of one segment: three segments and most of the day stay unconsumed.
    done = stream_features(
        small_spec, max_batches=1, max_segments=1, online=False, max_pending_segments=2
    )
    assert len(done) == 1
    found = _events_named(LAGGING_EVENT)
    assert len(found) == 1
    payload = found[0]["payload"]
    assert found[0]["resource"]["prefect.resource.id"] == f"mlsys.stream.{job.name}"
    assert payload["pending_segments"] == 3
    newest = pd.to_datetime(events[job.stream.time_column]).max()
    expected_lag = (newest - pd.Timestamp(done[0].watermark)).total_seconds()
    assert payload["lag_s"] == pytest.approx(expected_lag)
    assert payload["lag_s"] > 3600  # hours of the day's events not consumed yet
