"""Ingest, clean and feature extraction on flights x N: our batch pipeline against the same
logic written as DuckDB SQL, each in its own process, with time, rows/s and peak RSS.

    .venv/bin/python bench/data_pipeline.py              # x1 and x10, 3 repeats, ~6 min here
    .venv/bin/python bench/data_pipeline.py --scales 1 3 --repeats 1 --batch-rows 32768

Flights x N repeats the real year N times, copy k shifted by k years (weather too, so the
as-of join still finds readings); the flights land as one CSV file per month in a landing
folder, as production data would arrive. Our side runs the mlsys_core functions the flows
call (incremental ingest into month partitions, cleaning per partition in record batches,
feature assembly per month partition in record batches, on threads); DuckDB reads the
same CSV files and does the same
typing, range and allowed-value checks, duplicate-key quarantine, lookups, as-of weather
join, label and split, writing Parquet. Both sides' row counts and checksums are compared.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import scratch_folder  # noqa: E402


def make_data(folder: Path, scale: int) -> Path:
    """Landing folder of monthly flight files x scale, plus dimension CSVs and the spec."""
    import pandas as pd  # noqa: PLC0415

    from mlsys_core.data.sources import read_source  # noqa: PLC0415
    from mlsys_core.datasets.nycflights13 import nycflights13_spec  # noqa: PLC0415
    from mlsys_core.spec import SourceSpec  # noqa: PLC0415

    base = nycflights13_spec()
    tables = {s.name: read_source(s) for s in base.sources}
    landing = folder / "landing"
    landing.mkdir(parents=True)
    weather = []
    for k in range(scale):
        flights = tables["flights"].copy()
        flights["year"] += k
        flights["time_hour"] = (
            pd.to_datetime(flights["time_hour"]) + pd.DateOffset(years=k)
        ).dt.strftime("%Y-%m-%d %H:%M:%S")
        for month, rows in flights.groupby("month"):
            rows.to_csv(landing / f"{2013 + k}-{month:02d}.csv", index=False)
        w = tables["weather"].copy()
        w["year"] += k
        w["time_hour"] = (pd.to_datetime(w["time_hour"]) + pd.DateOffset(years=k)).dt.strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        weather.append(w)
    pd.concat(weather).to_csv(folder / "weather.csv", index=False)
    tables["planes"].to_csv(folder / "planes.csv", index=False)
    tables["airports"].to_csv(folder / "airports.csv", index=False)
    sources = [
        SourceSpec(
            name="flights",
            path=str(landing),
            incremental=True,
            pattern="*.csv",
            partition_by=["year", "month"],
        ),
        *(
            SourceSpec(name=t, path=str(folder / f"{t}.csv"))
            for t in ("weather", "planes", "airports")
        ),
    ]
    # History views over the flights themselves need the whole table at once; their
    # point-in-time joins have their own benchmark (bench/pit_join.py). Here: cleaning, the
    # lookups and the weather view, which batch assembly streams.
    history = [v for v in base.feature_views if v.source == base.base]
    dropped = {f for v in history for f in v.features}
    data = base.model_dump()
    data["sources"] = [s.model_dump() for s in sources]
    data["feature_views"] = [v.model_dump() for v in base.feature_views if v not in history]
    data["features"]["numeric"] = [f for f in data["features"]["numeric"] if f not in dropped]
    kept = {v["name"] for v in data["feature_views"]}
    data["streams"] = [s for s in data.get("streams", []) if set(s["views"]) <= kept]
    spec = type(base).model_validate(data)
    (folder / "spec.json").write_text(spec.model_dump_json())
    return folder / "spec.json"


def run_ours(spec_path: Path, state: Path, batch_rows: int) -> dict:
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
    from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.features.batch import assemble_in_batches  # noqa: PLC0415
    from mlsys_core.spec import DatasetSpec  # noqa: PLC0415

    spec = DatasetSpec.model_validate_json(spec_path.read_text())
    lake = Lake(state / "lake")
    start = time.perf_counter()
    raw = {s.name: snapshot_source(s, lake) for s in spec.sources}
    t_ingest = time.perf_counter()
    clean = {t: clean_snapshot(r, spec.contracts[t], lake, batch_rows) for t, r in raw.items()}
    t_clean = time.perf_counter()
    parts = assemble_in_batches(clean, spec, lake, "bench", batch_rows)
    end = time.perf_counter()
    label = pa.concat_tables(
        pq.read_table(lake.root / p.file, columns=[spec.label.name, "origin_temp"]) for p in parts
    )
    y = label.column(0).to_numpy(zero_copy_only=False)
    return {
        "seconds": end - start,
        "ingest_s": t_ingest - start,
        "clean_s": t_clean - t_ingest,
        "features_s": end - t_clean,
        "rows_in": raw["flights"].rows,
        "clean": clean["flights"].clean.rows,
        "quarantined": clean["flights"].quarantine.rows,
        "feature_rows": sum(p.rows for p in parts),
        "positives": int(np.nansum(y)),
        "labeled": int((~np.isnan(y)).sum()),
        "temp_present": int(label.column(1).drop_null().length()),
    }


def _check(name: str, rule) -> tuple[str, list[str]]:  # noqa: ANN001
    """Typed expression and reason expressions for one contract column, in SQL."""
    raw = f'"{name}"'
    if rule.dtype in ("int", "float"):
        typed = f"TRY_CAST({raw} AS DOUBLE)"
    elif rule.dtype == "datetime":
        typed = f"TRY_CAST({raw} AS TIMESTAMPTZ)"
    else:
        typed = raw
    reasons = [f"CASE WHEN {raw} IS NOT NULL AND {typed} IS NULL THEN '{name}: unparsable' END"]
    if not rule.nullable:
        reasons.append(f"CASE WHEN {raw} IS NULL THEN '{name}: null' END")
    if rule.dtype == "int":
        reasons.append(f"CASE WHEN {typed} % 1 <> 0 THEN '{name}: integer' END")
    if rule.ge is not None:
        reasons.append(f"CASE WHEN {typed} < {rule.ge} THEN '{name}: ge' END")
    if rule.le is not None:
        reasons.append(f"CASE WHEN {typed} > {rule.le} THEN '{name}: le' END")
    if rule.allowed is not None:
        values = ", ".join(f"'{v}'" for v in rule.allowed)
        reasons.append(f"CASE WHEN {typed} NOT IN ({values}) THEN '{name}: not allowed' END")
    return typed, reasons


def clean_sql(table: str, source: str, contract) -> str:  # noqa: ANN001
    checks = {name: _check(name, rule) for name, rule in contract.columns.items()}
    reasons = ", ".join(r for _, rs in checks.values() for r in rs)
    typed_cols = ", ".join(f'{typed} AS "{name}"' for name, (typed, _) in checks.items())
    keys = ", ".join(f'"{k}"' for k in contract.unique)
    dup = (
        f"CASE WHEN reason = '' AND ROW_NUMBER() OVER (PARTITION BY reason = '', {keys} "
        "ORDER BY __row) > 1 THEN 'duplicate key' ELSE reason END"
        if contract.unique
        else "reason"
    )
    return f"""
    CREATE TABLE {table}_checked AS
    WITH raw AS (SELECT *, ROW_NUMBER() OVER () AS __row FROM {source}),
    reasoned AS (SELECT *, CONCAT_WS('; ', {reasons}) AS reason FROM raw)
    SELECT * EXCLUDE (reason), {dup} AS reason FROM reasoned;
    CREATE TABLE {table}_clean AS
        SELECT * EXCLUDE (reason, __row) REPLACE ({typed_cols}) FROM {table}_checked
        WHERE reason = '' ORDER BY __row;
    CREATE TABLE {table}_quarantine AS
        SELECT * EXCLUDE (__row) FROM {table}_checked WHERE reason <> '';
    """


def run_duckdb(spec_path: Path, out: Path, threads: int | None = None) -> dict:
    import duckdb  # noqa: PLC0415

    from mlsys_core.spec import DatasetSpec  # noqa: PLC0415

    spec = DatasetSpec.model_validate_json(spec_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(out / "bench.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    start = time.perf_counter()
    for source in spec.sources:
        path = f"{source.path}/*.csv" if source.incremental else source.path
        con.execute(
            f"CREATE TABLE raw_{source.name} AS SELECT * FROM read_csv('{path}', "
            "all_varchar = true, nullstr = ['NA', ''], header = true)"
        )
    t_ingest = time.perf_counter()
    for source in spec.sources:
        con.execute(clean_sql(source.name, f"raw_{source.name}", spec.contracts[source.name]))
        for kind in ("clean", "quarantine"):
            con.execute(f"COPY {source.name}_{kind} TO '{out}/{source.name}_{kind}.parquet'")
    t_clean = time.perf_counter()
    weather = next(v for v in spec.feature_views if v.source == "weather")
    tol_s = weather.ttl.total_seconds()
    label = spec.label
    planes = ", ".join(f'p."{c}" AS "{o}"' for c, o in spec.lookups[0].columns.items())
    airports = ", ".join(f'a."{c}" AS "{o}"' for c, o in spec.lookups[1].columns.items())
    wcols = ", ".join(
        f'CASE WHEN epoch(f.time_hour) - epoch(w.time_hour) <= {tol_s} THEN w."{c}" END AS "{o}"'
        for c, o in weather.columns.items()
    )
    con.execute(f"""
        CREATE TABLE features AS
        SELECT f.carrier, f.flight, f.origin, f.dest, f.time_hour, f.distance,
               {planes}, {airports}, {wcols},
               CASE WHEN f.{label.column} IS NULL THEN NULL
                    WHEN f.{label.column} > {label.threshold} THEN 1.0 ELSE 0.0 END
                    AS {label.name},
               CASE WHEN f.time_hour < TIMESTAMPTZ '{spec.split.train_end.isoformat()}'
                    THEN 'train'
                    WHEN f.time_hour < TIMESTAMPTZ '{spec.split.valid_end.isoformat()}'
                    THEN 'valid' ELSE 'test' END AS _split
        FROM flights_clean f
        LEFT JOIN planes_clean p ON f.tailnum = p.tailnum
        LEFT JOIN airports_clean a ON f.dest = a.faa
        ASOF LEFT JOIN weather_clean w ON f.origin = w.origin AND f.time_hour > w.time_hour
    """)
    con.execute(f"COPY features TO '{out}/features.parquet'")
    end = time.perf_counter()

    def one(sql: str) -> int:
        return int(con.execute(sql).fetchone()[0] or 0)

    return {
        "seconds": end - start,
        "ingest_s": t_ingest - start,
        "clean_s": t_clean - t_ingest,
        "features_s": end - t_clean,
        "rows_in": one("SELECT count(*) FROM raw_flights"),
        "clean": one("SELECT count(*) FROM flights_clean"),
        "quarantined": one("SELECT count(*) FROM flights_quarantine"),
        "feature_rows": one("SELECT count(*) FROM features"),
        "positives": one(f"SELECT sum({label.name}) FROM features"),
        "labeled": one(f"SELECT count({label.name}) FROM features"),
        "temp_present": one("SELECT count(origin_temp) FROM features"),
    }


def child(args: argparse.Namespace) -> None:
    if args.child == "ours":
        result = run_ours(Path(args.spec), Path(args.state), args.batch_rows)
    else:
        threads = 1 if args.child == "duckdb1" else None
        result = run_duckdb(Path(args.spec), Path(args.state), threads)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def _spawn(kind: str, spec: Path, state: Path, batch_rows: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--spec", str(spec), "--state", str(state)]
    cmd += ["--batch-rows", str(batch_rows)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


SIDES = ("ours", "duckdb", "duckdb1")
TIMES = ("seconds", "ingest_s", "clean_s", "features_s")
CHECKS = ("rows_in", "clean", "quarantined", "feature_rows", "labeled", "positives", "temp_present")


def run_scale(spec: Path, folder: Path, batch_rows: int, repeats: int) -> dict[str, list[dict]]:
    """Each side's runs at one scale, every repeat in fresh state folders. The order turns
    each repeat, so no side always runs first (or last) in the machine's drift."""
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for r in range(repeats):
        turn = r % len(SIDES)
        for side in SIDES[turn:] + SIDES[:turn]:
            runs[side].append(_spawn(side, spec, folder / f"r{r}" / side, batch_rows))
    return runs


def summary(runs: list[dict]) -> dict:
    """One side's median times over its repeats, its peak memory's maximum, its checks."""
    first = runs[0]
    if any(r[k] != first[k] for r in runs for k in CHECKS):
        raise RuntimeError(
            f"results differ between repeats: {[{k: r[k] for k in CHECKS} for r in runs]}"
        )
    return {
        **{k: first[k] for k in CHECKS},
        **{k: statistics.median(r[k] for r in runs) for k in TIMES},
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, default=3, help="runs per side and scale")
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    rows = []
    with scratch_folder("mlsys-bench-data-", keep=args.keep) as root:
        for scale in args.scales:
            spec = make_data(root / f"x{scale}", scale)
            runs = run_scale(spec, root / f"x{scale}", args.batch_rows, args.repeats)
            rows.append((scale, runs, {side: summary(runs[side]) for side in SIDES}))
    print(f"\nbatch rows {args.batch_rows}; ours runs in one process; duckdb uses every core,")
    print("duckdb1 is DuckDB limited to one thread (the same compute as ours)")
    print(f"times: the median of {args.repeats} runs per side, the order turning each repeat")
    head = f"{'scale':>5} {'side':>7} {'rows':>9} {'total s':>8} {'ingest':>7} {'clean':>7}"
    print(head + f" {'feat':>7} {'rows/s':>9} {'peak MB':>8}")
    numbers: dict[str, dict] = {}
    for scale, runs, med in rows:
        ours, duck, duck1 = (med[side] for side in SIDES)
        for name, r in med.items():
            print(
                f"{scale:>5} {name:>7} {r['rows_in']:>9} {r['seconds']:>8.1f} {r['ingest_s']:>7.1f}"
                f" {r['clean_s']:>7.1f} {r['features_s']:>7.1f}"
                f" {r['rows_in'] / r['seconds']:>9.0f} {r['peak_rss_mb']:>8.0f}"
            )
        same = {k: (ours[k], duck[k]) for k in CHECKS}
        agree = all(a == b for a, b in same.values())
        print(f"      same results: {agree}  {same if not agree else ''}")
        per_run = [
            o["features_s"] / d["features_s"]
            for o, d in zip(runs["ours"], runs["duckdb"], strict=True)
        ]
        print(
            f"      time ratio ours/duckdb: {ours['seconds'] / duck['seconds']:.2f}x, "
            f"ours/duckdb1: {ours['seconds'] / duck1['seconds']:.2f}x; feature assembly "
            f"ours/duckdb: {ours['features_s'] / duck['features_s']:.2f}x (goal <= 1.2x)"
        )
        if len(per_run) > 1:
            print(
                "      feature assembly ours/duckdb per repeat: "
                + ", ".join(f"{x:.2f}x" for x in per_run)
            )
        numbers[f"x{scale}"] = {
            "same_results": agree,
            "total_ratio": round(ours["seconds"] / duck["seconds"], 3),
            "total_ratio_duckdb1": round(ours["seconds"] / duck1["seconds"], 3),
            "features_ratio": round(ours["features_s"] / duck["features_s"], 3),
            "features_ratio_per_repeat": [round(x, 3) for x in per_run],
            **{f"{n}_{k}": round(r[k], 2) for n, r in (("ours", ours), ("duckdb", duck))
               for k in ("seconds", "features_s", "peak_rss_mb")},
        }  # fmt: skip
    if len(rows) > 1:
        (first, _, m0), (last, _, m1) = rows[0], rows[-1]
        print(
            f"\npeak RSS ours x{first}: {m0['ours']['peak_rss_mb']:.0f} MB, "
            f"x{last}: {m1['ours']['peak_rss_mb']:.0f} MB "
            f"(ratio {m1['ours']['peak_rss_mb'] / m0['ours']['peak_rss_mb']:.2f} for "
            f"{last / first:.0f}x the rows)"
        )
    print("BENCH_JSON " + json.dumps(numbers))


if __name__ == "__main__":
    main()
