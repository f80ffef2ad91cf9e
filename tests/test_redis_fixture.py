"""The ``redis_url`` fixture: a real redis-server on 127.0.0.1, private to the test, gone
after it."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import redis

from tests.services import redis_server


def test_redis_url_is_a_real_private_server(redis_url: str):
    url = urlparse(redis_url)
    assert url.hostname == "127.0.0.1" and url.port
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0  # fresh: nothing left from another test
        client.set("view:origin:JFK", b"payload")
        assert client.get("view:origin:JFK") == b"payload"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""  # nothing written to disk
    finally:
        client.close()


def test_the_server_stops_with_its_context(tmp_path: Path):
    with redis_server(tmp_path / "redis") as url:
        port = urlparse(url).port
        assert redis.Redis.from_url(url).ping()
    with socket.socket() as sock:
        sock.settimeout(1.0)
        assert sock.connect_ex(("127.0.0.1", port)) != 0
