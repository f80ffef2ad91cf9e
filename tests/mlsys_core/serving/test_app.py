"""The inference API over real HTTP: predictions, health, metrics and bad input."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlsys_core.data.lake import Lake
from mlsys_core.datasets import resolve_spec
from mlsys_core.features.online import OnlineStore, online_store_path
from mlsys_core.registry.lineage import lineage
from mlsys_core.serving.app import create_app
from mlsys_core.serving.config import ServeConfig
from mlsys_core.serving.models import load_version
from mlsys_core.serving.prediction_log import META_COLUMNS, read_prediction_log
from mlsys_core.training.run import model_input_frame
from tests.mlsys_core.serving.conftest import records, register, serve_config, serving

pytestmark = pytest.mark.slow  # the shared fixture trains a real model


def test_predict_matches_the_registered_model(trained, client, model_name, small_spec, sample_rows):
    version = register(client, model_name, trained.model.model_uri, "champion")
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(trained.settings, small_spec, config)
    batch = records(sample_rows, small_spec, 20)
    with serving(app) as url:
        one = httpx.post(f"{url}/predict", json=batch[0])
        many = httpx.post(f"{url}/predict", json={"records": batch})
    assert one.status_code == 200, one.text
    assert many.status_code == 200, many.text
    got = many.json()["predictions"]
    assert len(got) == 20
    assert {p["model_version"] for p in got} == {version}
    assert {p["variant"] for p in got} == {"champion"}
    assert {p["model_name"] for p in got} == {model_name}
    # The same numbers as the registered pyfunc on the training-time input frame.
    loaded = load_version(client, model_name, version)
    frame = model_input_frame(sample_rows.head(20), small_spec)
    expected = loaded.python_model.predict(None, frame)
    np.testing.assert_allclose([p["raw_probability"] for p in got], expected, rtol=1e-5)
    calibrated = loaded.calibration.apply(expected)
    np.testing.assert_allclose([p["probability"] for p in got], calibrated, rtol=1e-9)
    # Calibration was fitted on the validation split at training time and improves the
    # test split's calibration error (the model's raw scores sit near 0.5 after one epoch).
    assert loaded.calibrated and "valid" in loaded.calibration.fitted_on
    metrics = client.get_run(trained.model.run_id).data.metrics
    assert metrics["test_ece_calibrated"] < metrics["test_ece"]
    for p in got:
        assert p["prediction"] == int(p["probability"] >= 0.5)
        assert math.isclose(p["confidence"], max(p["probability"], 1 - p["probability"]))
    assert one.json()["predictions"][0]["raw_probability"] == pytest.approx(expected[0], rel=1e-5)


def _app(trained, spec, model_name, mode="blue_green", **updates):
    config = serve_config(mode).model_copy(update={"model_name": model_name, **updates})
    return create_app(trained.settings, spec, config)


def test_not_ready_until_the_champion_is_loaded(
    trained, client, model_name, small_spec, sample_rows
):
    record = records(sample_rows, small_spec, 1)[0]
    with serving(_app(trained, small_spec, model_name), ready=False) as url:
        assert httpx.get(f"{url}/health/live").status_code == 200
        not_ready = httpx.get(f"{url}/health/ready")
        assert not_ready.status_code == 503
        assert "champion" in not_ready.json()["detail"]
        refused = httpx.post(f"{url}/predict", json=record)
        assert refused.status_code == 503
        version = register(client, model_name, trained.model.model_uri, "champion")
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ready = httpx.get(f"{url}/health/ready").json()
        assert ready["variants"] == {"champion": version}
        assert httpx.post(f"{url}/predict", json=record).status_code == 200
    # The load is recorded in the version's lineage.
    served = lineage(client, f"models:/{model_name}/{version}").served_by
    assert [s.deployment for s in served] == ["mlsys-serve/champion"]


def test_bad_input_gets_a_4xx_with_a_reason(trained, client, model_name, small_spec, sample_rows):
    register(client, model_name, trained.model.model_uri, "champion")
    good = records(sample_rows, small_spec, 1)[0]
    cases = {
        "missing entity key": ({k: v for k, v in good.items() if k != "carrier"}, "carrier"),
        "missing event time": ({k: v for k, v in good.items() if k != "time_hour"}, "time_hour"),
        "text for a number": ({**good, "distance": "far"}, "distance"),
        "bool for a number": ({**good, "distance": True}, "distance"),
        "number for text": ({**good, "dest": 7}, "dest"),
        "fractional int": ({**good, "flight": 1.5}, "flight"),
        "outside the contract": ({**good, "distance": -5.0}, "distance"),
        "unknown field": (
            {**good, "distnace": 100.0},
            "no field 'distnace': did you mean 'distance'?",
        ),
        "a field in another case": ({**good, "Distance": 1.0}, "did you mean 'distance'?"),
        "a field the data never had": ({**good, "price": 1.0}, "no field 'price'"),
        "time out of range": ({**good, "time_hour": "3000-01-01T00:00:00Z"}, "time_hour"),
        "not a time": ({**good, "time_hour": "yesterday"}, "time_hour"),
        "empty batch": ({"records": []}, "records"),
        "too many records": ({"records": [good] * 11}, "records"),
        "not an object": ([1, 2], "body"),
    }

    def raw(field: str, literal: str) -> str:
        return json.dumps({**good, field: "__X__"}).replace('"__X__"', literal)

    raw_cases = {
        "NaN": (raw("distance", "NaN"), "distance"),
        "Infinity": (raw("distance", "-Infinity"), "distance"),
        "overflow to inf": (raw("distance", "1e400"), "distance"),
        "lone surrogate": (raw("dest", '"\\ud800"'), "dest"),
        "not JSON": ("{carrier: UA", "body"),
    }
    app = _app(trained, small_spec, model_name, max_batch_records=10, max_body_bytes=64 * 1024)
    with serving(app) as url:
        for name, (body, field) in cases.items():
            res = httpx.post(f"{url}/predict", json=body)
            assert res.status_code == 422, (name, res.text)
            assert field in res.text, (name, res.text)
        for name, (text, field) in raw_cases.items():
            res = httpx.post(
                f"{url}/predict", content=text, headers={"content-type": "application/json"}
            )
            assert res.status_code == 422, (name, res.text)
            assert field in res.text, (name, res.text)
        big = {"records": [good] * 200}  # ~ 200 kB, over the 64 kB limit
        assert httpx.post(f"{url}/predict", json=big).status_code == 413
        data = json.dumps(big).encode()
        chunked = httpx.post(
            f"{url}/predict",
            content=iter([data[i : i + 8192] for i in range(0, len(data), 8192)]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413, chunked.text
        assert "bytes" in chunked.json()["detail"]
        # An unseen category is not an error: the model scores it as training does.
        unseen = {**good, "carrier": "ZZ", "dest": "NOWHERE"}
        res = httpx.post(f"{url}/predict", json=unseen)
        assert res.status_code == 200, res.text
        # The event's other columns, sent as the file writes them (the label's among them),
        # are accepted and change nothing; a name the data never had stays a 422 (above).
        whole = {**good, "arr_delay": 45.0, "dep_time": 517, "year": 2013, "month": "Jan"}
        as_file, alone = (httpx.post(f"{url}/predict", json=r) for r in (whole, good))
        assert as_file.status_code == 200, as_file.text
        (scored,), (expected,) = as_file.json()["predictions"], alone.json()["predictions"]
        assert scored["probability"] == expected["probability"]
        metrics = httpx.get(f"{url}/metrics").text
    assert 'mlsys_serving_http_responses_total{status="422"} ' in metrics
    assert 'mlsys_serving_http_responses_total{status="413"} 2.0' in metrics
    frame = model_input_frame(
        pd.DataFrame([{**sample_rows.iloc[0].to_dict(), "carrier": "ZZ", "dest": "NOWHERE"}]),
        small_spec,
    )
    model = load_version(client, model_name, "1")
    expected = model.python_model.predict(None, frame)[0]
    assert res.json()["predictions"][0]["raw_probability"] == pytest.approx(expected, rel=1e-5)


def test_metrics_and_prediction_log(trained, client, model_name, small_spec, sample_rows):
    version = register(client, model_name, trained.model.model_uri, "champion")
    batch = records(sample_rows, small_spec, 30)
    # The second half carries no feature-store features: the service looks them up online.
    views = set(small_spec.view_features)
    bare = [{k: v for k, v in r.items() if k not in views} for r in batch[15:]]
    started = pd.Timestamp.now(tz="UTC")
    with serving(_app(trained, small_spec, model_name)) as url:
        answers = [httpx.post(f"{url}/predict", json=r).json() for r in batch[:15]]
        answers.append(httpx.post(f"{url}/predict", json={"records": bare}).json())
        metrics = httpx.get(f"{url}/metrics").text
    predictions = [p for a in answers for p in a["predictions"]]
    assert len(predictions) == 30
    assert 'mlsys_serving_requests_total{variant="champion"} 30.0' in metrics
    assert 'mlsys_serving_latency_seconds_count{variant="champion"} 30.0' in metrics
    assert 'mlsys_serving_errors_total{variant="champion"}' not in metrics  # none failed
    assert 'mlsys_serving_throughput_records_per_second{variant="champion"}' in metrics
    assert f'mlsys_serving_model_version{{variant="champion"}} {float(version)}' in metrics
    # Flushed on shutdown at the latest: one row per prediction, the contract's columns.
    log = read_prediction_log(Lake(trained.settings.lake_dir), small_spec.name, since=started)
    log = log[log["model_name"] == model_name]
    assert len(log) == 30
    expected_cols = {*META_COLUMNS, *small_spec.entity_keys, small_spec.event_timestamp}
    assert expected_cols | set(small_spec.input_columns) <= set(log.columns)
    by_id = log.set_index("request_id")
    assert set(by_id.index) == {p["request_id"] for p in predictions}
    for p in predictions:
        row = by_id.loc[p["request_id"]]
        assert row["probability"] == pytest.approx(p["probability"])
        assert row["prediction"] == p["prediction"]
        assert row["variant"] == "champion" and bool(row["served"])
        assert row["model_version"] == version
    # What the model saw for the bare records: the online store's values.
    store = OnlineStore(online_store_path(trained.settings.root))
    looked_up = [f for f in small_spec.view_features if f in store.feature_names()]
    assert looked_up
    for rec, p in zip(bare, predictions[15:], strict=True):
        online = store.get_features({**rec, "tailnum": None}, looked_up)  # no tail sent
        row = by_id.loc[p["request_id"]]
        for name, value in online.items():
            if value is None:
                assert pd.isna(row[name]), name
            else:
                assert row[name] == pytest.approx(value), name


def test_a_category_the_model_never_saw_is_named_and_counted(
    trained, client, model_name, small_spec, sample_rows
):
    """A caller writing a value otherwise than the data does (``ua`` for ``UA``, a zip code
    without its leading zero) is scored as an unknown category, as training scored rare
    ones: legitimate, but silent before. ``?explain=true`` names the input, and
    ``/metrics`` counts it by input, so a caller's systematic mistake shows."""
    register(client, model_name, trained.model.model_uri, "champion")
    (record,) = records(sample_rows, small_spec, 1)
    assert isinstance(record["carrier"], str) and record["carrier"].isupper()
    wrong = {**record, "carrier": record["carrier"].lower(), "origin": "XXX"}
    with serving(_app(trained, small_spec, model_name)) as url:
        right = httpx.post(f"{url}/predict", json=record, params={"explain": "true"})
        told = httpx.post(f"{url}/predict", json=wrong, params={"explain": "true"})
        plain = httpx.post(f"{url}/predict", json=wrong)
        metrics = httpx.get(f"{url}/metrics").text
    assert right.json()["predictions"][0]["unseen"] == []
    (answer,) = told.json()["predictions"]
    assert answer["unseen"] == ["carrier", "origin"]
    assert answer["inputs"]["carrier"] == record["carrier"].lower()  # scored, not refused
    assert "unseen" not in plain.json()["predictions"][0]  # only when asked to explain
    assert 'mlsys_serving_unseen_categories_total{input="carrier"} 2.0' in metrics
    assert 'mlsys_serving_unseen_categories_total{input="origin"} 2.0' in metrics


def test_overload_is_refused_fast_not_queued(
    trained, client, model_name, small_spec, sample_rows, slow_model_uri
):
    register(client, model_name, slow_model_uri, "champion")  # 0.3 s per model call
    record = records(sample_rows, small_spec, 1)[0]
    app = _app(trained, small_spec, model_name, max_queued_records=2)
    with serving(app) as url, ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda _: httpx.post(f"{url}/predict", json=record, timeout=60), range(12))
        )
        metrics = httpx.get(f"{url}/metrics").text
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 503}, codes
    assert all("overloaded" in a.json()["detail"] for a in answers if a.status_code == 503)
    assert codes.count(200) >= 3  # the one scoring plus up to two waiting, and later ones
    assert 'mlsys_serving_http_responses_total{status="503"}' in metrics


def test_the_docs_example_is_a_row_of_the_data_that_scores(trained, client, model_name, small_spec):
    """The API's docs page fills its first request with the example the schema publishes:
    the first clean row of the base table, as a caller sends it (without the inputs the
    service finds), which scores alone and as a batch. The placeholders it filled in before
    (``"string"`` for the event time) were a 422."""
    register(client, model_name, trained.model.model_uri, "champion")
    lake = Lake(trained.settings.lake_dir)
    row = lake.head(lake.latest("clean", small_spec.base)).iloc[0]
    with serving(_app(trained, small_spec, model_name)) as url:
        schema = httpx.get(f"{url}/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        examples = {name: e["value"] for name, e in body["examples"].items()}
        answers = [httpx.post(f"{url}/predict", json=examples[n]) for n in ("record", "batch")]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    record = examples["record"]
    assert examples["batch"] == {"records": [record]}
    assert record[small_spec.event_timestamp] == row[small_spec.event_timestamp].isoformat()
    assert all(record[key] == row[key] for key in small_spec.entity_keys)
    serving_plan = next(
        s["x-mlsys-serving"]
        for s in schema["components"]["schemas"].values()
        if "x-mlsys-serving" in s
    )
    assert serving_plan["found_by_service"] and not set(record) & set(
        serving_plan["found_by_service"]
    )


def test_a_named_spec_sets_the_request_schema(settings):
    """``ServeConfig.spec`` picks the dataset spec: the digits spec's pixels, not flights."""
    config = serve_config().model_copy(update={"spec": "digits", "model_name": "digits"})
    with serving(create_app(settings=settings, config=config), ready=False) as url:
        schemas = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
        fields = set().union(*(s.get("properties", {}) for s in schemas.values()))
        assert set(resolve_spec("digits").input_columns) <= fields
        assert "carrier" not in fields
        assert httpx.get(f"{url}/health/ready").status_code == 503  # no digits model yet
        post = httpx.get(f"{url}/openapi.json").json()["paths"]["/predict"]["post"]
        assert "examples" not in post["requestBody"]["content"]["application/json"]  # no data
    with pytest.raises(ValidationError, match="no dataset 'nope'"):
        ServeConfig(spec="nope")
