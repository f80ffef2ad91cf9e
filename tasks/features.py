"""Feature-set tasks."""

from __future__ import annotations

from datetime import datetime

from prefect import task

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.data.lake import Lake
from mlsys_core.features import store
from mlsys_core.features.online import MaterializeResult, OnlineStore, online_store_path
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.spec import DatasetSpec


@task
def build_feature_set(
    clean: dict[str, CleanRef], spec: DatasetSpec, settings: Settings
) -> FeatureSetRef:
    """Assemble the versioned feature set (point-in-time joins, label, split)."""
    return store.build_feature_set(clean, spec, Lake(settings.lake_dir), settings.batch_rows)


@task
def latest_feature_set(dataset: str, settings: Settings) -> FeatureSetRef:
    return store.latest_feature_set(Lake(settings.lake_dir), dataset)


@task
def materialize_online(
    clean: dict[str, CleanRef],
    spec: DatasetSpec,
    settings: Settings,
    as_of: datetime | None = None,
    incremental: bool = True,
) -> MaterializeResult:
    """Write the newest feature values to the embedded online store (SQLite)."""
    online = OnlineStore(online_store_path(settings.root))
    return store.materialize_online(
        clean, spec, Lake(settings.lake_dir), online, as_of, incremental
    )
