"""Stage 3: assemble the versioned feature set from clean snapshots."""

from __future__ import annotations

from prefect import unmapped

from flows import runners
from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.store import FeatureSetRef
from tasks.data import latest_clean
from tasks.features import assemble_partition, finish_feature_set, plan_feature_set
from tasks.metrics import metered


@flow(name="build-features", log_prints=True, task_runner=runners.build())
@metered()
def build_features(
    clean: dict[str, CleanRef] | None = None, spec: SpecRef | None = None
) -> FeatureSetRef:
    """Build features from the given clean snapshots (default: the newest of each).

    The base table's partitions are assembled in parallel as mapped tasks, each into its
    own part (named by the feature set's version, so a rerun reuses what a failed run
    finished); the feature set is committed once every part is there.
    """
    settings = Settings()
    spec = spec_or_default(spec, settings.dataset)
    clean = clean or latest_clean(sorted(spec.contracts), settings)
    plan = plan_feature_set(clean, spec, settings)
    parts = []
    if plan.existing is None:
        futures = assemble_partition.map(
            unmapped(plan), list(plan.partitions), unmapped(spec), unmapped(settings)
        )
        parts = [future.result() for future in futures]
    features = finish_feature_set(plan, parts, spec, settings)
    print(f"feature set {features.version}: {features.split_rows}")
    return features
