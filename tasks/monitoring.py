"""Drift-check tasks."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact

from mlsys_core.config import Settings
from mlsys_core.monitoring.check import DriftOutcome, check_model_drift


@task
def check_drift(model_name: str, alias: str, months: int, settings: Settings) -> DriftOutcome:
    """Evidently drift of the newest data against the model's training reference."""
    return check_model_drift(settings, model_name, alias, months)


@task
def publish_drift(outcome: DriftOutcome) -> None:
    """Per-column results as a Prefect table, and a link to the HTML report."""
    s = outcome.summary
    rows = [c.model_dump() for c in s.columns]
    create_table_artifact(
        rows,
        key="drift-columns",
        description=(
            f"Drift of {s.current_window} vs the v{outcome.model_version} training "
            f"reference: {s.drifted_columns}/{len(rows)} columns drifted, "
            f"dataset drift: {s.dataset_drift}"
        ),
    )
    create_link_artifact(
        outcome.report_uri,
        link_text="Evidently drift report",
        key="drift-report",
        description=outcome.report_path,
    )
