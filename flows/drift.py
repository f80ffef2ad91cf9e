"""Stage 6: drift of the newest data, the served predictions and the arrived outcomes
against the champion's training reference; drift over the threshold starts a retrain."""

from __future__ import annotations

from typing import Annotated

from prefect.runtime import deployment
from pydantic import Field

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, resolve_model_name
from mlsys_core.monitoring.check import CheckConfig, DriftOutcome, DriftWindow, drift_alerts
from tasks.metrics import metered
from tasks.monitoring import (
    data_drift,
    emit_drift_event,
    load_check,
    notify_drift,
    prediction_drift,
    publish_drift,
    target_drift,
)
from tasks.registry import record_served_by


@flow(name="drift-check", log_prints=True)
@metered(rows=lambda o: o.summary.current_rows + (o.prediction.current_rows if o.prediction else 0))
def drift_check(
    model_name: str | None = None,
    alias: str = "champion",
    months: Annotated[int, Field(ge=1, le=24)] = 1,
    window: DriftWindow | None = None,
    alert_share: Annotated[float, Field(gt=0.0, le=1.0)] | None = None,
    notify_block: str | None = None,
    config: CheckConfig = CheckConfig(),
    spec: SpecRef | None = None,
) -> DriftOutcome:
    """Compare the latest ``months`` (or the local dates ``window``) with the training
    reference of ``alias``. When the share of drifted columns reaches ``alert_share`` the
    flow emits ``mlsys.drift.detected`` and, given ``notify_block``, calls that Prefect
    ``Webhook`` block. ``None`` (the default, and the pipeline's own check) never alerts:
    a retrain's drift check must not start the next retrain; the scheduled ``drift-check``
    deployment sets it. Without ``model_name``, the model is ``spec``'s dataset's (a dataset
    reference; default: the settings')."""
    settings = Settings()
    dataset = spec if spec is not None else settings.dataset
    name = resolve_model_name(model_name or settings.model_name, dataset)
    config = config.model_copy(update={"months": months, "window": window})
    inputs = load_check(name, alias, config, settings)
    for why in inputs.passed_over:
        print(f"passed over: {why}")
    data = data_drift(inputs, config, settings)
    prediction = prediction_drift(inputs, config, settings)
    target = target_drift(inputs, config, settings)
    outcome = publish_drift(inputs, config, data, prediction, target, settings)
    # The drift check consumes the model version: its lineage lists this deployment.
    user = f"prefect-deployment/{deployment.name}" if deployment.name else "prefect-flow/drift"
    record_served_by(name, outcome.model_version, user, settings)
    s = outcome.summary
    print(
        f"drift {s.current_window}: {s.drifted_columns}/{len(s.columns)} columns drifted, "
        f"dataset drift {s.dataset_drift}; report {outcome.report_path}"
    )
    if alert_share is not None and (reasons := drift_alerts(outcome, alert_share)):
        event_id = emit_drift_event(outcome, reasons)
        print(f"emitted mlsys.drift.detected ({event_id}): {'; '.join(reasons)}")
        if notify_block:
            notify_drift(notify_block, outcome, reasons)
    return outcome
