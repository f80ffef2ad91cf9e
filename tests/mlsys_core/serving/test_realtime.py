"""Real-time features through real HTTP: their age at request time is exported, and a value
older than its view's ttl reaches the model missing (imputed) and is counted."""

from __future__ import annotations

import re
import shutil

import httpx
import pandas as pd
import pytest

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.offline import OfflineStore
from mlsys_core.features.online import open_online_store
from mlsys_core.features.store import materialize_online, online_source_tables
from mlsys_core.serving.app import create_app
from mlsys_core.spec.definitions import WindowView
from tests.mlsys_core.serving.conftest import register, serve_config, serving
from tests.state import copy_state

pytestmark = pytest.mark.slow  # the shared fixture trains a real model

AS_OF = pd.Timestamp("2013-12-20T11:30:00Z")
REQUEST = {
    "carrier": "UA",
    "flight": 1545,
    "origin": "EWR",
    "dest": "IAH",
    "tailnum": "N14228",
}


def _metric(text: str, name: str, view: str) -> float:
    found = re.search(rf'^{name}{{view="{view}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_feature_age_is_exported_and_values_older_than_the_ttl_are_imputed(
    trained, client, model_name, tmp_path
):
    register(client, model_name, trained.model.model_uri, "champion")
    settings = copy_state(trained.settings, tmp_path / "state")
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(settings, None, config)
    spec = app.state.service.spec
    lake = Lake(settings.lake_dir)
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    store = open_online_store(settings.root)
    materialize_online(clean, spec, lake, store, as_of=AS_OF.to_pydatetime())
    timed = [v for v in spec.feature_views if isinstance(v, WindowView) and v.ttl]
    untimed = [v for v in spec.feature_views if isinstance(v, WindowView) and not v.ttl]
    assert timed and untimed
    fresh_at = AS_OF + timed[0].ttl / 2  # younger than the ttl
    stale_at = AS_OF + timed[0].ttl * 2  # older
    with serving(app) as url:
        answers = [
            httpx.post(
                f"{url}/predict",
                json={**REQUEST, "time_hour": when.isoformat()},
                params={"explain": "true"},
            )
            for when in (fresh_at, stale_at)
        ]
        metrics = httpx.get(f"{url}/metrics").text
    assert all(a.status_code == 200 for a in answers), answers[0].text
    fresh, stale = (a.json()["predictions"][0] for a in answers)
    for view in timed:
        stored = store.get_features({k: REQUEST[k] for k in view.entity.join_keys}, view.features)
        for feature in view.features:
            # Within the ttl: the stored value is used; beyond it: missing, imputed.
            assert fresh["inputs"][feature] == pytest.approx(stored[feature], nan_ok=True)
            assert feature not in fresh["imputed"] or stored[feature] is None
            assert stale["inputs"][feature] is None
            assert feature in stale["imputed"]
        # Each request's age of the view at its time, and one stale record counted.
        count = _metric(metrics, "mlsys_serving_feature_age_seconds_count", view.name)
        total = _metric(metrics, "mlsys_serving_feature_age_seconds_sum", view.name)
        assert count == 2
        expected = (fresh_at - AS_OF).total_seconds() + (stale_at - AS_OF).total_seconds()
        assert total == pytest.approx(expected)
        assert _metric(metrics, "mlsys_serving_stale_features_total", view.name) == 1
    for view in untimed:  # no ttl: never stale, used as stored
        assert _metric(metrics, "mlsys_serving_stale_features_total", view.name) == 0
        for feature in view.features:
            assert feature not in stale["imputed"] or fresh["inputs"][feature] is None


def test_the_stream_demo_shows_the_probability_move_and_measures_freshness(
    trained, client, model_name, tmp_path, monkeypatch
):
    """``mlsys stream-demo`` run small against a real served champion: each micro-batch's
    watermark becomes visible through /predict, and the answers follow the stream."""
    from flows.stream_demo import run_stream_demo  # noqa: PLC0415 - the flows' side

    register(client, model_name, trained.model.model_uri, "champion")
    root = copy_state(trained.settings, tmp_path / "state").root
    shutil.copytree(trained.settings.root / "online", root / "online")
    monkeypatch.setenv("MLSYS_STATE_DIR", str(root))
    config = serve_config("single").model_copy(update={"model_name": model_name})
    app = create_app(Settings(), None, config)
    spec = app.state.service.spec
    lines: list[str] = []
    with serving(app) as url:
        report = run_stream_demo(
            spec, url, "2013-03-08", speed=3 * 3600, interval_s=1.0, max_steps=7, out=lines.append
        )
    print("\n".join(lines))  # what a person watching sees
    # Every micro-batch that published was seen through /predict at its own watermark.
    assert len(report.freshness_s) >= 3
    assert report.watermarks == sorted(report.watermarks)
    assert len(set(report.watermarks)) == len(report.watermarks)
    assert all(0 < f < 30 for f in report.freshness_s)
    assert all(0 <= p <= 1 for p in report.probabilities)
    assert "freshness" in lines[-1] and "p50" in lines[-1]
    store = open_online_store(root)
    for view in spec.feature_views:
        if isinstance(view, WindowView):  # the stream wrote every view as of its watermark
            assert store.states()[view.name].watermark == pd.Timestamp(report.watermarks[-1])
    # It started from the lake's flights before the day, so what it wrote is what the offline
    # store computes from them at its watermark, 28-day windows included.
    assert sum(line.startswith("started from ") for line in lines) == 1
    lake = Lake(root / "lake")
    flights = lake.read(latest_clean(lake, "flights").clean)
    windows = [v for v in spec.feature_views if isinstance(v, WindowView)]
    offline = OfflineStore(windows, {"flights": flights})
    day = flights[pd.to_datetime(flights["time_hour"], utc=True).dt.strftime("%F") == "2013-03-08"]
    mark = pd.Timestamp(report.watermarks[-1])
    for view in windows:
        keys = view.entity.join_keys
        entities = day[keys].dropna().drop_duplicates().head(25).reset_index(drop=True)
        expected = offline.get_historical_features(entities.assign(__t=mark), view.features, "__t")[
            view.features
        ]
        got = pd.DataFrame(
            [store.get_features(dict(zip(keys, row, strict=True)), view.features)
             for row in entities.itertuples(index=False, name=None)],
            columns=view.features,
        )  # fmt: skip
        assert got[view.features].notna().any().any(), view.name  # not a vacuous agreement
        pd.testing.assert_frame_equal(
            got.astype("float64"), expected.astype("float64"), atol=1e-6, check_names=False
        )
