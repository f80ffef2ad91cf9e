"""Stage 6: Evidently data drift of the newest data against the champion's training data."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import deployment

from mlsys_core.config import Settings
from mlsys_core.monitoring.check import DriftOutcome
from tasks.monitoring import check_drift, publish_drift
from tasks.registry import record_served_by


@flow(name="drift-check", log_prints=True)
def drift_check(
    model_name: str | None = None, alias: str = "champion", months: int = 1
) -> DriftOutcome:
    """Compare the latest ``months`` of data with the training reference of ``alias``."""
    settings = Settings()
    name = model_name or settings.model_name
    outcome = check_drift(name, alias, months, settings)
    publish_drift(outcome)
    # The drift check consumes the model version: its lineage lists this deployment.
    user = f"prefect-deployment/{deployment.name}" if deployment.name else "prefect-flow/drift"
    record_served_by(name, outcome.model_version, user, settings)
    s = outcome.summary
    print(
        f"drift {s.current_window}: {s.drifted_columns}/{len(s.columns)} columns drifted, "
        f"dataset drift {s.dataset_drift}; report {outcome.report_path}"
    )
    return outcome
