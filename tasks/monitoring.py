"""Drift-check tasks: run the check, publish it, and act on it (event, notification)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.blocks.webhook import Webhook
from prefect.events import emit_event
from prefect.utilities.asyncutils import run_coro_as_sync

from mlsys_core.config import Settings
from mlsys_core.monitoring import dashboard as dashboard_core
from mlsys_core.monitoring.check import CheckConfig, DriftOutcome, check_model_drift
from mlsys_core.monitoring.dashboard import Dashboard

DRIFT_EVENT = "mlsys.drift.detected"


@task
def check_drift(
    model_name: str, alias: str, config: CheckConfig, settings: Settings
) -> DriftOutcome:
    """Data, prediction and target drift of the model against its training reference."""
    return check_model_drift(settings, model_name, alias, config=config)


def _rows(summary: Any) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in c.model_dump().items() if k != "new_categories"}
        | {"new_categories": ", ".join(c.new_categories)}
        for c in summary.columns
    ]


@task
def publish_drift(outcome: DriftOutcome) -> None:
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
    model_name: str, metrics_url: str | None, log_days: int, period: str, settings: Settings
) -> Dashboard:
    """Latest drift, performance over time (plot to MLflow), serving and system metrics."""
    return dashboard_core.build_dashboard(settings, model_name, metrics_url, log_days, period)  # type: ignore[arg-type]


@task
def publish_dashboard(dashboard: Dashboard) -> None:
    """The monitoring page as one Prefect Markdown artifact (key ``monitoring``)."""
    create_markdown_artifact(
        dashboard.markdown, key="monitoring", description="mlsys monitoring page"
    )
