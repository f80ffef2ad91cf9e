"""Online/offline parity on real flights: ``POST /predict`` with only what a caller knows
returns the batch-score flow's probability for the same flight, to 1e-6.

For a few hundred test-month flights, grouped by their scheduled hour, the online store is
materialized as of that hour (what a live store holds at prediction time), then the
flights are sent with their keys, event time, tail number and distance only: the plane and
airport lookups, the weather and the 33 history features are found by the service.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pandas as pd
import pytest

from flows.batch_score import batch_score
from mlsys_core.cli import main
from mlsys_core.data.cleaning import clean_snapshot, latest_clean
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.datasets import resolve_spec
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import (
    build_feature_set,
    load_feature_set,
    materialize_online,
    online_source_tables,
)
from mlsys_core.serving.app import create_app
from mlsys_core.serving.parity import InputDifference, ParityReport
from mlsys_core.serving.prediction_log import read_prediction_log
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import train_and_log
from tests.mlsys_core.serving.conftest import register, serve_config, serving
from tests.mlsys_core.serving.parity import assert_same_inputs, caller_records, hours_with_most


def predict_once_loaded(url: str, body: dict) -> httpx.Response:
    """POST /predict ?explain=true; the app loads its champion in the background after it
    starts (it is not ready until its online sources are filled), so a 503 that says it is
    still loading is retried for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        res = httpx.post(f"{url}/predict", params={"explain": "true"}, json=body, timeout=60)
        if res.status_code != 503 or "loading" not in res.text or time.monotonic() > deadline:
            return res
        time.sleep(0.1)


pytestmark = pytest.mark.slow  # trains a model (shared fixture), runs the batch-score flow

N_FLIGHTS = 300
GAPMINDER = "tests/user_datasets/gapminder.py:gapminder"


def test_served_probability_equals_the_batch_score_on_real_flights(
    trained, client, model_name, prefect_api, monkeypatch
):
    version = register(client, model_name, trained.model.model_uri, "champion")
    settings = trained.settings
    monkeypatch.setenv("MLSYS_STATE_DIR", str(settings.root))
    monkeypatch.delenv("MLSYS_DATASET")  # the dataset comes from the version's lineage
    scored = batch_score(model_name=model_name)
    assert scored.model_version == version
    lake = Lake(settings.lake_dir)
    frame, spec = load_feature_set(trained.feature_set, lake)
    scores = lake.read(scored.snapshot)
    keys = [*spec.entity_keys, spec.event_timestamp]
    pd.testing.assert_frame_equal(scores[keys], frame[keys])  # row for row
    frame = frame.assign(batch_probability=scores["probability"].to_numpy())
    flights = hours_with_most(frame[frame[SPLIT] == "test"], spec.event_timestamp, N_FLIGHTS)
    assert len(flights) >= 250 and flights[spec.event_timestamp].nunique() > 20

    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(settings, None, config)  # no spec: the champion's lineage names it
    store = app.state.service.store
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    served, inputs = [], []
    try:
        with serving(app, ready=False) as url:
            for hour, group in flights.groupby(spec.event_timestamp, sort=True):
                materialize_online(clean, spec, lake, store, as_of=hour.to_pydatetime())
                body = {"records": caller_records(group, spec)}
                res = predict_once_loaded(url, body)
                assert res.status_code == 200, res.text
                for p in res.json()["predictions"]:
                    served.append(p["probability"])
                    inputs.append(p["inputs"])
    finally:  # the shared store back to what the other serving tests expect
        materialize_online(clean, spec, lake, store)
    flights = flights.sort_values(spec.event_timestamp, kind="stable")
    assert_same_inputs(inputs, flights, spec)
    diff = np.abs(np.array(served) - flights["batch_probability"].to_numpy())
    print(f"parity on {len(diff)} flights: largest |served - batch| = {diff.max():.3g}")
    assert diff.max() <= 1e-6


def test_parity_on_a_users_dataset_with_integer_keys_and_history_views(
    settings, prefect_api, monkeypatch
):
    """The same check on a dataset written outside the package: integer country codes as
    entity and lookup keys (the lake holds them as float64, a request sends integers), a
    window view and a latest view over the country's own past."""
    spec = resolve_spec(GAPMINDER)
    lake = Lake(settings.lake_dir)
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    features = build_feature_set(clean, spec, lake)
    trained = train_and_log(
        features, TrainConfig(epochs=3, seed=0), Lake(settings.lake_dir), settings.tracking
    )
    client = configure_mlflow(settings.tracking)
    name = spec.registered_model
    register(client, name, trained.model_uri, "champion")
    monkeypatch.delenv("MLSYS_DATASET")
    monkeypatch.delenv("MLSYS_MODEL_NAME")
    scored = batch_score(model_name=name)
    frame, _ = load_feature_set(features, lake)
    assert lake.read(clean["observations"].clean)["iso_num"].dtype == "float64"
    frame = frame.assign(batch_probability=lake.read(scored.snapshot)["probability"].to_numpy())
    rows = frame[frame[SPLIT] == "test"]
    assert len(rows) >= 250

    config = serve_config("single").model_copy(update={"model_name": name})
    app = create_app(settings, None, config)
    store = app.state.service.store
    served, inputs = [], []
    with serving(app, ready=False) as url:
        for when, group in rows.groupby(spec.event_timestamp, sort=True):
            materialize_online(clean, spec, lake, store, as_of=when.to_pydatetime())
            records = caller_records(group, spec)
            assert all(isinstance(r["iso_num"], int) for r in records)
            res = predict_once_loaded(url, {"records": records})
            assert res.status_code == 200, res.text
            for p in res.json()["predictions"]:
                assert p["online_misses"] == [], p["online_misses"]
                served.append(p["probability"])
                inputs.append(p["inputs"])
    rows = rows.sort_values(spec.event_timestamp, kind="stable")
    assert_same_inputs(inputs, rows, spec)
    # The lookup and the history were found, not imputed: no input is missing at all.
    assert all(value is not None for got in inputs for value in got.values())
    diff = np.abs(np.array(served) - rows["batch_probability"].to_numpy())
    print(f"parity on {len(diff)} {spec.name} rows: largest |served - batch| = {diff.max():.3g}")
    assert diff.max() <= 1e-6


def test_mlsys_parity_replays_logged_requests_and_feature_set_rows(
    trained, client, model_name, monkeypatch, capsys
):
    register(client, model_name, trained.model.model_uri, "champion")
    settings = trained.settings
    monkeypatch.setenv("MLSYS_STATE_DIR", str(settings.root))
    lake = Lake(settings.lake_dir)
    frame, spec = load_feature_set(trained.feature_set, lake)
    hour = hours_with_most(frame[frame[SPLIT] == "test"], spec.event_timestamp, 1)
    when = hour[spec.event_timestamp].iloc[0]
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(settings, None, config)
    store = app.state.service.store
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    try:
        with serving(app, ready=False) as url:
            materialize_online(clean, spec, lake, store, as_of=when.to_pydatetime())
            started = pd.Timestamp.now(tz="UTC")
            body = {"records": caller_records(hour, spec)}
            assert predict_once_loaded(url, body).status_code == 200
            deadline = time.monotonic() + 30
            while len(read_prediction_log(lake, spec.name, since=started)) < len(hour):
                assert time.monotonic() < deadline, "the log was not flushed"
                time.sleep(0.2)
            # The logged requests, replayed as sent: online and offline agree (the store is
            # as of their hour).
            args = ["parity", "--url", url, "--sample", "50", "--since", started.isoformat()]
            assert main(args) == 0
            logged = capsys.readouterr().out
            # Feature-set rows from all over the test months against a store as of one
            # hour: the history views differ, and the report says which.
            assert main(["parity", "--url", url, "--sample", "40", "--feature-set"]) == 1
            sampled = capsys.readouterr().out
    finally:
        materialize_online(clean, spec, lake, store)
    largest = float(logged.split("probability ")[1].split()[0])
    assert largest <= 1e-6 and f"on {len(hour)} requests" in logged
    assert f"parity of {model_name} v1" in logged
    table = {line.split()[0]: line for line in sampled.splitlines()[2:] if "/" in line}
    assert int(table["carrier_flights_7d"].split()[-2].split("/")[0]) > 0  # mismatched rows
    assert "plane_year" not in table or " 0/" in table["plane_year"]  # lookups do not move
    assert "online store as of" in sampled


def test_the_report_names_each_input_and_its_source_whole():
    """A lookup by two keys was cut to its first (``lookup room_rates by Hotel``), as was a
    long dotted input's name."""
    inputs = [
        InputDifference(name="customer.billing.address.country", source="request",
                        compared=3, mismatched=1, largest=None),
        InputDifference(name="RackRate", source="lookup room_rates by Hotel, RoomType",
                        compared=3, mismatched=0, largest=0.0),
    ]  # fmt: skip
    report = ParityReport(
        model_name="bookings", model_version="1", requests=3, inputs=inputs,
        largest_probability_difference=0.0, mean_probability_difference=0.0, watermarks={},
    )  # fmt: skip
    rows = report.describe().splitlines()[2:]
    assert rows[0].split() == ["customer.billing.address.country", "request", "1/3"]
    assert rows[1].split() == ["RackRate", "lookup", "room_rates", "by", "Hotel,", "RoomType",
                               "0/3", "0"]  # fmt: skip
    header = report.describe().splitlines()[1]
    assert header.index("source") == rows[1].index("lookup")  # the columns line up
