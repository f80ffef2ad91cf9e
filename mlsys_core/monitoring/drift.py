"""Data drift between a model's training reference and a current window.

The verdict per column comes from ``stattests`` (Evidently's method choice and thresholds,
on cached reference statistics, every current row). The Evidently HTML report is for
people: it is ``DataDriftPreset``'s page (``report_preset``) on the same reference and on the
current window sampled to at most ``report_rows`` rows (seeded), so on a large window its
numbers can differ slightly from the verdict table, which is the one that counts.
"""

from __future__ import annotations

import html
import warnings
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.atomic import write_text_atomically
from mlsys_core.features.assemble import SPLIT
from mlsys_core.monitoring.stattests import (
    ColumnDrift,
    ReferenceStats,
)
from mlsys_core.spec import DatasetSpec

if TYPE_CHECKING:
    from evidently import Dataset

__all__ = ["ColumnDrift", "DriftSummary"]

DRIFT_SHARE = 0.5  # Evidently's DataDriftPreset default: the dataset drifts at half the columns
REPORT_ROWS = 20_000
# Evidently renders each column in about 0.1 s and 80 kB here: 408 columns took 47 s and made
# a 33 MB page. A wide table's report shows the columns that drifted most (most tables, the
# flights' 55 features among them, are shown whole); the verdict covers them all.
REPORT_COLUMNS = 100


class DriftSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    reference_rows: int
    current_rows: int
    current_window: str
    drifted_columns: int
    share_drifted: float
    dataset_drift: bool
    columns: list[ColumnDrift]
    status: Literal["ok", "insufficient_data"] = "ok"
    insufficient_columns: int = 0


def summarize(
    columns: list[ColumnDrift],
    reference_rows: int,
    current_rows: int,
    window: str,
    drift_share: float = DRIFT_SHARE,
) -> DriftSummary:
    """Drifted columns, their share among the columns that could be checked, and the
    dataset verdict (``share >= drift_share``, as Evidently decides it)."""
    checked = [c for c in columns if c.status == "ok"]
    drifted = sum(c.drifted for c in checked)
    share = drifted / len(checked) if checked else 0.0
    return DriftSummary(
        reference_rows=reference_rows,
        current_rows=current_rows,
        current_window=window,
        drifted_columns=drifted,
        share_drifted=share,
        dataset_drift=bool(checked) and share >= drift_share,
        columns=sorted(columns, key=lambda r: (r.status != "ok", not r.drifted, r.column)),
        status="ok" if checked and current_rows else "insufficient_data",
        insufficient_columns=len(columns) - len(checked),
    )


def local_times(frame: pd.DataFrame, timestamp: str, timezone: str) -> pd.Series:
    return pd.to_datetime(frame[timestamp], utc=True).dt.tz_convert(timezone)


def latest_window(frame: pd.DataFrame, timestamp: str, months: int, timezone: str) -> pd.DataFrame:
    """Rows in the last ``months`` calendar months of the data (local time)."""
    local = local_times(frame, timestamp, timezone)
    period = local.dt.tz_localize(None).dt.to_period("M")
    start = period.max() - (months - 1)
    return frame[(period >= start).to_numpy()]


def date_window(
    frame: pd.DataFrame, timestamp: str, start: date, end: date, timezone: str
) -> pd.DataFrame:
    """Rows with local date in ``[start, end]``."""
    day = local_times(frame, timestamp, timezone).dt.date
    return frame[((day >= start) & (day <= end)).to_numpy()]


def training_reference(
    frame: pd.DataFrame, max_reference_rows: int = 50_000, seed: int = 0
) -> pd.DataFrame:
    """The training split, sampled without replacement to at most ``max_reference_rows``
    (seeded, so the same model version always gets the same reference)."""
    reference = frame[frame[SPLIT] == "train"]
    if len(reference) > max_reference_rows:
        reference = reference.sample(max_reference_rows, random_state=seed)
    return reference


def drift_frames(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    months: int = 1,
    max_reference_rows: int = 50_000,
    seed: int = 0,
    window: tuple[date, date] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Training-split reference (sampled) and the current window: the latest ``months``,
    or the local dates ``window`` (inclusive)."""
    reference = training_reference(frame, max_reference_rows, seed)
    if spec.event_timestamp is None:
        # No time to take "the latest months" by: the held-out test rows are the newest data.
        return reference, frame[frame[SPLIT] == "test"], "test split"
    tz = spec.features.timezone
    if window is not None:
        current = date_window(frame, spec.event_timestamp, window[0], window[1], tz)
    elif frame.empty:
        current = frame
    else:
        current = latest_window(frame, spec.event_timestamp, months, tz)
    if current.empty:
        label = f"{window[0]} .. {window[1]}" if window else "empty"
        return reference, current, label
    local = local_times(current, spec.event_timestamp, tz)
    return reference, current, f"{local.min():%Y-%m-%d} .. {local.max():%Y-%m-%d}"


def feature_columns(spec: DatasetSpec, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The spec's numerical and categorical raw inputs present in ``frame``: the groups,
    plus extractor columns of those kinds and pixel columns (text and datetime inputs have
    no per-column drift test here)."""
    numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
    for extractor in spec.features.extractors:
        pixels = extractor.kind == "image" and len(extractor.columns) > 1
        if extractor.kind == "numeric" or pixels:
            numeric += extractor.columns
        elif extractor.kind == "categorical":
            categorical += extractor.columns
    present = list(dict.fromkeys(c for c in numeric if c in frame))
    return present, list(dict.fromkeys(c for c in categorical if c in frame))


def _evidently_dataset(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> Dataset:
    from evidently import DataDefinition, Dataset  # noqa: PLC0415

    data = frame[[*numeric, *categorical]].copy()
    for col in categorical:
        data[col] = data[col].astype(object).where(data[col].notna(), None)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return Dataset.from_pandas(data, data_definition=definition)


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> list[ColumnDrift]:
    """A plain, full Evidently ``DataDriftPreset`` run's per-column results: the baseline
    the fast path must agree with.

    Evidently is imported here, not above: it takes seconds to load, and every process that
    imports the flows (a pipeline run, `python -m flows.<name>`) loads this module."""
    from evidently.presets import DataDriftPreset  # noqa: PLC0415

    snapshot = _run_report(DataDriftPreset(), reference, current, numeric, categorical)
    results = []
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        score, threshold = float(metric["value"]), float(config["threshold"])
        method = config["method"]
        # Evidently's own test functions: ks drifts at p <= threshold, the other tests at
        # p < threshold, the distances at score >= threshold.
        if method == "K-S p_value":
            drifted = score <= threshold
        elif "p_value" in method:
            drifted = score < threshold
        else:
            drifted = score >= threshold
        results.append(
            ColumnDrift(
                column=config["column"],
                method=method,
                score=score,
                threshold=threshold,
                drifted=drifted,
            )
        )
    return results


def _run_report(
    preset: object,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> object:
    from evidently import Report  # noqa: PLC0415

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report([preset]).run(
            current_data=_evidently_dataset(current, numeric, categorical),
            reference_data=_evidently_dataset(reference, numeric, categorical),
        )


def write_html_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    summary: DriftSummary,
    stats: ReferenceStats,
    html_path: Path,
    report_rows: int = REPORT_ROWS,
    seed: int = 0,
    report_columns: int = REPORT_COLUMNS,
) -> None:
    """Evidently's HTML report for the ``report_columns`` checked columns that drifted
    most, on at most ``report_rows`` current rows; a short page saying why when no column
    could be checked."""
    ok = sorted(
        (c for c in summary.columns if c.status == "ok"),
        key=lambda c: (not c.drifted, -c.strength()),
    )
    checked = {c.column: c for c in ok[:report_columns]}
    if not checked:
        page = (
            "<html><body><h1>Drift check: insufficient data</h1>"
            f"<p>window {html.escape(summary.current_window)}: {summary.current_rows} current"
            f" rows, {summary.reference_rows} reference rows.</p></body></html>"
        )
        write_text_atomically(html_path, page)
        return
    numeric = [c for c in checked if stats.columns[c].kind == "numerical"]
    categorical = [c for c in checked if stats.columns[c].kind == "categorical"]
    if len(current) > report_rows:
        current = current.sample(report_rows, random_state=seed)
    from mlsys_core.monitoring.report_preset import DriftTablePreset  # noqa: PLC0415

    snapshot = _run_report(DriftTablePreset(), reference, current, numeric, categorical)
    page = snapshot.get_html_str(as_iframe=False)  # type: ignore[attr-defined]
    if len(ok) > len(checked):
        drifted = sum(c.drifted for c in ok)
        note = (
            f"<p><b>{len(checked)} of the {len(ok)} checked columns are shown here: those that"
            f" drifted most.</b> The check's verdict, {drifted} of {len(ok)} columns drifted,"
            " is on every column; the flow run's <code>drift-columns</code> table lists them"
            " all.</p>"
        )
        page = page.replace("<body>", f"<body>{note}", 1)
    # What Snapshot.save_html writes, but through a temporary file and a rename.
    write_text_atomically(html_path, page)
