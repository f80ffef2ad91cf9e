"""Feature-set and online-store tasks."""

from __future__ import annotations

from datetime import datetime

from prefect import task

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.data.lake import Lake
from mlsys_core.features import store
from mlsys_core.features.online import MaterializeResult, open_online_store
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.registry.lifecycle import Stage
from mlsys_core.serving import lineage
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow


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
    """Write what a model of ``spec`` finds online (views, lookups, as-of tables) to the
    online store."""
    online = open_online_store(settings.root, settings.online_store)
    return store.materialize_online(
        clean, spec, Lake(settings.lake_dir), online, as_of, incremental
    )


@task
def served_spec(model_name: str, alias: str, settings: Settings) -> DatasetSpec | None:
    """The spec the version behind ``alias`` was trained with (None: no such version, or
    one without lineage)."""
    _, spec = lineage.alias_spec(
        configure_mlflow(settings), Lake(settings.lake_dir), model_name, alias
    )
    return spec


@task
def prepare_online_store(
    name: str, version: str, to_stage: Stage, settings: Settings
) -> MaterializeResult | None:
    """Before a version becomes champion (moves to production): the online store holds
    every view and lookup it needs, as of now. Other stages need nothing online."""
    if to_stage != Stage.PRODUCTION:
        return None
    result = lineage.materialize_for_version(
        configure_mlflow(settings),
        Lake(settings.lake_dir),
        open_online_store(settings.root, settings.online_store),
        name,
        version,
    )
    if result is None:
        print(f"{name} v{version} names no feature set in its lineage: nothing to materialize")
    else:
        print(f"online store ready for {name} v{version}: {_summary(result)}")
    return result


def _summary(result: MaterializeResult) -> str:
    return (
        ", ".join(
            f"{name} ({done.mode}, {done.entities_written} rows"
            + (f", as of {done.as_of:%Y-%m-%d %H:%M:%S}Z)" if done.as_of else ")")
            for name, done in result.views.items()
        )
        or "nothing needed"
    )
