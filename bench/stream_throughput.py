"""How fast does the feature stream job keep the flights' window views fresh? Events per
second of ``run_feature_batch`` on flights replayed as events, against two plain baselines
in the same run, over the same log segments and micro-batches:

- **read**: only reading and parsing the segments (JSON lines into a frame): the floor any
  consumer of this log pays;
- **recompute**: no incremental state; at each micro-batch's watermark, merge every event
  received so far and let the offline store recompute every entity of every view (what a
  job that reruns the batch computation on each micro-batch would do).

Both the stream job and the recompute produce the same values (the skew test proves it);
the ratios say what the incremental state buys and what the exactly-once commit costs.
The online store write rate against plain SQLite/Redis client calls joins this benchmark
once the stream writes to the online store.

    .venv/bin/python bench/stream_throughput.py                       # 3 days of flights
    .venv/bin/python bench/stream_throughput.py --days 1 --rows-per-segment 300
"""

from __future__ import annotations

import argparse
import os
import time

from _common import format_table, scratch_folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Events per second of the feature stream job on replayed flights, "
        "against reading the log only and against recomputing every view at each watermark."
    )
    parser.add_argument("--days", type=int, default=3, help="days of flights (default: 3)")
    parser.add_argument(
        "--start",
        default="2013-03-04",
        help="first day replayed, New York time (default: %(default)s)",
    )
    parser.add_argument(
        "--rows-per-segment", type=int, default=200, help="events per log segment (default: 200)"
    )
    parser.add_argument(
        "--segments-per-batch", type=int, default=1, help="segments per micro-batch (default: 1)"
    )
    args = parser.parse_args(argv)
    if args.days < 1 or args.rows_per_segment < 1 or args.segments_per_batch < 1:
        parser.error("--days, --rows-per-segment and --segments-per-batch must be at least 1")
    return args


def flight_events(args: argparse.Namespace):
    """The flights of the replayed days, the stream job and its events."""
    import pandas as pd  # noqa: PLC0415

    from mlsys_core.datasets.nycflights13.sample import read_tables  # noqa: PLC0415
    from mlsys_core.datasets.nycflights13.spec import nycflights13_spec  # noqa: PLC0415
    from mlsys_core.stream.features import feature_stream_job  # noqa: PLC0415
    from mlsys_core.stream.replay import source_events  # noqa: PLC0415

    flights = read_tables()["flights"]
    local = pd.to_datetime(flights["time_hour"], utc=True).dt.tz_convert("America/New_York")
    start = pd.Timestamp(args.start, tz="America/New_York")
    flights = flights[(local >= start) & (local < start + pd.Timedelta(days=args.days))]
    job = feature_stream_job(nycflights13_spec(), max_segments=args.segments_per_batch)
    return flights, job, source_events(job.stream, flights)


def time_recompute(job, events, batches, marks) -> float:
    """Seconds to recompute every entity of every view at each watermark, from scratch."""

    from mlsys_core.data.sources import iter_jsonl  # noqa: PLC0415
    from mlsys_core.features.offline import OfflineStore  # noqa: PLC0415

    stream = job.stream
    start_s = time.perf_counter()
    received = 0
    for batch, mark in zip(batches, marks, strict=True):
        received += sum(1 for p in batch for _ in iter_jsonl(p))
        rows = events.iloc[:received].drop(columns=[stream.time_column, stream.kind_column])
        merged = rows.groupby(stream.key, sort=False).first().reset_index()
        store = OfflineStore(job.views, {stream.source: merged})
        for view in job.views:
            entities = merged[view.entity.join_keys].dropna().drop_duplicates()
            store.get_historical_features(entities.assign(__t=mark), view.features, "__t")
    return time.perf_counter() - start_s


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import pandas as pd  # noqa: PLC0415

    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.data.sources import iter_jsonl  # noqa: PLC0415
    from mlsys_core.stream.features import run_feature_batch  # noqa: PLC0415
    from mlsys_core.stream.replay import write_segments  # noqa: PLC0415

    flights, job, events = flight_events(args)
    with scratch_folder("mlsys-bench-stream-") as root:
        log = root / "log"
        segments = write_segments(events, log, args.rows_per_segment)
        batches = [
            segments[i : i + args.segments_per_batch]
            for i in range(0, len(segments), args.segments_per_batch)
        ]

        start_s = time.perf_counter()
        for batch in batches:
            pd.DataFrame([r for p in batch for r in iter_jsonl(p)])
        read_s = time.perf_counter() - start_s

        lake = Lake(root / "lake")
        marks, updated = [], 0
        start_s = time.perf_counter()
        while (result := run_feature_batch(job, log, lake)).outcome.segments:
            marks.append(pd.Timestamp(result.outcome.watermark))
            updated += sum(result.outcome.updated.values())
        stream_s = time.perf_counter() - start_s
        recompute_s = time_recompute(job, events, batches, marks)

    n = len(events)
    rows = [
        ["read the log only", f"{read_s:.2f}", f"{n / read_s:,.0f}"],
        ["stream job (incremental, committed)", f"{stream_s:.2f}", f"{n / stream_s:,.0f}"],
        ["recompute every view per batch", f"{recompute_s:.2f}", f"{n / recompute_s:,.0f}"],
    ]
    print(
        f"stream_throughput: {len(flights):,} flights over {args.days} days from {args.start}, "
        f"{n:,} events in {len(segments)} segments, {len(batches)} micro-batches, "
        f"{len(job.views)} views; {updated:,} entity updates published"
    )
    print()
    print(format_table(["consumer", "seconds", "events/s"], rows))
    print()
    print(f"events/s ratio stream/read: {read_s / stream_s:.3f}")
    print(f"events/s ratio stream/recompute: {recompute_s / stream_s:.2f}")
    print(
        f"(1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"mean micro-batch {1000 * stream_s / max(len(batches), 1):.0f} ms)"
    )


if __name__ == "__main__":
    main()
