"""The scheduled drift check: the champion's training reference against the newest data,
logged to MLflow with the HTML report."""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
from pydantic import BaseModel, ConfigDict

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import (
    FeatureSetRef,
    feature_set_ref,
    latest_feature_set,
    load_feature_set,
)
from mlsys_core.monitoring.drift import DriftSummary, drift_frames, run_drift_report
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.run import TAG_DATASET, TAG_FEATURE_SET, TAG_STAGE


class DriftOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    summary: DriftSummary
    run_id: str
    report_path: str
    report_uri: str
    model_version: str


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


def check_model_drift(
    settings: Settings, model_name: str, alias: str = "champion", months: int = 1
) -> DriftOutcome:
    """Compare the model's training split with the latest ``months`` of the newest data."""
    lake = Lake(settings.lake_dir)
    ref_set, version = reference_feature_set(settings, model_name, alias)
    ref_frame, spec = load_feature_set(ref_set, lake)
    newest = latest_feature_set(lake, spec.name)
    # Usually the champion was trained on the newest feature set: read it once then.
    cur_frame = ref_frame if newest == ref_set else load_feature_set(newest, lake)[0]
    reference, _, _ = drift_frames(ref_frame, spec, months)
    _, current, window = drift_frames(cur_frame, spec, months)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    html = settings.reports_dir / f"drift-{model_name}-v{version}-{stamp}.html"
    summary = run_drift_report(reference, current, spec, html, window)
    tags = {
        TAG_STAGE: "drift",
        "mlsys.model": f"{model_name}@{alias}",
        "mlsys.model_version": version,
    }
    with mlflow.start_run(run_name=f"drift-{model_name}-v{version}", tags=tags) as run:
        mlflow.log_params(
            {
                "reference_feature_set": ref_set.version,
                "current_feature_set": newest.version,
                "window": window,
                "months": months,
            }
        )
        mlflow.log_metrics(
            {
                "share_drifted": summary.share_drifted,
                "drifted_columns": float(summary.drifted_columns),
                "dataset_drift": float(summary.dataset_drift),
            }
        )
        mlflow.log_artifact(str(html), "drift")
        mlflow.log_dict(summary.model_dump(mode="json"), "drift/summary.json")
        report_uri = f"{run.info.artifact_uri}/drift/{html.name}"
    return DriftOutcome(
        summary=summary,
        run_id=run.info.run_id,
        report_path=str(html),
        report_uri=report_uri,
        model_version=version,
    )
