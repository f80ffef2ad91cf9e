"""Point-in-time joins at scale: the mlsys offline store against hand-written references.

The entity rows are every nycflights13 flight, repeated ``--scale`` times (default 10, 3.4 M
rows) with copy k shifted by k x 53 weeks (no overlap between copies, same weekdays); the
flights and weather sources are repeated the same way. Three feature views from the flights
feature repository are joined: the origin weather (newest reading strictly before the
flight's hour, at most 3 h old), and the carrier's and the plane's arrival history (delay
rate, mean delay and count over 7 and 28 days of availability time).

Each method runs in its own child process, on the same Parquet inputs, and is timed from
frames in memory to a pandas frame of results in entity-row order:

- ``mlsys``: ``OfflineStore.get_historical_features``;
- ``duckdb``: SQL with ``ASOF JOIN`` (running sums per key over availability time, looked
  up at ``t`` and at ``t - window``, strictly before; weather as an as-of join + TTL check);
- ``pandas``: the same plan with ``pd.merge_asof(allow_exact_matches=False)``.

Every value of every feature must be identical across the three (NaN equal to NaN). The
ratio printed is mlsys time over the faster reference (goal <= 1.2). Peak memory is each
child's peak resident set during the join, from ``VmHWM`` reset just before it.

    .venv/bin/pip install -e '.[bench]'      # duckdb
    .venv/bin/python bench/pit_join.py       # 10x, ~3.4 M entity rows
    .venv/bin/python bench/pit_join.py --scale 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import (
    format_table,
    scratch_folder,
)

SHIFT = pd.Timedelta(weeks=53)
VIEWS = ("carrier_arrivals", "tail_arrivals", "origin_weather")
ENTITY = ["carrier", "origin", "dest", "tailnum", "time_hour"]
METHODS = ("mlsys", "duckdb", "pandas")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=10, help="copies of the flights (10)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method (1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale < 1 or args.repeats < 1:
        parser.error("--scale and --repeats must be at least 1")
    return args


def bench_views() -> list:
    from mlsys_core.datasets.nycflights13.views import flight_views  # noqa: PLC0415

    return [v for v in flight_views() if v.name in VIEWS]


def feature_names() -> list[str]:
    return [f for v in bench_views() for f in v.features]


# -- inputs ------------------------------------------------------------------------------------
def write_inputs(folder: Path, scale: int) -> dict[str, int]:
    """Typed (contract-cleaned) flights and weather, repeated ``scale`` times, as Parquet."""
    from mlsys_core.data.contract import clean_table  # noqa: PLC0415
    from mlsys_core.data.sources import read_source  # noqa: PLC0415
    from mlsys_core.datasets.nycflights13 import nycflights13_spec  # noqa: PLC0415

    spec = nycflights13_spec()
    columns = {
        "flights": [*ENTITY, "minute", "dep_delay", "air_time", "arr_delay"],
        "weather": ["origin", "time_hour", *bench_views()[-1].columns],
    }
    sizes = {}
    for name, cols in columns.items():
        raw = read_source(spec.source(name))
        clean = clean_table(raw, spec.contracts[name], name).clean[cols].reset_index(drop=True)
        copies = [clean.assign(time_hour=clean["time_hour"] + k * SHIFT) for k in range(scale)]
        frame = pd.concat(copies, ignore_index=True)
        for col in ("minute", "dep_delay", "air_time", "arr_delay"):
            if col in frame:
                frame[col] = frame[col].astype("float64")
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        sizes[name] = len(frame)
    return sizes


# -- the three methods -------------------------------------------------------------------------
def run_mlsys(tables: dict[str, pd.DataFrame], entity: pd.DataFrame) -> pd.DataFrame:
    from mlsys_core.features.offline import OfflineStore  # noqa: PLC0415

    store = OfflineStore(bench_views(), tables)
    out = store.get_historical_features(entity, feature_names(), "time_hour")
    return out[feature_names()]


def _minutes_sql(cols: list[str]) -> str:
    return " + ".join(f"{c}" for c in cols)


def run_duckdb(tables: dict[str, pd.DataFrame], entity: pd.DataFrame) -> pd.DataFrame:
    import duckdb  # noqa: PLC0415

    from mlsys_core.spec.definitions import LatestView  # noqa: PLC0415

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # A shared machine: let DuckDB spill rather than grow past this.
    con.execute(f"SET memory_limit = '{os.environ.get('PIT_DUCKDB_MEMORY', '6GB')}'")
    con.register("flights_df", tables["flights"])
    con.register("weather_df", tables["weather"])
    con.register("entity_df", entity)
    con.execute(
        "CREATE TEMP TABLE e AS SELECT row_number() OVER () - 1 AS row_id, * FROM entity_df"
    )
    selects, joins = ["e.row_id"], []
    for n, view in enumerate(bench_views()):
        keys = view.entity.join_keys
        on = " AND ".join(f"e.{k} = v{n}_{{side}}.{k}" for k in keys)
        if isinstance(view, LatestView):
            cols = ", ".join(view.columns)
            con.execute(
                f"CREATE TEMP TABLE v{n} AS SELECT {', '.join(keys)}, {view.timestamp} AS event,"
                f" {view.timestamp} + to_microseconds({pd.Timedelta(view.lag).value // 1000})"
                f" AS avail, {cols} FROM {view.source}_df"
            )
            joins.append(
                f"ASOF LEFT JOIN v{n} AS v{n}_x ON {on.format(side='x')}"
                f" AND e.time_hour > v{n}_x.avail"
            )
            ttl_us = pd.Timedelta(view.ttl).value // 1000
            for col, feature in view.columns.items():
                selects.append(
                    f"CASE WHEN v{n}_x.event >= e.time_hour - to_microseconds({ttl_us})"
                    f" THEN v{n}_x.{col} END AS {feature}"
                )
            continue
        rule = view.availability
        offset = _minutes_sql(rule.offset_minutes)
        lag_us = pd.Timedelta(rule.lag).value // 1000
        floor_us = pd.Timedelta(rule.at_least).value // 1000
        raw_avail = (
            f"{view.timestamp} + to_microseconds(CAST(round(({offset}) * 60000000) AS BIGINT))"
            f" + to_microseconds({lag_us})"
        )
        avail = (
            f"CASE WHEN ({offset}) IS NULL THEN NULL ELSE greatest({raw_avail},"
            f" {view.timestamp} + to_microseconds({floor_us})) END"
        )
        column = view.aggregations[0].column
        threshold = next(a.threshold for a in view.aggregations if a.function == "rate")
        con.execute(
            f"""CREATE TEMP TABLE v{n} AS
            SELECT {", ".join(keys)}, avail,
                   SUM(n) OVER w AS c_n, SUM(s) OVER w AS c_s, SUM(h) OVER w AS c_h
            FROM (
                SELECT {", ".join(keys)}, avail, COUNT(x) AS n, COALESCE(SUM(x), 0) AS s,
                       COUNT(x) FILTER (WHERE x > {threshold}) AS h
                FROM (SELECT {", ".join(keys)}, {avail} AS avail, {column} AS x
                      FROM {view.source}_df)
                WHERE avail IS NOT NULL AND {" AND ".join(f"{k} IS NOT NULL" for k in keys)}
                GROUP BY ALL
            )
            WINDOW w AS (PARTITION BY {", ".join(keys)} ORDER BY avail
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"""
        )
        joins.append(
            f"ASOF LEFT JOIN v{n} AS v{n}_hi ON {on.format(side='hi')}"
            f" AND e.time_hour > v{n}_hi.avail"
        )
        for window in sorted({a.window for a in view.aggregations}):
            w_us = pd.Timedelta(window).value // 1000
            side = f"lo{w_us}"
            joins.append(
                f"ASOF LEFT JOIN v{n} AS v{n}_{side} ON {on.format(side=side)}"
                f" AND e.time_hour - to_microseconds({w_us}) > v{n}_{side}.avail"
            )
        for agg in view.aggregations:
            side = f"v{n}_lo{pd.Timedelta(agg.window).value // 1000}"
            count = f"(COALESCE(v{n}_hi.c_n, 0) - COALESCE({side}.c_n, 0))"
            if agg.function == "count":
                selects.append(f"{count} AS {agg.name}")
                continue
            part = "c_s" if agg.function == "mean" else "c_h"
            total = f"(COALESCE(v{n}_hi.{part}, 0) - COALESCE({side}.{part}, 0))"
            selects.append(
                f"CASE WHEN {count} > 0 THEN CAST({total} AS DOUBLE) / {count} END AS {agg.name}"
            )
    query = f"SELECT {', '.join(selects)} FROM e {' '.join(joins)} ORDER BY e.row_id"
    out = con.execute(query).df()
    con.close()
    return out[feature_names()].reset_index(drop=True)


def _pandas_availability(view, frame: pd.DataFrame) -> pd.Series:  # noqa: ANN001
    rule = view.availability
    minutes = sum(frame[c] for c in rule.offset_minutes)
    avail = frame[view.timestamp] + pd.to_timedelta(minutes, unit="min") + rule.lag
    floor = frame[view.timestamp] + rule.at_least
    return avail.where(avail >= floor, floor).where(minutes.notna())


def run_pandas(tables: dict[str, pd.DataFrame], entity: pd.DataFrame) -> pd.DataFrame:
    from mlsys_core.spec.definitions import LatestView  # noqa: PLC0415

    left = entity.assign(_row=np.arange(len(entity))).sort_values("time_hour", kind="stable")
    out = pd.DataFrame(index=left.index)
    for view in bench_views():
        keys = view.entity.join_keys
        source = tables[view.source]
        if isinstance(view, LatestView):
            right = source[[*keys, view.timestamp, *view.columns]].rename(
                columns={view.timestamp: "_event"}
            )
            right["_avail"] = right["_event"] + view.lag
            right = right.dropna(subset=keys).sort_values("_avail", kind="stable")
            joined = pd.merge_asof(
                left[[*keys, "time_hour"]],
                right,
                left_on="time_hour",
                right_on="_avail",
                by=keys,
                allow_exact_matches=False,
            )
            fresh = (joined["_event"] >= joined["time_hour"] - view.ttl).to_numpy()
            for col, feature in view.columns.items():
                out[feature] = joined[col].where(fresh).to_numpy()
            continue
        column = view.aggregations[0].column
        threshold = next(a.threshold for a in view.aggregations if a.function == "rate")
        events = source[keys].assign(_avail=_pandas_availability(view, source), x=source[column])
        events = events.dropna(subset=[*keys, "_avail"])
        events["n"] = events["x"].notna().astype("int64")
        events["s"] = events["x"].fillna(0.0)
        events["h"] = (events["x"] > threshold).astype("int64")
        grouped = events.groupby([*keys, "_avail"], sort=True)[["n", "s", "h"]].sum()
        cum = grouped.groupby(level=list(range(len(keys))), sort=False).cumsum().reset_index()
        cum = cum.sort_values("_avail", kind="stable")

        def lookup(at: pd.Series, cum: pd.DataFrame = cum, keys: list[str] = keys) -> pd.DataFrame:
            probe = left[keys].assign(_t=at.to_numpy())
            probe = probe.assign(_i=np.arange(len(probe))).sort_values("_t", kind="stable")
            hit = pd.merge_asof(
                probe, cum, left_on="_t", right_on="_avail", by=keys, allow_exact_matches=False
            )
            hit = hit.sort_values("_i")
            return hit[["n", "s", "h"]].fillna(0).reset_index(drop=True)

        hi = lookup(left["time_hour"])
        lows = {w: lookup(left["time_hour"] - w) for w in {a.window for a in view.aggregations}}
        for agg in view.aggregations:
            lo = lows[agg.window]
            n = (hi["n"] - lo["n"]).to_numpy().astype("int64")
            if agg.function == "count":
                out[agg.name] = n
                continue
            total = (hi["s"] - lo["s"]) if agg.function == "mean" else (hi["h"] - lo["h"])
            with np.errstate(invalid="ignore", divide="ignore"):
                out[agg.name] = np.where(n > 0, total.to_numpy(np.float64) / n, np.nan)
    out["_row"] = left["_row"].to_numpy()
    return out.sort_values("_row")[feature_names()].reset_index(drop=True)


# -- child process: one method, timed, peak memory ---------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(method: str, folder: Path) -> None:
    tables = {n: pd.read_parquet(folder / f"{n}.parquet") for n in ("flights", "weather")}
    entity = tables["flights"][ENTITY]
    run = {"mlsys": run_mlsys, "duckdb": run_duckdb, "pandas": run_pandas}[method]
    import gc  # noqa: PLC0415

    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    start = time.perf_counter()
    out = run(tables, entity)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    out.to_parquet(folder / f"out-{method}.parquet", index=False)
    print(
        json.dumps({"seconds": seconds, "rss_before_mib": before / 1024, "peak_mib": peak / 1024})
    )


def run_child(method: str, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", method, str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(folder: Path) -> list[str]:
    """Names of features where any method differs from mlsys in any row."""
    outs = {m: pd.read_parquet(folder / f"out-{m}.parquet") for m in METHODS}
    bad = []
    for name in feature_names():
        ref = outs["mlsys"][name].to_numpy(np.float64)
        for method in METHODS[1:]:
            other = outs[method][name].to_numpy(np.float64)
            if len(other) != len(ref) or not np.array_equal(ref, other, equal_nan=True):
                diff = int((~((ref == other) | (np.isnan(ref) & np.isnan(other)))).sum())
                bad.append(f"{name} ({method}: {diff} rows differ)")
    return bad


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with scratch_folder("mlsys-bench-pit-", keep=args.keep) as folder:
        sizes = write_inputs(folder, args.scale)
        print(
            f"pit_join: {sizes['flights']:,} entity rows (flights x{args.scale}),"
            f" {sizes['weather']:,} weather rows; views {', '.join(VIEWS)};"
            f" {len(feature_names())} features"
        )
        results: dict[str, list[dict]] = {m: [] for m in METHODS}
        for r in range(args.repeats):
            order = METHODS if r % 2 == 0 else tuple(reversed(METHODS))
            for method in order:
                results[method].append(run_child(method, folder))
                print(f"  {method:<7} run {r + 1}: {results[method][-1]['seconds']:.2f} s")
        bad = compare(folder)
        rows = []
        for method, runs in results.items():
            best = min(x["seconds"] for x in runs)
            mean = sum(x["seconds"] for x in runs) / len(runs)
            peak = max(x["peak_mib"] for x in runs)
            before = runs[0]["rss_before_mib"]
            rows.append([method, f"{best:.2f}", f"{mean:.2f}", f"{before:.0f}", f"{peak:.0f}"])
        print()
        print(format_table(["method", "best s", "mean s", "RSS before MiB", "peak MiB"], rows))
        best = {m: min(x["seconds"] for x in runs) for m, runs in results.items()}
        faster = min(("duckdb", "pandas"), key=best.get)
        ratio = best["mlsys"] / best[faster]
        verdict = "ok" if ratio <= 1.2 else "OVER"
        print()
        print(f"values identical across all three: {'yes' if not bad else 'NO'}")
        for line in bad:
            print(f"  differs: {line}")
        print(
            f"time ratio mlsys / {faster} (best of {args.repeats}): {ratio:.3f}"
            f"  goal <= 1.2 {verdict}"
        )
        print(
            f"(1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs;"
            " duckdb uses all of them, mlsys and pandas one)"
        )


if __name__ == "__main__":
    main()
