"""Feature-set and online-store tasks."""

from __future__ import annotations

from datetime import datetime

from prefect.cache_policies import NO_CACHE

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.data.lake import Lake, PartRef
from mlsys_core.features import batch, store
from mlsys_core.features.online import MaterializeResult, open_online_store
from mlsys_core.features.store import FeaturePlan, FeatureSetRef
from mlsys_core.registry.lifecycle import Stage
from mlsys_core.serving import lineage
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow
from tasks.base import task
from tasks.retry import retry_on_io_errors


@task(cache_policy=NO_CACHE)
def plan_feature_set(
    clean: dict[str, CleanRef], spec: DatasetSpec, settings: Settings
) -> FeaturePlan:
    """The feature set's version and the base partitions to assemble (none if it exists)."""
    return store.plan_feature_set(clean, spec, Lake(settings.lake_dir))


# No input cache: the part is named by the feature set's version, so a retry or a rerun
# finds it in the lake and reuses it.
@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_on_io_errors,
    cache_policy=NO_CACHE,
)
def assemble_partition(
    plan: FeaturePlan, partition: str, spec: DatasetSpec, settings: Settings
) -> PartRef:
    """Assemble one base partition's feature rows into its features part."""
    return batch.assemble_partition(
        plan.clean,
        spec,
        Lake(settings.lake_dir),
        plan.version,
        partition,
        plan.partitions[partition],
        settings.batch_rows,
        plan.split,
    )


@task(cache_policy=NO_CACHE)
def finish_feature_set(
    plan: FeaturePlan, parts: list[PartRef], spec: DatasetSpec, settings: Settings
) -> FeatureSetRef:
    """Commit the partitions' parts as the versioned feature set."""
    return store.finish_feature_set(plan, parts, spec, Lake(settings.lake_dir))


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
        configure_mlflow(settings.tracking), Lake(settings.lake_dir), model_name, alias
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
        configure_mlflow(settings.tracking),
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
