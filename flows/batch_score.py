"""Batch inference: score a feature-set snapshot with the champion into a versioned table."""

from __future__ import annotations

from prefect.runtime import deployment

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, resolve_model_name, resolve_spec
from mlsys_core.serving.batch import ScoreResult
from tasks.metrics import metered
from tasks.registry import record_served_by
from tasks.scoring import resolve_scoring_inputs, score_feature_set


@flow(name="batch-score", log_prints=True)
@metered(rows=lambda result: result.rows)
def batch_score(
    model_name: str | None = None,
    alias: str = "champion",
    spec: SpecRef | None = None,
    feature_set: str | None = None,
) -> ScoreResult:
    """Score ``feature_set`` (default: the newest of ``spec``'s dataset, a dataset reference;
    without one, of the dataset in the version's lineage, that gives the version every input
    as it was trained) with the version ``alias`` points at when the run starts; the same
    version and snapshot again is a no-op."""
    settings = Settings()
    given = resolve_spec(spec) if spec is not None else None
    name = model_name or settings.model_name or resolve_model_name(None, given or settings.dataset)
    default = resolve_spec(settings.dataset).name if settings.dataset and not given else None
    version, (features, passed_over) = resolve_scoring_inputs(
        name, alias, given.name if given else None, feature_set, settings, default
    )
    for why in passed_over:
        print(f"passed over: {why}")
    result = score_feature_set(features, name, version, settings)
    # The batch job consumes the model version: its lineage lists this deployment.
    user = (
        f"prefect-deployment/{deployment.name}" if deployment.name else "prefect-flow/batch-score"
    )
    record_served_by(name, version, user, settings)
    verb = "wrote" if result.created else "found existing"
    print(
        f"{verb} scores/{result.snapshot.table}/{result.snapshot.snapshot_id}: {result.rows} "
        f"rows of feature set {result.feature_set} scored by {name} v{version}"
    )
    if result.unseen:
        counts = ", ".join(f"{column} {rows}" for column, rows in result.unseen.items())
        print(f"rows with a value v{version} never saw in training (an unknown category): {counts}")
    return result
