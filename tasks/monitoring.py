"""Drift-check tasks (load, data drift, prediction drift, target drift, publish), acting on
the outcome (event, notification), and the monitoring page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.blocks.webhook import Webhook
from prefect.events import emit_event
from prefect.utilities.asyncutils import run_coro_as_sync

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.monitoring import check
from mlsys_core.monitoring import dashboard as dashboard_core
from mlsys_core.monitoring.check import CheckConfig, CheckInputs, DataDrift, DriftOutcome
from mlsys_core.monitoring.dashboard import Dashboard, Period
from mlsys_core.monitoring.drift import DriftSummary
from mlsys_core.monitoring.system import read_run_metrics
from mlsys_core.tracking import configure_mlflow
from tasks.base import task

DRIFT_EVENT = "mlsys.drift.detected"


def monitoring_dir(settings: Settings) -> Path:
    """Drift results, reference caches and flow-run metrics live here."""
    return settings.root / "monitoring"


@task(name="drift-load")
def load_check(model_name: str, alias: str, config: CheckConfig, settings: Settings) -> CheckInputs:
    """Which version and feature sets to check; its reference statistics (cached)."""
    client = configure_mlflow(settings.tracking)
    return check.load_check(
        client, Lake(settings.lake_dir), monitoring_dir(settings), model_name, alias, config
    )


@task(name="data-drift")
def data_drift(inputs: CheckInputs, config: CheckConfig, settings: Settings) -> DataDrift:
    """The newest feature window against the training reference, and the HTML report."""
    return check.data_drift(Lake(settings.lake_dir), inputs, config, settings.reports_dir)


@task(name="prediction-drift")
def prediction_drift(inputs: CheckInputs, config: CheckConfig, settings: Settings) -> DriftSummary:
    """The version's served inputs and predictions against the reference."""
    return check.prediction_drift(Lake(settings.lake_dir), inputs, config)


@task(name="target-drift")
def target_drift(inputs: CheckInputs, config: CheckConfig, settings: Settings) -> check.TargetDrift:
    """The outcomes that arrived for the served predictions, and performance per period."""
    return check.target_drift(Lake(settings.lake_dir), inputs, config)


@task(name="drift-publish")
def publish_drift(
    inputs: CheckInputs,
    config: CheckConfig,
    data: DataDrift,
    prediction: DriftSummary,
    target: check.TargetDrift,
    settings: Settings,
) -> DriftOutcome:
    """The MLflow run and ``latest.json``; per-column Prefect tables and the report link."""
    client = configure_mlflow(settings.tracking)
    experiment_id = client.get_experiment_by_name(settings.experiment).experiment_id
    seconds = {"load": inputs.seconds, "data_drift": data.seconds}
    outcome = check.publish(
        client,
        experiment_id,
        monitoring_dir(settings),
        inputs,
        config,
        data,
        prediction,
        target,
        seconds,
    )
    _drift_artifacts(outcome)
    return outcome


def _rows(summary: Any) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in c.model_dump().items() if k != "new_categories"}
        | {"new_categories": ", ".join(c.new_categories)}
        for c in summary.columns
    ]


def _drift_artifacts(outcome: DriftOutcome) -> None:
    """Per-column results as Prefect tables, and a link to the HTML report."""
    s = outcome.summary
    create_table_artifact(
        _rows(s),
        key="drift-columns",
        description=(
            f"Drift of {s.current_window} vs the v{outcome.model_version} training "
            f"reference: {s.drifted_columns}/{len(s.columns)} columns drifted, "
            f"dataset drift: {s.dataset_drift} ({s.status})"
        ),
    )
    if outcome.prediction is not None:
        p = outcome.prediction
        create_table_artifact(
            _rows(p),
            key="drift-predictions",
            description=(
                f"Served predictions of v{outcome.model_version} ({p.current_window}, "
                f"{p.current_rows} rows): {p.drifted_columns} columns drifted ({p.status})"
            ),
        )
    if outcome.target is not None and outcome.target.periods:
        create_table_artifact(
            [r.model_dump() for r in outcome.target.periods],
            key="drift-performance",
            description=(
                f"Delayed-label performance of v{outcome.model_version}: "
                f"{outcome.target.labeled} labeled, {outcome.target.pending} pending"
            ),
        )
    create_link_artifact(
        outcome.report_uri,
        link_text="Evidently drift report",
        key="drift-report",
        description=outcome.report_path,
    )


def drift_event_payload(outcome: DriftOutcome, reasons: list[str]) -> dict[str, Any]:
    s = outcome.summary
    payload: dict[str, Any] = {
        "model_name": outcome.model_name,
        "model_version": outcome.model_version,
        "reasons": reasons,
        "window": s.current_window,
        "share_drifted": s.share_drifted,
        "drifted_columns": [c.column for c in s.columns if c.drifted],
        "scores": {c.column: c.score for c in s.columns if c.status == "ok"},
        "report_uri": outcome.report_uri,
        "mlflow_run_id": outcome.run_id,
    }
    if outcome.prediction is not None:
        payload["prediction_share_drifted"] = outcome.prediction.share_drifted
    return payload


@task
def emit_drift_event(outcome: DriftOutcome, reasons: list[str]) -> str | None:
    """``mlsys.drift.detected`` on the model's resource; a trigger on the ``retrain``
    deployment (prefect.yaml) starts retraining from it. Returns the event id."""
    event = emit_event(
        DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"mlsys.model.{outcome.model_name}",
            "prefect.resource.name": outcome.model_name,
            "mlsys.model.version": outcome.model_version,
        },
        payload=drift_event_payload(outcome, reasons),
    )
    return str(event.id) if event is not None else None


@task(retries=2, retry_delay_seconds=5)
def notify_drift(block_name: str, outcome: DriftOutcome, reasons: list[str]) -> int:
    """POST the event payload through the Prefect ``Webhook`` block ``block_name``;
    returns the HTTP status (an error status fails the task)."""
    webhook = Webhook.load(block_name)
    body = {"event": DRIFT_EVENT, **drift_event_payload(outcome, reasons)}
    response = run_coro_as_sync(webhook.call(body))
    response.raise_for_status()
    return response.status_code


@task
def build_dashboard(
    model_name: str, metrics_url: str | None, log_days: int, period: Period, settings: Settings
) -> Dashboard:
    """Latest drift, performance over time (plot to MLflow), serving and system metrics."""
    client = configure_mlflow(settings.tracking)
    return dashboard_core.build_dashboard(
        client,
        client.get_experiment_by_name(settings.experiment).experiment_id,
        Lake(settings.lake_dir),
        monitoring_dir(settings),
        settings.reports_dir,
        model_name,
        read_run_metrics(settings.root, limit=20),
        metrics_url,
        log_days,
        period,
    )


@task
def publish_dashboard(dashboard: Dashboard) -> None:
    """The monitoring page as one Prefect Markdown artifact (key ``monitoring``)."""
    create_markdown_artifact(
        dashboard.markdown, key="monitoring", description="mlsys monitoring page"
    )
