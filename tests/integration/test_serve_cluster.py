"""Traffic through nginx to 2 replicas of the real inference service serving a registered
champion: a replica killed mid-traffic costs no request, and once the health check has
dropped it, it gets no more traffic."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.online import OnlineStore, online_store_path, open_online_store
from mlsys_core.features.store import load_feature_set, materialize_online, online_source_tables
from mlsys_core.net import free_port
from mlsys_core.serving.sources import ServingPlan
from tests.integration.conftest import BIN, background, wait_http
from tests.mlsys_core.serving.traffic import Traffic, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def request_records(frame: pd.DataFrame, columns: list[str], n: int) -> list[dict]:
    """Test rows as JSON records (absent values left out, times as ISO text)."""
    rows = json.loads(frame[columns].head(n).to_json(orient="records", date_format="iso"))
    return [{k: v for k, v in r.items() if v is not None} for r in rows]


def status(folder: Path) -> dict:
    path = folder / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {"replicas": []}


def in_rotation(folder: Path) -> int:
    """How many replicas the cluster's status file shows in rotation (0 before it is written:
    an absent file must not read as "all of them")."""
    return sum(r["in_rotation"] for r in status(folder)["replicas"])


def test_replica_killed_mid_traffic_costs_no_request(tmp_path: Path, make_champion):
    settings = Settings(state_dir=tmp_path / "state")
    features = make_champion(settings).feature_set
    lake = Lake(settings.lake_dir)
    frame, spec = load_feature_set(features, lake)
    # What the promote flow does before every promotion: the service is ready only with
    # what it finds online (views, lookups) in the store.
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    materialize_online(clean, spec, lake, OnlineStore(online_store_path(settings.root)))
    columns = list(dict.fromkeys([*spec.entity_keys, spec.event_timestamp, *spec.input_columns]))
    bodies = request_records(frame[frame[SPLIT] == "test"], columns, 50)

    port, folder = free_port(), tmp_path / "cluster"
    env = {k: v for k, v in os.environ.items() if k != "MLSYS_TRACKING_URI"}
    env["MLSYS_STATE_DIR"] = str(settings.root)
    cmd = [str(BIN / "mlsys"), "serve-cluster", "--replicas", "2", "--strategy", "least_conn"]
    cmd += ["--port", str(port), "--no-restart", "--folder", str(folder)]
    cmd += ["--config", json.dumps({"health_interval_s": 0.25})]
    log = tmp_path / "cluster.log"
    with background(cmd, env, log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/ready", proc, 240, log)
        wait_for(lambda: in_rotation(folder) == 2, 120, "2 up")
        first, second = status(folder)["replicas"]
        addr = {r["index"]: f"127.0.0.1:{r['port']}" for r in (first, second)}

        def valid(reply: httpx.Response) -> bool:
            body = reply.json()
            probability = body["predictions"][0]["probability"]
            return 0 < probability < 1 and not math.isnan(probability)

        with Traffic(f"{url}/predict", bodies, threads=4, check=valid) as traffic:
            wait_for(
                lambda: {u for *_, u in traffic.replies} >= set(addr.values()), 60, "both serve"
            )
            os.kill(second["pid"], signal.SIGKILL)  # a crash, mid-traffic
            wait_for(lambda: not status(folder)["replicas"][1]["in_rotation"], 30, "drop")
            # nginx's old workers finish what they hold; new ones have the dead replica down.
            time.sleep(1.0)
            t0 = time.monotonic()
            wait_for(lambda: len(traffic.since(t0)) >= 100, 120, "traffic after the drop")

        after = traffic.since(t0)
        assert {u for *_, u in after} == {addr[0]}, "the dropped replica still got traffic"
        assert traffic.errors == [], traffic.errors[:5]
        assert [s for _, s, _ in traffic.replies if s != 200] == []
        assert traffic.bad == [], traffic.bad[:3]
        assert traffic.stale <= 4, traffic.stale  # one reload: at most one per client thread
        conf = (folder / "nginx.conf").read_text()
        assert f"{addr[1]} weight=1 max_fails=1 fail_timeout=10s down;" in conf
        nginx_pid, alive_pid = status(folder)["nginx_pid"], first["pid"]

        proc.send_signal(signal.SIGTERM)  # a clean shutdown of everything
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    for pid in (nginx_pid, alive_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health/ready")
    assert "stopped nginx and the replicas" in log.read_text()


def test_replicas_configured_with_one_redis_store_serve_the_same_answers(
    tmp_path: Path, make_champion, redis_url: str
):
    """``MLSYS_ONLINE_STORE=redis://...``: what one writer materialized is what every
    replica reads. The embedded SQLite store is never created, so readiness (which needs the
    online tables of the served version) proves the replicas found them in Redis."""
    settings = Settings(state_dir=tmp_path / "state")
    features = make_champion(settings).feature_set
    lake = Lake(settings.lake_dir)
    frame, spec = load_feature_set(features, lake)
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    materialize_online(clean, spec, lake, open_online_store(settings.root, redis_url))
    # What a caller knows: the request's fields; the service finds the rest online.
    plan = ServingPlan(spec)
    known = list(dict.fromkeys([*plan.required, *plan.request_keys, *plan.request_features]))
    bodies = request_records(frame[frame[SPLIT] == "test"], known, 20)

    port, folder = free_port(), tmp_path / "cluster"
    env = {k: v for k, v in os.environ.items() if k != "MLSYS_TRACKING_URI"}
    env |= {"MLSYS_STATE_DIR": str(settings.root), "MLSYS_ONLINE_STORE": redis_url}
    cmd = [str(BIN / "mlsys"), "serve-cluster", "--replicas", "2", "--strategy", "round_robin"]
    cmd += ["--port", str(port), "--no-restart", "--folder", str(folder)]
    log = tmp_path / "cluster.log"
    with background(cmd, env, log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/ready", proc, 240, log)
        wait_for(lambda: in_rotation(folder) == 2, 120, "2 up")
        # body index -> replica -> (probability, online misses); round robin sends a body's
        # two posts to both replicas, a few more posts absorb a request that one reload
        # moment sent twice to the same replica.
        answers: dict[int, dict[str, tuple[float, list[str]]]] = {}
        with httpx.Client(timeout=60) as client:
            for i, body in enumerate(bodies):
                for _ in range(4):
                    reply = client.post(f"{url}/predict", params={"explain": "true"}, json=body)
                    assert reply.status_code == 200, reply.text
                    (prediction,) = reply.json()["predictions"]
                    answers.setdefault(i, {})[reply.headers["x-upstream"]] = (
                        prediction["probability"],
                        sorted(prediction["online_misses"]),
                    )
                    if len(answers[i]) == 2:
                        break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert len(answers) == len(bodies)
    for i, by_replica in answers.items():
        assert len(by_replica) == 2, (i, by_replica)  # both replicas answered this body
        (p, misses), (q, other) = by_replica.values()
        assert p == pytest.approx(q, abs=1e-9) and misses == other, (i, by_replica)
    assert not (settings.root / "online").exists()  # nobody fell back to the embedded store
