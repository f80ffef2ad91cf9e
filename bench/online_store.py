"""The online store, SQLite against Redis, and the stream job's writes against plain client
calls, in one run.

1. Lookup latency: one entity's features through ``OnlineStoreBase.get_features`` (the
   cache off, so every lookup reaches the backend), SQLite file vs a real redis-server on
   127.0.0.1; prints p50/p95 and the Redis/SQLite ratio.
2. Write rate: the stream job's micro-batch writes (``write_updates``: the updated
   entities of one view, upserted on the previous watermark, through ``write_view``) in rows
   per second, against writing the same rows (key, JSON payload) with plain ``sqlite3``
   ``executemany`` (one transaction) and a plain ``redis`` pipeline ``HSET``; prints the
   ratios (ours / plain).

    .venv/bin/python bench/online_store.py --entities 20000 --batches 5 --lookups 2000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import format_table  # noqa: E402
from mlsys_core.data.lake import Lake  # noqa: E402
from mlsys_core.datasets.nycflights13.spec import nycflights13_spec  # noqa: E402
from mlsys_core.features.online import (  # noqa: E402
    OnlineStoreBase,
    online_sources,
    open_online_store,
)
from mlsys_core.features.online_redis import RedisOnlineStore  # noqa: E402
from mlsys_core.net import HOST, free_port  # noqa: E402
from mlsys_core.stream.features import ViewUpdate, feature_stream_job  # noqa: E402
from mlsys_core.stream.online import _state, stream_key_kinds, write_updates  # noqa: E402

VIEW = "tail_departures"  # one of the flights stream's views, keyed by tail number


@contextmanager
def redis_url(folder: Path):
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", HOST, "--port", str(port), "--dir", str(folder), "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host=HOST, port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def updates(job, n: int, batches: int, rng: np.random.Generator) -> list[ViewUpdate]:
    """``batches`` micro-batches of ``n`` changed tails each, a minute of event time apart."""
    view = next(v for v in job.views if v.name == VIEW)
    tails = np.array([f"N{i:05d}" for i in range(n)], dtype=object)
    start = pd.Timestamp("2013-06-01T00:00Z")
    out = []
    for b in range(batches):
        frame = pd.DataFrame({"tailnum": tails})
        for agg in view.aggregations:
            if agg.function == "count":
                frame[agg.name] = rng.integers(0, 20, n).astype(np.int64)
            else:
                frame[agg.name] = rng.random(n) * 60
        since = start + pd.Timedelta(minutes=b)
        out.append(
            ViewUpdate(
                VIEW, ["tailnum"], view.features, since + pd.Timedelta(minutes=1), frame, since
            )
        )
    return out


def ours(store: OnlineStoreBase, job, kinds, batches: list[ViewUpdate], lake: Lake) -> float:
    view = next(v for v in job.views if v.name == VIEW)
    first = batches[0].since
    store.write_view(_state(view, kinds[VIEW], first.value, None), [], replace=True)
    started = time.perf_counter()
    for update in batches:
        done = write_updates(store, lake, job, [update], kinds)
        assert done.mode[VIEW] == "upsert", done
    return sum(len(u.rows) for u in batches) / (time.perf_counter() - started)


def _plain_rows(update: ViewUpdate) -> list[tuple[str, str]]:
    records = update.rows[update.features].to_dict("records")
    return [
        (json.dumps([k]), json.dumps(r))
        for k, r in zip(update.rows["tailnum"], records, strict=True)
    ]


def plain_sqlite(path: Path, batches: list[ViewUpdate]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
    started = time.perf_counter()
    for update in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)", _plain_rows(update))
        conn.execute("COMMIT")
    rate = sum(len(u.rows) for u in batches) / (time.perf_counter() - started)
    conn.close()
    return rate


def plain_redis(url: str, batches: list[ViewUpdate]) -> float:
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    for update in batches:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset("plain", mapping=dict(_plain_rows(update)))
            pipe.execute()
    return sum(len(u.rows) for u in batches) / (time.perf_counter() - started)


def lookups(store: OnlineStoreBase, n_entities: int, count: int, rng) -> np.ndarray:
    view = store.states()[VIEW]
    times = []
    for i in rng.integers(0, n_entities, count):
        started = time.perf_counter()
        store.get_features({"tailnum": f"N{i:05d}"}, view.features)
        times.append(time.perf_counter() - started)
    return np.array(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    spec = nycflights13_spec()
    job = feature_stream_job(spec)
    kinds = stream_key_kinds(
        online_sources(spec),
        job,
    )
    batches = updates(job, args.entities, args.batches, rng)
    with tempfile.TemporaryDirectory() as tmp, redis_url(Path(tmp)) as url:
        root = Path(tmp)
        lake = Lake(root / "lake")
        sqlite_store = open_online_store(root, None)
        redis_store = open_online_store(root, url)
        assert isinstance(redis_store, RedisOnlineStore)
        rates = {
            "sqlite": (
                ours(sqlite_store, job, kinds, batches, lake),
                plain_sqlite(root / "p.db", batches),
            ),
            "redis": (ours(redis_store, job, kinds, batches, lake), plain_redis(url, batches)),
        }
        for store in (sqlite_store, redis_store):
            store.cache.ttl_s = 0.0  # every lookup reaches the backend
        latency = {
            "sqlite": lookups(sqlite_store, args.entities, args.lookups, rng),
            "redis": lookups(redis_store, args.entities, args.lookups, rng),
        }
    print(f"{args.batches} micro-batches of {args.entities} updated entities ({VIEW})")
    print(
        format_table(
            ["backend", "stream writes rows/s", "plain client rows/s", "ours / plain"],
            [[b, f"{o:,.0f}", f"{p:,.0f}", f"{o / p:.2f}"] for b, (o, p) in rates.items()],
        )
    )
    print(f"\n{args.lookups} single-entity lookups (cache off)")
    print(
        format_table(
            ["backend", "p50 ms", "p95 ms"],
            [
                [b, f"{np.percentile(t, 50):.3f}", f"{np.percentile(t, 95):.3f}"]
                for b, t in latency.items()
            ],
        )
    )
    ratio = np.percentile(latency["redis"], 50) / np.percentile(latency["sqlite"], 50)
    print(f"lookup p50 ratio redis / sqlite: {ratio:.2f}")


if __name__ == "__main__":
    main()
