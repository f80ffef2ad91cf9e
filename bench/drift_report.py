"""What does the drift check's HTML report cost on a wide table, shown whole or capped?

Baseline: a plain Evidently ``DataDriftPreset`` report of every checked column (what the
check rendered before). Ours: ``mlsys_core.monitoring.drift.write_html_report``, the same
page without the preset's per-column metrics it drops (every column, then its default cap:
the ``REPORT_COLUMNS`` columns that drifted most). Same frames, same verdict, same run; the
verdict itself (our cached statistics) is timed apart, since no report changes it.

    .venv/bin/python bench/drift_report.py                  # ~2 min here
    .venv/bin/python bench/drift_report.py --columns 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from evidently.presets import DataDriftPreset

from mlsys_core.atomic import write_text_atomically
from mlsys_core.monitoring.drift import REPORT_COLUMNS, _run_report, summarize, write_html_report
from mlsys_core.monitoring.stattests import drift_columns, reference_stats


def frames(columns: int, reference_rows: int, current_rows: int, seed: int) -> tuple:
    """Sensor-like numbers; one column in ten moves by half a standard deviation."""
    rng = np.random.default_rng(seed)
    names = [str(i) for i in range(columns)]
    reference = pd.DataFrame(rng.normal(size=(reference_rows, columns)), columns=names)
    shift = np.where(np.arange(columns) % 10 == 0, 0.5, 0.0)
    current = pd.DataFrame(rng.normal(size=(current_rows, columns)) + shift, columns=names)
    return reference, current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--columns", type=int, default=400)
    parser.add_argument("--reference-rows", type=int, default=2_000)
    parser.add_argument("--current-rows", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    reference, current = frames(args.columns, args.reference_rows, args.current_rows, args.seed)
    names = list(reference.columns)
    start = time.perf_counter()
    stats = reference_stats(reference, names, [])
    summary = summarize(drift_columns(stats, current), len(reference), len(current), "bench")
    verdict = time.perf_counter() - start

    # Evidently's first report pays one-time set-up: not the baseline's to pay.
    _run_report(DataDriftPreset(), reference.head(50), current.head(50), names[:2], [])
    timings, sizes = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        html = Path(folder) / "preset.html"
        start = time.perf_counter()
        preset = _run_report(DataDriftPreset(), reference, current, names, [])
        write_text_atomically(html, preset.get_html_str(as_iframe=False))
        timings["preset"], sizes["preset"] = time.perf_counter() - start, html.stat().st_size
        for name, cap in (("every column", len(names)), (f"top {REPORT_COLUMNS}", REPORT_COLUMNS)):
            html = Path(folder) / f"{cap}.html"
            start = time.perf_counter()
            write_html_report(reference, current, summary, stats, html, report_columns=cap)
            timings[name], sizes[name] = time.perf_counter() - start, html.stat().st_size

    preset_t, whole_t, capped_t = timings.values()
    print(
        f"{args.columns} columns, {len(reference)} reference rows, {len(current)} current rows:"
        f" {summary.drifted_columns} drifted (verdict {verdict:.2f} s)"
    )
    for name, seconds in timings.items():
        print(f"  {name:<14} {seconds:8.2f} s  {sizes[name] / 1e6:6.1f} MB")
    print(f"  page ratio     {whole_t / preset_t:8.3f}    (every column: ours / the preset's)")
    print(f"  ratio          {capped_t / preset_t:8.3f}    (ours / baseline; below 1 is faster)")


if __name__ == "__main__":
    main()
