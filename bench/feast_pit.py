"""Feast's local offline store on the weather view of bench/pit_join.py, at growing sizes.

Runs with a separate virtual environment that has Feast (never mlsys's ``.venv``: Feast
pins other versions of shared packages), on the Parquet inputs that ``pit_join.py --keep``
leaves behind:

    python3 -m venv .feast-venv && .feast-venv/bin/pip install feast==0.67.0
    .venv/bin/python bench/pit_join.py --scale 1 --keep          # prints the kept folder
    .feast-venv/bin/python bench/feast_pit.py FOLDER --sizes 3000 30000 300000

Only the weather view is declared: Feast's ``get_historical_features`` joins the newest
feature row within the TTL; it has no windowed aggregation over raw events, so the history
views of pit_join.py have no Feast equivalent. Feast's join is inclusive (a reading at the
entity's time counts); mlsys's is strict. The time is that of
``get_historical_features(...).to_df()`` for the first N entity rows; each size runs in a
child process with a time limit, and the largest size that finishes is what the README
reports.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

WEATHER = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure"]
WEATHER += ["visib"]


def run_size(folder: Path, size: int) -> dict:
    import pandas as pd  # noqa: PLC0415
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource  # noqa: PLC0415
    from feast.repo_config import RepoConfig  # noqa: PLC0415
    from feast.types import Float64  # noqa: PLC0415

    repo = Path(tempfile.mkdtemp(prefix="feast-repo-"))
    config = RepoConfig(
        project="bench",
        registry=str(repo / "registry.db"),
        provider="local",
        online_store={"type": "sqlite", "path": str(repo / "online.db")},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    origin = Entity(name="origin", join_keys=["origin"])
    source = FileSource(path=str(folder / "weather.parquet"), timestamp_field="time_hour")
    view = FeatureView(
        name="origin_weather",
        entities=[origin],
        ttl=timedelta(hours=3),
        schema=[Field(name=c, dtype=Float64) for c in WEATHER],
        source=source,
    )
    store.apply([origin, view])
    flights = pd.read_parquet(folder / "flights.parquet", columns=["origin", "time_hour"])
    entity = flights.head(size).rename(columns={"time_hour": "event_timestamp"})
    start = time.perf_counter()
    out = store.get_historical_features(
        entity_df=entity, features=[f"origin_weather:{c}" for c in WEATHER]
    ).to_df()
    seconds = time.perf_counter() - start
    return {"size": size, "rows_out": len(out), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000, 300000])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # Fail with MemoryError instead of waking the kernel's OOM killer on a shared machine.
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_size(args.folder, args.child)))
        return
    for size in args.sizes:
        cmd = [sys.executable, __file__, str(args.folder), "--child", str(size)]
        cmd += ["--memory-gb", str(args.memory_gb)]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            print(f"feast {size:>9,} entity rows: no result within {args.timeout:.0f} s")
            break
        if done.returncode != 0:
            print(f"feast {size:>9,} entity rows: failed (exit {done.returncode})")
            print(done.stderr[-600:])
            break
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"feast {size:>9,} entity rows: {result['seconds']:.2f} s for the join,"
            f" {result['rows_out']:,} rows out ({time.perf_counter() - start:.1f} s with start-up)"
        )


if __name__ == "__main__":
    main()
