"""The nginx config the cluster writes, checked by real nginx, and the supervisor's health
checks on real replicas (a tiny ASGI app that starts fast; the inference service itself
runs behind nginx in tests/integration/test_serve_cluster.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from mlsys_core.net import free_port
from mlsys_core.serving.cluster import (
    Cluster,
    ClusterConfig,
    ClusterError,
    Upstream,
    check_nginx_conf,
    find_nginx,
    render_nginx_conf,
)
from tests.mlsys_core.serving.traffic import Traffic, wait_for

REPO = Path(__file__).resolve().parents[3]
ECHO_APP = "tests.mlsys_core.serving.echo_app:create_app"


def test_config_refuses_inconsistent_fields() -> None:
    with pytest.raises(ValidationError, match="needs weights"):
        ClusterConfig(strategy="weighted")
    with pytest.raises(ValidationError, match="weights apply to"):
        ClusterConfig(strategy="round_robin", weights=[1, 1])
    with pytest.raises(ValidationError, match="3 weights for 2 replicas"):
        ClusterConfig(strategy="weighted", weights=[1, 2, 3])
    with pytest.raises(ValidationError, match="weights must be 1-100"):
        ClusterConfig(strategy="least_conn", weights=[0, 2])
    with pytest.raises(ValidationError, match="must all differ"):
        ClusterConfig(port=9000, replica_ports=[9000, 9001])
    with pytest.raises(ValidationError, match="strategy"):
        ClusterConfig(strategy="random")


@pytest.mark.parametrize(
    ("strategy", "weights", "balance", "server_weights"),
    [
        ("round_robin", None, None, ["1", "1"]),
        ("weighted", [3, 1], None, ["3", "1"]),
        ("least_conn", None, "least_conn;", ["1", "1"]),
        ("least_conn", [2, 5], "least_conn;", ["2", "5"]),
    ],
)
def test_nginx_conf_per_strategy_is_valid_and_local(
    tmp_path: Path, strategy: str, weights: list[int] | None, balance, server_weights
) -> None:
    config = ClusterConfig(strategy=strategy, weights=weights, port=18080)
    ups = [Upstream(9001, config.weight(0)), Upstream(9002, config.weight(1), up=False)]
    text = render_nginx_conf(config, ups, tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / kind).mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    check_nginx_conf(find_nginx(), tmp_path, conf)  # real nginx -t

    upstream = re.search(r"upstream mlsys_replicas \{(.*?)\}", text, re.S)[1]
    assert ("least_conn;" in upstream) == (balance is not None)
    servers = re.findall(r"server 127\.0\.0\.1:(\d+) weight=(\d+) .*?;", upstream)
    assert [w for _, w in servers] == server_weights
    assert re.search(r"127\.0\.0\.1:9002 .* down;", upstream)  # dropped, still listed
    assert "127.0.0.1:9001 weight" in upstream and "9001 weight=" + server_weights[0] in upstream
    assert not re.search(r"127\.0\.0\.1:9001 .* down;", upstream)
    assert re.findall(r"listen (\S+);", text) == ["127.0.0.1:18080"]
    assert "non_idempotent" in text
    # Every file nginx writes is inside the prefix: no root-owned system path.
    paths = re.findall(r"\s(/[^\s;']+)", text)
    assert paths and all(p.startswith(str(tmp_path)) for p in paths), paths


def test_all_dropped_means_all_listed_as_up(tmp_path: Path) -> None:
    config = ClusterConfig()
    text = render_nginx_conf(config, [Upstream(9001, up=False), Upstream(9002, up=False)], tmp_path)
    assert " down;" not in text


def test_bad_nginx_conf_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp { upstream x { nonsense; } }\n")
    (tmp_path / "logs").mkdir()
    with pytest.raises(ClusterError, match="nginx rejects"):
        check_nginx_conf(find_nginx(), tmp_path, conf)


@pytest.fixture
def echo_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    """Two echo replicas behind nginx, the supervisor running in a thread."""
    flags = tmp_path / "flags"
    flags.mkdir()
    config = ClusterConfig(
        replicas=2,
        strategy="round_robin",
        port=free_port(),
        app=ECHO_APP,
        health_interval_s=0.2,
        restart_backoff_s=0.5,
        startup_timeout_s=120,
    )
    env = {"PYTHONPATH": str(REPO), "ECHO_FLAG_DIR": str(flags)}
    cluster = Cluster(config, tmp_path / "cluster", env=env)
    stop = threading.Event()
    cluster.start()
    # Both in rotation before the test starts.
    for _ in range(600):
        cluster.step()
        if all(r.in_rotation for r in cluster.replicas):
            break
        time.sleep(0.2)
    runner = threading.Thread(target=cluster.run, args=(stop,))
    runner.start()
    try:
        yield cluster, flags
    finally:
        stop.set()
        runner.join(timeout=60)


def published(cluster: Cluster) -> list[bool]:
    """Which replicas the status file (what users read) shows in rotation."""
    status = json.loads(cluster.status_path.read_text())
    return [r["in_rotation"] for r in status["replicas"]]


@pytest.mark.slow
def test_supervisor_drops_readds_and_restarts_replicas(echo_cluster) -> None:
    cluster, flags = echo_cluster
    a, b = cluster.replicas
    addr = {r.index: f"127.0.0.1:{r.port}" for r in cluster.replicas}
    with Traffic(cluster.url + "/predict", [{"x": 1}]) as traffic:
        wait_for(lambda: len(traffic.replies) > 50, 60, "traffic")
        assert {u for _, _, u in traffic.replies} == set(addr.values())  # round robin: both

        # Not ready (alive): the health check drops it from the upstream.
        # The status file is written once nginx's old workers have exited, so from then on
        # every reply comes from the new upstreams: no grace period.
        (flags / "not-ready-1").touch()
        wait_for(lambda: published(cluster) == [True, False], 30, "replica 1 dropped")
        t0 = time.monotonic()
        wait_for(lambda: len(traffic.since(t0)) > 50, 60, "traffic after the drop")
        assert {u for _, _, u in traffic.since(t0)} == {addr[0]}
        assert re.search(rf"127\.0\.0\.1:{b.port} .* down;", cluster.conf_path.read_text())

        # Ready again: back in rotation.
        (flags / "not-ready-1").unlink()
        wait_for(lambda: published(cluster) == [True, True], 30, "replica 1 back")
        t1 = time.monotonic()
        wait_for(lambda: addr[1] in {u for _, _, u in traffic.since(t1)}, 30, "traffic on 1")

        # Killed mid-traffic: no client sees it, and the supervisor restarts it.
        old_pid = a.proc.pid
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: a.restarts == 1 and a.in_rotation, 60, "replica 0 restarted")
        assert a.proc.pid != old_pid
        t2 = time.monotonic()
        wait_for(lambda: addr[0] in {u for _, _, u in traffic.since(t2)}, 30, "traffic on 0")

    assert traffic.errors == []
    assert {s for _, s, _ in traffic.replies} == {200}
    reloads = 4  # drop 1, add 1, drop 0, add 0
    assert traffic.stale <= reloads * 3, traffic.stale  # at most one per client per reload
    status = cluster.status()
    assert [r["in_rotation"] for r in status["replicas"]] == [True, True]
    assert any("dropped (exited)" in h for h in status["replicas"][0]["history"])
    assert any("dropped (not ready)" in h for h in status["replicas"][1]["history"])


@pytest.mark.slow
def test_stop_leaves_no_process(tmp_path: Path) -> None:
    config = ClusterConfig(replicas=1, port=free_port(), app=ECHO_APP, health_interval_s=0.2)
    cluster = Cluster(config, tmp_path / "c", env={"PYTHONPATH": str(REPO)})
    cluster.start()
    pids = [cluster.nginx.pid, cluster.replicas[0].proc.pid]
    assert httpx.get(cluster.url + "/health/ready").status_code == 200
    cluster.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(cluster.url + "/health/ready")


@pytest.mark.slow
def test_weighted_strategy_splits_traffic_by_weight(tmp_path: Path) -> None:
    # max_fails=0: a slow answer on a loaded machine (retried on the other replica) does
    # not take a replica out of the rotation, which would change the split.
    config = ClusterConfig(
        replicas=2,
        strategy="weighted",
        weights=[3, 1],
        port=free_port(),
        app=ECHO_APP,
        max_fails=0,
    )
    cluster = Cluster(config, tmp_path / "c", env={"PYTHONPATH": str(REPO)})
    cluster.start()
    try:

        def both_up() -> bool:
            cluster.step()
            return all(r.in_rotation for r in cluster.replicas)

        wait_for(both_up, 60, "both replicas in rotation")
        index = {f"127.0.0.1:{r.port}": str(i) for i, r in enumerate(cluster.replicas)}
        with httpx.Client() as client:
            replies = [client.post(cluster.url + "/predict", json={}) for _ in range(200)]
    finally:
        cluster.stop()
    assert all(r.status_code == 200 for r in replies)
    # nginx's smooth weighted round robin: exactly 3 of every 4 sequential requests go
    # first to replica 0 (X-Upstream lists each replica tried, the picked one first).
    first = [index[r.headers["X-Upstream"].split(",")[0].strip()] for r in replies]
    assert first.count("0") == 150 and first.count("1") == 50


@pytest.mark.slow
def test_nginx_port_taken_fails_and_stops_the_replicas(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ClusterConfig(replicas=1, port=port, app=ECHO_APP, health_interval_s=0.2)
        cluster = Cluster(config, tmp_path / "c", env={"PYTHONPATH": str(REPO)})
        with pytest.raises(ClusterError, match="nginx exited"):
            cluster.start()
    assert cluster.replicas[0].proc.poll() is not None  # stopped, not orphaned
