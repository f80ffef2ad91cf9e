"""Batch-scoring tasks."""

from __future__ import annotations

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef, ScoringSet, scoring_feature_set
from mlsys_core.registry.lineage import version_spec
from mlsys_core.serving import batch
from mlsys_core.serving.batch import ScoreResult
from mlsys_core.tracking import configure_mlflow
from tasks.base import task
from tasks.retry import retry_on_io_errors


@task
def resolve_scoring_inputs(
    model_name: str,
    alias: str,
    dataset: str | None,
    feature_set: str | None,
    settings: Settings,
    default_dataset: str | None = None,
) -> tuple[str, ScoringSet]:
    """Pin the version behind ``alias`` and the feature set (default: the newest the version
    can take of the dataset given, else of the one in its lineage)."""
    client = configure_mlflow(settings.tracking)
    lake = Lake(settings.lake_dir)
    version = batch.resolve_version(client, model_name, alias)
    name = batch.scoring_dataset(client, lake, model_name, version, dataset, default_dataset)
    trained = version_spec(client, lake, model_name, version)
    return version, scoring_feature_set(lake, name, feature_set, trained)


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_io_errors)
def score_feature_set(
    feature_set: FeatureSetRef, model_name: str, model_version: str, settings: Settings
) -> ScoreResult:
    """Write the versioned scores table; an identical one already there is returned as is."""
    client = configure_mlflow(settings.tracking)
    return batch.score_feature_set(
        Lake(settings.lake_dir),
        feature_set,
        model_name,
        model_version,
        settings.batch_rows,
        client,
    )
