"""Rollout between the champion and challenger aliases, over real HTTP."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pandas as pd
import pytest

from mlsys_core.cli import main
from mlsys_core.data.lake import Lake
from mlsys_core.registry.lineage import TAG_CANARY_ROLLBACK
from mlsys_core.serving.abtest import ab_test
from mlsys_core.serving.app import create_app
from mlsys_core.serving.config import ABConfig, CanaryConfig, ShadowConfig
from mlsys_core.serving.outcomes import join_outcomes
from mlsys_core.serving.prediction_log import read_prediction_log
from mlsys_core.serving.router import bucket
from tests.mlsys_core.serving.conftest import records, register, serve_config, serving

pytestmark = pytest.mark.slow  # the shared fixture trains a real model


def _app(trained, spec, model_name, mode, **rollout):
    config = serve_config(mode, **rollout).model_copy(update={"model_name": model_name})
    return create_app(trained.settings, spec, config)


def _wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_blue_green_switch_drops_no_request(trained, client, model_name, small_spec, sample_rows):
    blue = register(client, model_name, trained.model.model_uri, "champion")
    green = register(client, model_name, trained.model.model_uri)
    batch = records(sample_rows, small_spec, 40)
    seen: dict[int, list[tuple[int, str | None]]] = {i: [] for i in range(4)}
    stop = threading.Event()

    def fire(worker: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            n = 0
            while not stop.is_set():
                res = http.post("/predict", json=batch[(worker * 10 + n) % len(batch)])
                version = res.json()["predictions"][0]["model_version"] if res.is_success else None
                seen[worker].append((res.status_code, version))
                n += 1

    with serving(_app(trained, small_spec, model_name, "blue_green")) as url:
        threads = [threading.Thread(target=fire, args=(i, url)) for i in range(4)]
        for thread in threads:
            thread.start()
        _wait(lambda: all(len(s) >= 5 for s in seen.values()))
        client.set_registered_model_alias(model_name, "champion", green)  # the switch
        _wait(lambda: all(s and s[-1][1] == green for s in seen.values()))
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        metrics = httpx.get(f"{url}/metrics").text
    for worker, answers in seen.items():
        assert all(status == 200 for status, _ in answers), worker
        versions = [v for _, v in answers]
        # Atomic: a client sees blue, then only green; never green then blue again.
        first_green = versions.index(green)
        assert set(versions[:first_green]) == {blue}, worker
        assert set(versions[first_green:]) == {green}, worker
    assert 'mlsys_serving_reloads_total{variant="champion"} 1.0' in metrics
    assert f'mlsys_serving_model_version{{variant="champion"}} {float(green)}' in metrics


def test_canary_rolls_back_a_failing_challenger(
    trained, client, model_name, small_spec, sample_rows, failing_model_uri, caplog
):
    champion = register(client, model_name, trained.model.model_uri, "champion")
    broken = register(client, model_name, failing_model_uri, "challenger")
    canary = CanaryConfig(share=0.5, max_error_rate=0.1, min_requests=10, window=50)
    batch = records(sample_rows, small_spec, 50)
    caplog.set_level(logging.WARNING, logger="mlsys_core.serving.service")
    with serving(_app(trained, small_spec, model_name, "canary", canary=canary)) as url:
        assert httpx.get(f"{url}/health/ready").json()["variants"] == {
            "champion": champion,
            "challenger": broken,
        }
        answers = [httpx.post(f"{url}/predict", json=r) for r in batch]
        metrics = httpx.get(f"{url}/metrics").text
        _wait(lambda: TAG_CANARY_ROLLBACK in client.get_model_version(model_name, broken).tags)
    # The client never saw the broken challenger: its records were rescored by the champion.
    assert all(a.status_code == 200 for a in answers)
    assert {a.json()["predictions"][0]["model_version"] for a in answers} == {champion}
    failed = float(metrics.split('mlsys_serving_errors_total{variant="challenger"} ')[1].split()[0])
    assert 10 <= failed < 40  # judged after 10 records, then no more challenger traffic
    assert "mlsys_serving_canary_rollbacks_total 1.0" in metrics
    assert "mlsys_serving_canary_active 0.0" in metrics
    record = json.loads(client.get_model_version(model_name, broken).tags[TAG_CANARY_ROLLBACK])
    assert "error rate" in record["reason"] and record["deployment"] == "mlsys-serve"
    assert any("canary rollback" in r.getMessage() for r in caplog.records)


def test_canary_rolls_back_a_slow_challenger(
    trained, client, model_name, small_spec, sample_rows, slow_model_uri
):
    register(client, model_name, trained.model.model_uri, "champion")
    slow = register(client, model_name, slow_model_uri, "challenger")
    canary = CanaryConfig(share=0.5, max_p99_ms=150, min_requests=4, window=20)
    batch = records(sample_rows, small_spec, 30)
    with serving(_app(trained, small_spec, model_name, "canary", canary=canary)) as url:
        answers = [httpx.post(f"{url}/predict", json=r) for r in batch]
        metrics = httpx.get(f"{url}/metrics").text
        _wait(lambda: TAG_CANARY_ROLLBACK in client.get_model_version(model_name, slow).tags)
    variants = [a.json()["predictions"][0]["variant"] for a in answers]
    assert all(a.status_code == 200 for a in answers)
    # The slow challenger answered (no errors) until its 4th record, then never again.
    assert variants.count("challenger") == 4
    last = max(i for i, v in enumerate(variants) if v == "challenger")
    assert set(variants[last + 1 :]) == {"champion"} and len(variants) - last > 5
    assert "mlsys_serving_canary_rollbacks_total 1.0" in metrics
    assert 'mlsys_serving_errors_total{variant="challenger"}' not in metrics
    record = json.loads(client.get_model_version(model_name, slow).tags[TAG_CANARY_ROLLBACK])
    assert "p99 latency" in record["reason"]


def test_canary_sends_a_share_to_a_healthy_challenger(
    trained, client, model_name, small_spec, sample_rows
):
    register(client, model_name, trained.model.model_uri, "champion")
    challenger = register(client, model_name, trained.model.model_uri, "challenger")
    batch = records(sample_rows, small_spec, 100)
    canary = CanaryConfig(share=0.3, min_requests=10)
    with serving(_app(trained, small_spec, model_name, "canary", canary=canary)) as url:
        got = httpx.post(f"{url}/predict", json={"records": batch}).json()["predictions"]
        metrics = httpx.get(f"{url}/metrics").text
    to_challenger = [p for p in got if p["variant"] == "challenger"]
    assert 15 <= len(to_challenger) <= 45  # 30 expected; binomial sd ~4.6
    assert {p["model_version"] for p in to_challenger} == {challenger}
    assert "mlsys_serving_canary_active 1.0" in metrics


def test_ab_is_sticky_and_reports_a_winner_once_labels_arrive(
    trained, client, model_name, small_spec, sample_rows, monkeypatch, capsys
):
    register(client, model_name, trained.model.model_uri, "champion")
    register(client, model_name, trained.model.model_uri, "challenger")
    batch = records(sample_rows, small_spec, 90)
    ab = ABConfig(share=0.5)
    started = pd.Timestamp.now(tz="UTC")
    with serving(_app(trained, small_spec, model_name, "ab", ab=ab)) as url:
        first = httpx.post(f"{url}/predict", json={"records": batch}).json()["predictions"]
        again = [httpx.post(f"{url}/predict", json=r).json()["predictions"][0] for r in batch]
    # Sticky: a record's variant is a function of its entity keys, the same on every call.
    assert [p["variant"] for p in first] == [p["variant"] for p in again]

    def key(record: dict) -> str:  # as validated: the int flight 271 arrives as 271.0
        values = [record[k] for k in small_spec.entity_keys]
        return "\x1e".join(str(int(v) if isinstance(v, float) else v) for v in values)

    expected = ["challenger" if bucket(key(r), ab.salt) < ab.share else "champion" for r in batch]
    assert [p["variant"] for p in first] == expected
    assert 20 <= expected.count("challenger") <= 70
    # Outcomes per variant: the log joined to the labels of the clean flights table.
    lake = Lake(trained.settings.lake_dir)
    log = read_prediction_log(lake, small_spec.name, since=started)
    log = log[log["model_name"] == model_name]
    assert len(log) == 180 and log["served"].all()
    result = ab_test(join_outcomes(lake, small_spec, log), min_outcomes=20)
    assert set(result.variants) == {"champion", "challenger"}
    labelled = int(sample_rows[small_spec.label.name].head(90).notna().sum())
    assert labelled >= 80  # cancelled flights carry no label, so no outcome
    assert sum(v.outcomes for v in result.variants.values()) == 2 * labelled
    # Both variants are the same weights: no winner may be declared.
    assert result.winner is None and result.p_value is not None and result.p_value > 0.05
    # The same through the command.
    monkeypatch.setenv("MLSYS_STATE_DIR", str(trained.settings.root))
    assert main(["ab-test", "--model-name", model_name, "--min-outcomes", "20"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["compared"] == ["champion", "challenger"]
    assert printed["variants"]["champion"]["outcomes"] == result.variants["champion"].outcomes


def test_shadow_logs_the_challenger_but_answers_with_the_champion(
    trained, client, model_name, small_spec, sample_rows
):
    champion = register(client, model_name, trained.model.model_uri, "champion")
    challenger = register(client, model_name, trained.model.model_uri, "challenger")
    batch = records(sample_rows, small_spec, 25)
    started = pd.Timestamp.now(tz="UTC")
    with serving(_app(trained, small_spec, model_name, "shadow", shadow=ShadowConfig())) as url:
        got = [httpx.post(f"{url}/predict", json=r).json()["predictions"][0] for r in batch]
        _wait(
            lambda: (
                'mlsys_serving_requests_total{variant="challenger"} 25.0'
                in httpx.get(f"{url}/metrics").text
            )
        )
    assert {(p["variant"], p["model_version"]) for p in got} == {("champion", champion)}
    log = read_prediction_log(Lake(trained.settings.lake_dir), small_spec.name, since=started)
    log = log[log["model_name"] == model_name]
    served, shadow = log[log["served"]], log[~log["served"]]
    assert set(served["variant"]) == {"champion"} and len(served) == 25
    assert set(shadow["variant"]) == {"challenger"} and len(shadow) == 25
    assert set(shadow["model_version"]) == {challenger}
    # Every shadow row repeats its champion's request id; same weights, same probability.
    pairs = served.merge(shadow, on="request_id", suffixes=("", "_shadow"))
    assert len(pairs) == 25
    assert (pairs["probability"] - pairs["probability_shadow"]).abs().max() < 1e-9
    assert set(pairs["request_id"]) == {p["request_id"] for p in got}


def test_a_failing_shadow_never_reaches_the_client(
    trained, client, model_name, small_spec, sample_rows, failing_model_uri
):
    register(client, model_name, trained.model.model_uri, "champion")
    register(client, model_name, failing_model_uri, "challenger")
    batch = records(sample_rows, small_spec, 10)
    with serving(_app(trained, small_spec, model_name, "shadow")) as url:
        answers = [httpx.post(f"{url}/predict", json=r) for r in batch]
        _wait(
            lambda: (
                'mlsys_serving_errors_total{variant="challenger"} 10.0'
                in httpx.get(f"{url}/metrics").text
            )
        )
    assert all(a.status_code == 200 for a in answers)
    assert {a.json()["predictions"][0]["variant"] for a in answers} == {"champion"}
