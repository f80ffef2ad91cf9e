"""The scheduled drift check of one model version: its training reference against the
newest data (data drift), against what it served (prediction drift, from the prediction
log) and against the outcomes that have arrived (target drift and performance).

Five steps, each a function that takes what it reads (a Lake, an MLflow client, a folder)
and returns a value; the ``drift-check`` flow runs each as a task, ``check_model_drift``
runs them in a row:

1. ``load_check``: which version, which feature sets, and its reference statistics
   (computed once per version and cached under ``<monitoring>/reference/``);
2. ``data_drift``: the newest feature set's window against the reference, and the HTML
   report;
3. ``prediction_drift``: the served rows of this version against the reference;
4. ``target_drift``: the outcomes of those rows, and performance per period;
5. ``publish``: the MLflow run, then ``<monitoring>/<model>/latest.json`` by rename.

Results are published only when every step succeeded: a check that fails half way leaves
the previous results as they were.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlsys_core.atomic import write_text_atomically
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import (
    FeatureSetRef,
    load_feature_set,
    scoring_feature_set,
    spec_of,
)
from mlsys_core.monitoring.drift import (
    REPORT_COLUMNS,
    REPORT_ROWS,
    DriftSummary,
    drift_frames,
    feature_columns,
    summarize,
    training_reference,
    write_html_report,
)
from mlsys_core.monitoring.performance import PeriodPerformance, performance_over_time
from mlsys_core.monitoring.reference import cached_reference, load_reference, reference_key
from mlsys_core.monitoring.stattests import (
    ColumnDrift,
    ReferenceStats,
    column_drift,
    drift_columns,
    reference_column,
    reference_stats,
)
from mlsys_core.registry.lineage import trained_feature_set
from mlsys_core.registry.promotion import predict_scores
from mlsys_core.serving.outcomes import LABEL, join_outcomes
from mlsys_core.serving.prediction_log import read_prediction_log
from mlsys_core.spec import DatasetSpec
from mlsys_core.training.run import TAG_STAGE, model_input_frame

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
        default=REPORT_ROWS, ge=100, description="Current rows sampled for the HTML report only."
    )
    report_columns: int = Field(
        default=REPORT_COLUMNS,
        ge=1,
        description="Columns the HTML report shows: those that drifted most.",
    )
    drift_share: float = Field(default=0.5, gt=0, le=1, description="Dataset drift at this share.")


class CheckInputs(BaseModel):
    """What the ``load`` step resolved: the version, its feature sets and its reference."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    alias: str
    model_version: str
    reference_set: FeatureSetRef
    current_set: FeatureSetRef
    passed_over: list[str] = []  # newer feature sets that lack the model's inputs, and why
    reference_dir: str  # the cached reference statistics
    reference_cached: bool
    log_since: datetime  # prediction and target drift read the log from here
    seconds: float = 0.0


class DataDrift(BaseModel):
    """The ``data drift`` step's verdict and the HTML report it rendered."""

    model_config = ConfigDict(frozen=True)

    summary: DriftSummary
    report_path: str
    seconds: float = 0.0


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


# -- 1. load ------------------------------------------------------------------------------------


def model_feature_set(
    client: MlflowClient, lake: Lake, model_name: str, alias: str
) -> tuple[str, FeatureSetRef]:
    """The version ``model_name@alias`` and the feature set it was trained on."""
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as err:
        raise LookupError(
            f"no model version {model_name}@{alias}: run the ml-pipeline flow first"
        ) from err
    return str(mv.version), trained_feature_set(client, lake, model_name, str(mv.version))


def _as_category(values: pd.Series) -> pd.Series:
    """0/1 labels and predictions as categories ("0", "1"), however they were stored."""
    return pd.Series(values).map(lambda v: None if pd.isna(v) else str(int(v)))


def build_reference(
    reference: pd.DataFrame, spec: DatasetSpec, client: MlflowClient, model_uri: str
) -> ReferenceStats:
    """Statistics of the features, of the model's own predictions on the reference rows and
    of their labels: everything later checks compare with."""
    numeric, categorical = feature_columns(spec, reference)
    stats = reference_stats(reference, numeric, categorical)
    proba = predict_scores(client, model_uri, model_input_frame(reference, spec))
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


def load_check(
    client: MlflowClient,
    lake: Lake,
    monitoring_dir: Path,
    model_name: str,
    alias: str,
    config: CheckConfig,
) -> CheckInputs:
    """Resolve ``model_name@alias``, its training feature set and the newest one that holds
    its inputs as trained, and make sure its reference statistics are cached (the training
    rows are read only to build them)."""
    started = time.perf_counter()
    version, reference_set = model_feature_set(client, lake, model_name, alias)
    spec = spec_of(reference_set, lake)
    # The feature set's version covers the spec, hence the columns.
    key = reference_key(
        model=model_name,
        version=version,
        feature_set=reference_set.version,
        rows=config.max_reference_rows,
    )
    folder = monitoring_dir / "reference" / f"{model_name}-v{version}-{key}"

    def build() -> ReferenceStats:
        frame, _ = load_feature_set(reference_set, lake)
        reference = training_reference(frame, config.max_reference_rows)
        return build_reference(reference, spec, client, f"models:/{model_name}/{version}")

    _, cached = cached_reference(folder, build)
    # The newest rows that hold the model's inputs as trained: a set built since with
    # another spec would show drift in a feature that was only redefined, or dropped.
    current = scoring_feature_set(lake, spec.name, None, spec)
    return CheckInputs(
        model_name=model_name,
        alias=alias,
        model_version=version,
        reference_set=reference_set,
        current_set=current.feature_set,
        passed_over=current.passed_over,
        reference_dir=str(folder),
        reference_cached=cached,
        log_since=datetime.now(UTC) - timedelta(days=config.log_days),
        seconds=time.perf_counter() - started,
    )


def _stats(inputs: CheckInputs) -> ReferenceStats:
    stats = load_reference(Path(inputs.reference_dir))
    if stats is None:
        raise LookupError(f"the reference statistics in {inputs.reference_dir} are gone")
    return stats


def _subset(stats: ReferenceStats, names: list[str]) -> ReferenceStats:
    return ReferenceStats(
        rows=stats.rows,
        columns={n: stats.columns[n] for n in names if n in stats.columns},
        sorted_values={n: stats.sorted_values[n] for n in names if n in stats.sorted_values},
    )


# -- 2. data drift ------------------------------------------------------------------------------


def data_drift(
    lake: Lake, inputs: CheckInputs, config: CheckConfig, reports_dir: Path
) -> DataDrift:
    """The newest feature set's window (the latest ``months``, or ``window``) against the
    reference, every current row; and the Evidently HTML report in ``reports_dir``."""
    started = time.perf_counter()
    ref_frame, spec = load_feature_set(inputs.reference_set, lake)
    # Usually the version was trained on the newest feature set: read it once then.
    same = inputs.current_set == inputs.reference_set
    cur_frame = ref_frame if same else load_feature_set(inputs.current_set, lake)[0]
    window = (config.window.start, config.window.end) if config.window else None
    reference = training_reference(ref_frame, config.max_reference_rows)
    _, current, label = drift_frames(cur_frame, spec, config.months, window=window)
    stats = _stats(inputs)
    numeric, categorical = feature_columns(spec, reference)
    summary = summarize(
        drift_columns(_subset(stats, [*numeric, *categorical]), current),
        len(reference),
        len(current),
        label,
        config.drift_share,
    )
    stamp = datetime.now(UTC)
    name = f"drift-{inputs.model_name}-v{inputs.model_version}-{stamp:%Y%m%dT%H%M%S%f}.html"
    html = reports_dir / name
    write_html_report(
        reference,
        current,
        summary,
        stats,
        html,
        config.report_rows,
        report_columns=config.report_columns,
    )
    return DataDrift(summary=summary, report_path=str(html), seconds=time.perf_counter() - started)


# -- 3. prediction drift ------------------------------------------------------------------------


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


def prediction_drift(lake: Lake, inputs: CheckInputs, config: CheckConfig) -> DriftSummary:
    """The served rows' model inputs, probabilities and predictions against the reference."""
    spec = spec_of(inputs.reference_set, lake)
    log = served_log(lake, spec, inputs.model_name, inputs.model_version, inputs.log_since)
    names = [c for c in spec.input_columns if c in log.columns] + [PROBABILITY, PREDICTION]
    current = log.assign(**{PREDICTION: _as_category(log[PREDICTION])}) if len(log) else log
    stats = _stats(inputs)
    columns = drift_columns(_subset(stats, names), current)
    window = f"served since {inputs.log_since:%Y-%m-%d %H:%M} UTC"
    return summarize(columns, stats.rows, len(log), window, config.drift_share)


# -- 4. target drift ----------------------------------------------------------------------------


def target_drift(lake: Lake, inputs: CheckInputs, config: CheckConfig) -> TargetDrift:
    """Label shares of the served predictions whose outcome is known, and performance per
    period of prediction time."""
    spec = spec_of(inputs.reference_set, lake)
    log = served_log(lake, spec, inputs.model_name, inputs.model_version, inputs.log_since)
    joined = join_outcomes(lake, spec, log)
    labeled = joined[joined[LABEL].notna()]
    stats = _stats(inputs)
    label = None
    if LABEL in stats.columns and len(labeled):
        label = column_drift(stats.columns[LABEL], None, _as_category(labeled[LABEL]))
    return TargetDrift(
        status="ok" if len(labeled) else "insufficient_data",
        predictions=len(joined),
        labeled=len(labeled),
        pending=len(joined) - len(labeled),
        label=label,
        periods=performance_over_time(joined, config.period),
    )


# -- 5. publish ---------------------------------------------------------------------------------


def results_dir(monitoring_dir: Path, model_name: str) -> Path:
    return monitoring_dir / model_name


def save_results(outcome: DriftOutcome, monitoring_dir: Path) -> Path:
    """History entry, then ``latest.json``; each by rename."""
    folder = results_dir(monitoring_dir, outcome.model_name)
    text = outcome.model_dump_json(indent=1)
    stamp = (outcome.checked_at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    write_text_atomically(folder / "history" / f"{stamp}-{outcome.run_id}.json", text)
    latest = folder / "latest.json"
    write_text_atomically(latest, text)
    return latest


def load_latest(monitoring_dir: Path, model_name: str) -> DriftOutcome | None:
    path = results_dir(monitoring_dir, model_name) / "latest.json"
    return DriftOutcome.model_validate_json(path.read_text()) if path.is_file() else None


def _metrics(data: DriftSummary, prediction: DriftSummary, target: TargetDrift) -> dict:
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
    return metrics


def publish(
    client: MlflowClient,
    experiment_id: str,
    monitoring_dir: Path,
    inputs: CheckInputs,
    config: CheckConfig,
    data: DataDrift,
    prediction: DriftSummary,
    target: TargetDrift,
    seconds: dict[str, float] | None = None,
) -> DriftOutcome:
    """One MLflow run (tag ``mlsys.stage=drift``: params, metrics, the HTML report and
    ``drift/summary.json``), then the results folder. A failure leaves the previous
    ``latest.json`` as it was, and the run marked FAILED."""
    report = Path(data.report_path)
    tags = {
        TAG_STAGE: "drift",
        "mlsys.model": f"{inputs.model_name}@{inputs.alias}",
        "mlsys.model_version": inputs.model_version,
    }
    run = client.create_run(
        experiment_id,
        run_name=f"drift-{inputs.model_name}-v{inputs.model_version}",
        tags=tags,
    )
    run_id = run.info.run_id
    try:
        params = {
            "reference_feature_set": inputs.reference_set.version,
            "current_feature_set": inputs.current_set.version,
            "window": data.summary.current_window,
            "months": config.months,
            "max_reference_rows": config.max_reference_rows,
        }
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[
                Metric(k, v, now, 0) for k, v in _metrics(data.summary, prediction, target).items()
            ],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag("mlsys.reference_cached", str(inputs.reference_cached))],
        )
        outcome = DriftOutcome(
            summary=data.summary,
            prediction=prediction,
            target=target,
            run_id=run_id,
            report_path=str(report),
            report_uri=f"{run.info.artifact_uri}/drift/{report.name}",
            model_name=inputs.model_name,
            model_version=inputs.model_version,
            checked_at=datetime.now(UTC),
            reference_cached=inputs.reference_cached,
            seconds={k: round(v, 3) for k, v in (seconds or {}).items()},
        )
        client.log_artifact(run_id, str(report), "drift")
        client.log_dict(run_id, outcome.model_dump(mode="json"), "drift/summary.json")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    save_results(outcome, monitoring_dir)
    return outcome


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
    client: MlflowClient,
    experiment_id: str,
    lake: Lake,
    monitoring_dir: Path,
    reports_dir: Path,
    model_name: str,
    alias: str = "champion",
    config: CheckConfig | None = None,
) -> DriftOutcome:
    """The five steps in a row, for callers without an orchestrator (the flow runs each as
    a task): data, prediction and target drift of ``model_name@alias``."""
    config = config or CheckConfig()
    inputs = load_check(client, lake, monitoring_dir, model_name, alias, config)
    data = data_drift(lake, inputs, config, reports_dir)
    started = time.perf_counter()
    prediction = prediction_drift(lake, inputs, config)
    target = target_drift(lake, inputs, config)
    seconds = {
        "load": inputs.seconds,
        "data_drift": data.seconds,
        "prediction_and_target": time.perf_counter() - started,
    }
    return publish(
        client,
        experiment_id,
        monitoring_dir,
        inputs,
        config,
        data,
        prediction,
        target,
        seconds,
    )
