"""Data drift between a model's training reference and a current window, with Evidently."""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
from pydantic import BaseModel, ConfigDict

from mlsys_core.features.assemble import SPLIT
from mlsys_core.spec import DatasetSpec


class ColumnDrift(BaseModel):
    model_config = ConfigDict(frozen=True)

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


class DriftSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    reference_rows: int
    current_rows: int
    current_window: str
    drifted_columns: int
    share_drifted: float
    dataset_drift: bool
    columns: list[ColumnDrift]


def latest_window(frame: pd.DataFrame, timestamp: str, months: int, timezone: str) -> pd.DataFrame:
    """Rows in the last ``months`` calendar months of the data (local time)."""
    local = pd.to_datetime(frame[timestamp], utc=True).dt.tz_convert(timezone)
    period = local.dt.tz_localize(None).dt.to_period("M")
    start = period.max() - (months - 1)
    return frame[(period >= start).to_numpy()]


def drift_frames(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    months: int = 1,
    max_reference_rows: int = 50_000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Training-split reference (sampled, for speed) and the latest-months window."""
    reference = frame[frame[SPLIT] == "train"]
    if len(reference) > max_reference_rows:
        reference = reference.sample(max_reference_rows, random_state=seed)
    if spec.event_timestamp is None:
        # No time to take "the latest months" by: the held-out test rows are the newest data.
        return reference, frame[frame[SPLIT] == "test"], "test split"
    current = latest_window(frame, spec.event_timestamp, months, spec.features.timezone)
    local = pd.to_datetime(current[spec.event_timestamp], utc=True).dt.tz_convert(
        spec.features.timezone
    )
    window = f"{local.min():%Y-%m-%d} .. {local.max():%Y-%m-%d}"
    return reference, current, window


def drift_columns(spec: DatasetSpec) -> tuple[list[str], list[str]]:
    """Numeric and categorical raw inputs: the groups, plus extractor columns of those kinds
    and pixel columns (text and datetime inputs have no per-column drift test here)."""
    numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
    for extractor in spec.features.extractors:
        pixels = extractor.kind == "image" and len(extractor.columns) > 1
        if extractor.kind == "numeric" or pixels:
            numeric += extractor.columns
        elif extractor.kind == "categorical":
            categorical += extractor.columns
    return list(dict.fromkeys(numeric)), list(dict.fromkeys(categorical))


def _drifted(method: str, score: float, threshold: float) -> bool:
    # Evidently reports p-values for tests (drift when small) and distances otherwise.
    return score < threshold if "p_value" in method else score >= threshold


def run_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: DatasetSpec,
    html_path: Path,
    window: str = "",
) -> DriftSummary:
    """Run Evidently's DataDriftPreset on the spec's feature columns; write the HTML report."""
    numeric, categorical = drift_columns(spec)
    numeric = [c for c in numeric if c in reference]
    categorical = [c for c in categorical if c in reference]
    columns = [*numeric, *categorical]
    if current.empty or reference.empty:
        raise ValueError("drift needs non-empty reference and current data")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

    def dataset(frame: pd.DataFrame) -> Dataset:
        data = frame[columns].copy()
        for col in categorical:
            data[col] = data[col].astype(object).where(data[col].notna(), None)
        return Dataset.from_pandas(data, data_definition=definition)

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset()]).run(
            current_data=dataset(current), reference_data=dataset(reference)
        )
    results = []
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        score = float(metric["value"])
        results.append(
            ColumnDrift(
                column=config["column"],
                method=config["method"],
                score=score,
                threshold=float(config["threshold"]),
                drifted=_drifted(config["method"], score, float(config["threshold"])),
            )
        )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = html_path.with_name(f".{html_path.name}.{uuid.uuid4().hex[:8]}")
    snapshot.save_html(str(tmp))
    os.replace(tmp, html_path)
    drifted = sum(r.drifted for r in results)
    share = drifted / len(results) if results else 0.0
    return DriftSummary(
        reference_rows=len(reference),
        current_rows=len(current),
        current_window=window,
        drifted_columns=drifted,
        share_drifted=share,
        # Evidently's DataDriftPreset default: the dataset drifts when half the columns do.
        dataset_drift=share >= 0.5,
        columns=sorted(results, key=lambda r: (not r.drifted, r.column)),
    )
