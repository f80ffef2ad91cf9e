"""The scheduled drift check of one model version: its training reference against the
newest data (data drift), against what it served (prediction drift, from the prediction
log) and against the outcomes that have arrived (target drift and performance).

Every result is written only when the whole check succeeded: the MLflow run, then
``<state>/monitoring/<model>/latest.json`` by rename. A check that fails half way leaves
the previous results as they were.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlsys_core.atomic import write_text_atomically
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import (
    FeatureSetRef,
    feature_set_ref,
    latest_feature_set,
    load_feature_set,
)
from mlsys_core.monitoring.drift import (
    DriftSummary,
    drift_frames,
    feature_columns,
    summarize,
    training_reference,
    write_html_report,
)
from mlsys_core.monitoring.performance import (
    LABEL,
    PeriodPerformance,
    join_labels,
    outcome_keys,
    outcome_labels,
    performance_over_time,
)
from mlsys_core.monitoring.reference import cached_reference, reference_key
from mlsys_core.monitoring.stattests import (
    ColumnDrift,
    ReferenceStats,
    column_drift,
    drift_columns,
    reference_column,
    reference_stats,
)
from mlsys_core.registry.promotion import predict_scores
from mlsys_core.serving.prediction_log import read_prediction_log
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.run import TAG_DATASET, TAG_FEATURE_SET, TAG_STAGE, model_input_frame

PROBABILITY, PREDICTION = "probability", "prediction"
DECISION_THRESHOLD = 0.5  # a logged ``prediction`` is ``probability >= 0.5``


class DriftWindow(BaseModel):
    """Local dates (the spec's timezone) of the current window, both inclusive."""

    model_config = ConfigDict(frozen=True)

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> DriftWindow:
        if self.start > self.end:
            raise ValueError("window start must not be after its end")
        return self


class CheckConfig(BaseModel):
    """How the check reads its data; the defaults are the scheduled daily check."""

    model_config = ConfigDict(frozen=True)

    months: int = Field(default=1, ge=1, le=24, description="Latest months of data, or:")
    window: DriftWindow | None = Field(default=None, description="Explicit local dates.")
    log_days: int = Field(default=7, ge=1, description="Prediction log: the last N days.")
    period: Literal["D", "W"] = Field(default="D", description="Performance per day or week.")
    max_reference_rows: int = Field(
        default=50_000, ge=100, description="Training rows sampled (seeded) as the reference."
    )
    report_rows: int = Field(
        default=20_000, ge=100, description="Current rows sampled for the HTML report only."
    )
    drift_share: float = Field(default=0.5, gt=0, le=1, description="Dataset drift at this share.")


class TargetDrift(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "insufficient_data"]
    predictions: int
    labeled: int
    pending: int
    label: ColumnDrift | None = None
    periods: list[PeriodPerformance] = Field(default_factory=list)


class DriftOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    summary: DriftSummary  # data drift of the feature window
    prediction: DriftSummary | None = None  # the served predictions and their inputs
    target: TargetDrift | None = None
    run_id: str
    report_path: str
    report_uri: str
    model_name: str = ""
    model_version: str
    checked_at: datetime | None = None
    reference_cached: bool = False
    seconds: dict[str, float] = Field(default_factory=dict)


def reference_feature_set(
    settings: Settings, model_name: str, alias: str
) -> tuple[FeatureSetRef, str]:
    """The feature set the aliased model version was trained on, from its lineage tags."""
    client = configure_mlflow(settings)
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException as err:
        raise LookupError(
            f"no model version {model_name}@{alias}: run the ml-pipeline flow first"
        ) from err
    lake = Lake(settings.lake_dir)
    snapshot = lake.find("features", mv.tags[TAG_DATASET], mv.tags[TAG_FEATURE_SET])
    if snapshot is None:
        raise LookupError(
            f"{model_name}@{alias} was trained on feature set "
            f"{mv.tags[TAG_FEATURE_SET]}, which is not in {lake.root}"
        )
    return feature_set_ref(snapshot, lake), str(mv.version)


def _as_category(values: pd.Series) -> pd.Series:
    """0/1 labels and predictions as categories ("0", "1"), however they were stored."""
    return pd.Series(values).map(lambda v: None if pd.isna(v) else str(int(v)))


def build_reference(reference: pd.DataFrame, spec: DatasetSpec, model_uri: str) -> ReferenceStats:
    """Statistics of the features, of the model's own predictions on the reference rows and
    of their labels: everything later checks compare with."""
    numeric, categorical = feature_columns(spec, reference)
    stats = reference_stats(reference, numeric, categorical)
    proba = predict_scores(model_uri, model_input_frame(reference, spec))
    extra = {
        PROBABILITY: ("numerical", pd.Series(proba)),
        PREDICTION: ("categorical", _as_category(pd.Series(proba >= DECISION_THRESHOLD))),
    }
    if spec.label.name in reference:
        extra[LABEL] = ("categorical", _as_category(reference[spec.label.name]))
    for name, (kind, values) in extra.items():
        column, array = reference_column(name, kind, values)  # type: ignore[arg-type]
        stats.columns[name] = column
        if array is not None:
            stats.sorted_values[name] = array
    return stats


def _subset(stats: ReferenceStats, names: list[str]) -> ReferenceStats:
    return ReferenceStats(
        rows=stats.rows,
        columns={n: stats.columns[n] for n in names if n in stats.columns},
        sorted_values={n: stats.sorted_values[n] for n in names if n in stats.sorted_values},
    )


def prediction_drift(
    stats: ReferenceStats, log: pd.DataFrame, features: list[str], window: str, share: float
) -> DriftSummary:
    """The served rows' model inputs, probabilities and predictions against the reference."""
    names = [c for c in features if c in log.columns] + [PROBABILITY, PREDICTION]
    current = log.assign(**{PREDICTION: _as_category(log[PREDICTION])}) if len(log) else log
    columns = drift_columns(_subset(stats, names), current)
    return summarize(columns, stats.rows, len(log), window, share)


def target_drift(
    stats: ReferenceStats, joined: pd.DataFrame, period: Literal["D", "W"]
) -> TargetDrift:
    """Label shares of the predictions whose outcome is known, and performance per period."""
    labeled = joined[joined[LABEL].notna()] if len(joined) else joined
    label = None
    if LABEL in stats.columns and len(labeled):
        label = column_drift(stats.columns[LABEL], None, _as_category(labeled[LABEL]))
    return TargetDrift(
        status="ok" if len(labeled) else "insufficient_data",
        predictions=len(joined),
        labeled=len(labeled),
        pending=len(joined) - len(labeled),
        label=label,
        periods=performance_over_time(joined, period) if len(joined) else [],
    )


def served_log(
    lake: Lake, spec: DatasetSpec, name: str, version: str, since: datetime
) -> pd.DataFrame:
    """Served rows of this model version logged since ``since``."""
    log = read_prediction_log(lake, spec.name, since=since)
    if log.empty or "model_version" not in log:
        return log.iloc[0:0]
    keep = (log["model_name"] == name) & (log["model_version"].astype(str) == version)
    keep &= log["served"].astype(bool)
    return log[keep.to_numpy()].reset_index(drop=True)


def results_dir(settings: Settings, model_name: str) -> Path:
    return settings.root / "monitoring" / model_name


def save_results(outcome: DriftOutcome, settings: Settings) -> Path:
    """History entry, then ``latest.json``; each by rename."""
    folder = results_dir(settings, outcome.model_name)
    text = outcome.model_dump_json(indent=1)
    stamp = (outcome.checked_at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    write_text_atomically(folder / "history" / f"{stamp}-{outcome.run_id}.json", text)
    latest = folder / "latest.json"
    write_text_atomically(latest, text)
    return latest


def load_latest(settings: Settings, model_name: str) -> DriftOutcome | None:
    path = results_dir(settings, model_name) / "latest.json"
    return DriftOutcome.model_validate_json(path.read_text()) if path.is_file() else None


def drift_alerts(outcome: DriftOutcome, threshold: float) -> list[str]:
    """Why the outcome should start a retrain: the share of drifted feature columns, or of
    drifted served columns, reached ``threshold``; empty when neither did."""
    reasons = []
    for what, summary in [("data", outcome.summary), ("prediction", outcome.prediction)]:
        if summary is not None and summary.status == "ok" and summary.share_drifted >= threshold:
            reasons.append(
                f"{what} drift: {summary.drifted_columns}/"
                f"{len(summary.columns) - summary.insufficient_columns} columns "
                f"({summary.share_drifted:.0%} >= {threshold:.0%})"
            )
    return reasons


def check_model_drift(
    settings: Settings,
    model_name: str,
    alias: str = "champion",
    months: int = 1,
    config: CheckConfig | None = None,
) -> DriftOutcome:
    """Data, prediction and target drift of ``model_name@alias``; see the module doc."""
    config = config or CheckConfig(months=months)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    lake = Lake(settings.lake_dir)
    ref_set, version = reference_feature_set(settings, model_name, alias)
    ref_frame, spec = load_feature_set(ref_set, lake)
    newest = latest_feature_set(lake, spec.name)
    # Usually the champion was trained on the newest feature set: read it once then.
    cur_frame = ref_frame if newest == ref_set else load_feature_set(newest, lake)[0]
    window = (config.window.start, config.window.end) if config.window else None
    reference = training_reference(ref_frame, config.max_reference_rows)
    _, current, label = drift_frames(cur_frame, spec, config.months, window=window)
    seconds["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    numeric, categorical = feature_columns(spec, reference)
    key = reference_key(
        model=model_name,
        version=version,
        feature_set=ref_set.version,
        numeric=numeric,
        categorical=categorical,
        rows=config.max_reference_rows,
    )
    folder = settings.root / "monitoring" / "reference" / f"{model_name}-v{version}-{key}"
    stats, cached = cached_reference(
        folder, lambda: build_reference(reference, spec, f"models:/{model_name}/{version}")
    )
    seconds["reference"] = time.perf_counter() - t

    t = time.perf_counter()
    data = summarize(
        drift_columns(_subset(stats, [*numeric, *categorical]), current),
        len(reference),
        len(current),
        label,
        config.drift_share,
    )
    seconds["data_drift"] = time.perf_counter() - t

    t = time.perf_counter()
    since = datetime.now(UTC) - timedelta(days=config.log_days)
    log = served_log(lake, spec, model_name, version, since)
    log_window = f"served since {since:%Y-%m-%d %H:%M} UTC"
    prediction = prediction_drift(stats, log, spec.input_columns, log_window, config.drift_share)
    base = lake.latest("clean", spec.base)
    if base is not None and len(log):
        keys = [*outcome_keys(spec), spec.label.column]
        joined = join_labels(log, outcome_labels(lake.read(base, columns=keys), spec), spec)
    else:
        joined = log.assign(**{LABEL: np.nan}) if len(log) else pd.DataFrame()
    target = target_drift(stats, joined, config.period)
    seconds["prediction_and_target"] = time.perf_counter() - t

    t = time.perf_counter()
    stamp = datetime.now(UTC)
    html = settings.reports_dir / f"drift-{model_name}-v{version}-{stamp:%Y%m%dT%H%M%S}.html"
    write_html_report(reference, current, data, stats, html, config.report_rows)
    seconds["html_report"] = time.perf_counter() - t
    outcome = _log_run(
        settings, model_name, alias, version, ref_set, newest, config, data, prediction, target
    )
    outcome = outcome.model_copy(
        update={
            "report_path": str(html),
            "report_uri": f"{outcome.report_uri}/{html.name}",
            "checked_at": stamp,
            "reference_cached": cached,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
    )
    with mlflow.start_run(run_id=outcome.run_id):
        mlflow.log_artifact(str(html), "drift")
        mlflow.log_dict(outcome.model_dump(mode="json"), "drift/summary.json")
    save_results(outcome, settings)
    return outcome


def _log_run(
    settings: Settings,
    model_name: str,
    alias: str,
    version: str,
    ref_set: FeatureSetRef,
    newest: FeatureSetRef,
    config: CheckConfig,
    data: DriftSummary,
    prediction: DriftSummary,
    target: TargetDrift,
) -> DriftOutcome:
    tags = {
        TAG_STAGE: "drift",
        "mlsys.model": f"{model_name}@{alias}",
        "mlsys.model_version": version,
    }
    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"drift-{model_name}-v{version}", tags=tags) as run:
        mlflow.log_params(
            {
                "reference_feature_set": ref_set.version,
                "current_feature_set": newest.version,
                "window": data.current_window,
                "months": config.months,
                "max_reference_rows": config.max_reference_rows,
            }
        )
        metrics = {
            "share_drifted": data.share_drifted,
            "drifted_columns": float(data.drifted_columns),
            "dataset_drift": float(data.dataset_drift),
            "insufficient_columns": float(data.insufficient_columns),
            "prediction_rows": float(prediction.current_rows),
            "prediction_share_drifted": prediction.share_drifted,
            "labeled_predictions": float(target.labeled),
            "pending_predictions": float(target.pending),
        }
        scored = [p for p in target.periods if p.auc is not None]
        if scored:
            metrics["latest_period_auc"] = float(scored[-1].auc or 0.0)
        mlflow.log_metrics(metrics)
        return DriftOutcome(
            summary=data,
            prediction=prediction,
            target=target,
            run_id=run.info.run_id,
            report_path="",
            report_uri=f"{run.info.artifact_uri}/drift",
            model_name=model_name,
            model_version=version,
        )
