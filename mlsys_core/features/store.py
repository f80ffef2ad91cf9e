"""Feature sets in the lake: immutable per version, the version being a hash of the spec
and of the clean snapshots they were built from."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlsys_core.data.cleaning import DEFAULT_BATCH_ROWS, CleanRef, column_types
from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.batch import (
    assemble_in_batches,
    base_partitions,
    base_split,
    release_prepared,
)
from mlsys_core.features.online import MaterializeResult, OnlineStoreBase, materialize_spec
from mlsys_core.spec import DatasetSpec, HashSplit, TimeSplit
from mlsys_core.spec.inputs import input_differences

FEATURES_VERSION = "5"  # bump when assembly changes, so versions move with the code
# The lineage tags that name a model's feature set: on its training run, and copied from
# there onto every model version registered from it.
TAG_DATASET = "mlsys.dataset"
TAG_FEATURE_SET = "mlsys.feature_set"


class FeatureSetRef(BaseModel):
    """A versioned feature set plus the lineage a model version records."""

    model_config = ConfigDict(frozen=True)

    snapshot: SnapshotRef
    model_name: str = Field(description="The registered model of the spec it was built with.")
    spec_fingerprint: str
    raw_snapshots: dict[str, str]
    clean_snapshots: dict[str, str]
    split_rows: dict[str, int]

    @property
    def version(self) -> str:
        return self.snapshot.snapshot_id


class FeaturePlan(BaseModel):
    """What building a feature set takes: its version, and the base table's partitions to
    assemble (none when the version exists already: ``existing``)."""

    model_config = ConfigDict(frozen=True)

    version: str
    existing: SnapshotRef | None = None
    partitions: dict[str, list[PartRef]] = {}
    clean: dict[str, CleanRef]
    split: TimeSplit | HashSplit | None = Field(
        default=None, description="The split rows get, dated for the whole base table."
    )


def plan_feature_set(clean: dict[str, CleanRef], spec: DatasetSpec, lake: Lake) -> FeaturePlan:
    """The feature set's version (a hash of the spec, the clean snapshots and the assembly
    code) and the partitions to assemble, or the existing identical version."""
    needed = set(spec.sources_needed)
    if missing := sorted(needed - set(clean)):
        raise ValueError(f"no clean snapshot for sources {missing}; run validation first")
    clean = {t: clean[t] for t in sorted(needed)}
    clean_ids = {t: c.clean.snapshot_id for t, c in clean.items()}
    key = f"{spec.fingerprint()}:{sorted(clean_ids.items())}:{FEATURES_VERSION}"
    version = hashlib.sha256(key.encode()).hexdigest()[:20]
    if existing := lake.find("features", spec.name, version):
        return FeaturePlan(version=version, existing=existing, clean=clean)
    spec.check_base_types(column_types(clean[spec.base].clean, lake))
    return FeaturePlan(
        version=version,
        partitions=base_partitions(clean, spec, lake),
        clean=clean,
        split=base_split(clean, spec, lake),
    )


def finish_feature_set(
    plan: FeaturePlan, parts: list[PartRef], spec: DatasetSpec, lake: Lake
) -> FeatureSetRef:
    """Commit the assembled parts (one per partition, in plan order) as the feature set."""
    release_prepared()  # every partition is assembled: the side tables' memory goes back
    if plan.existing is not None:
        return feature_set_ref(plan.existing, lake)
    splits: dict[str, int] = {}
    for part in parts:
        counts = lake.read_part(part, columns=[SPLIT])[SPLIT].value_counts()
        for name, rows in counts.items():
            splits[name] = splits.get(name, 0) + int(rows)
    manifest = {
        "parents": [f"clean/{t}/{c.clean.snapshot_id}" for t, c in plan.clean.items()],
        "spec": spec.model_dump(mode="json"),
        "spec_fingerprint": spec.fingerprint(),
        "raw_snapshots": {t: c.raw.snapshot_id for t, c in plan.clean.items()},
        "clean_snapshots": {t: c.clean.snapshot_id for t, c in plan.clean.items()},
        "split_rows": splits,
    }
    if plan.split is not None:  # the dates a RecentSplit got for this build, or the split
        manifest["split"] = plan.split.model_dump(mode="json")
    snapshot = lake.write_snapshot("features", spec.name, plan.version, parts, manifest)
    return feature_set_ref(snapshot, lake)


def build_feature_set(
    clean: dict[str, CleanRef],
    spec: DatasetSpec,
    lake: Lake,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    workers: int | None = None,
) -> FeatureSetRef:
    """Assemble features from clean snapshots, or return the existing identical version.

    The base rows stream through partition by partition, in record batches
    (``features/batch.py``), into one part per partition, on ``workers`` threads (the
    build-features flow maps the same ``assemble_partition`` as tasks); the side tables
    and the sources of history views are read whole, since a row's history is not in its
    batch.
    """
    plan = plan_feature_set(clean, spec, lake)
    if plan.existing is not None:
        return finish_feature_set(plan, [], spec, lake)
    with lake.writing():  # a failure takes back the parts: nothing half-made stays
        parts = assemble_in_batches(
            plan.clean, spec, lake, plan.version, batch_rows, workers, plan.split
        )
        return finish_feature_set(plan, parts, spec, lake)


def feature_set_ref(snapshot: SnapshotRef, lake: Lake) -> FeatureSetRef:
    return _ref_and_spec(snapshot, lake)[0]


def _ref_and_spec(snapshot: SnapshotRef, lake: Lake) -> tuple[FeatureSetRef, DatasetSpec]:
    """A feature set and the spec it was built with, from one read of its manifest."""
    meta = lake.manifest(snapshot)
    spec = DatasetSpec.model_validate(meta["spec"])
    ref = FeatureSetRef(
        snapshot=snapshot,
        model_name=spec.registered_model,
        spec_fingerprint=meta["spec_fingerprint"],
        raw_snapshots=meta["raw_snapshots"],
        clean_snapshots=meta["clean_snapshots"],
        split_rows=meta["split_rows"],
    )
    return ref, spec


def feature_set_of(tags: Mapping[str, str], lake: Lake) -> FeatureSetRef:
    """The feature set a training run, or a model version registered from it, was trained
    on: named by its lineage tags, found in ``lake``."""
    if TAG_DATASET not in tags or TAG_FEATURE_SET not in tags:
        raise LookupError(f"no {TAG_DATASET} / {TAG_FEATURE_SET} tags: not trained by mlsys")
    dataset, version = tags[TAG_DATASET], tags[TAG_FEATURE_SET]
    snapshot = lake.find("features", dataset, version)
    if snapshot is None:
        raise LookupError(f"feature set {version} of {dataset!r} is not in {lake.root}")
    return feature_set_ref(snapshot, lake)


def latest_feature_set(lake: Lake, dataset: str) -> FeatureSetRef:
    snapshot = lake.latest("features", dataset)
    if snapshot is None:
        raise LookupError(f"no feature set for {dataset!r} in {lake.root}; build features first")
    return feature_set_ref(snapshot, lake)


def spec_of(feature_set: FeatureSetRef, lake: Lake) -> DatasetSpec:
    """The exact spec a feature set was built with (from its manifest, no data read)."""
    return DatasetSpec.model_validate(lake.manifest(feature_set.snapshot)["spec"])


class UnscorableFeatureSetError(ValueError):
    """Rows a model cannot be given: built with a spec that lacks or computes otherwise some
    input it was trained on. ``reason`` says which, without who could not score them."""

    def __init__(self, who: str, reason: str) -> None:
        super().__init__(f"{who} cannot score it: {reason}")
        self.who, self.reason = who, reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickled into a task's state
        return type(self), (self.who, self.reason)


class ScoringSet(NamedTuple):
    """The feature set to score, and the newer ones passed over (each with why)."""

    feature_set: FeatureSetRef
    passed_over: list[str]


def scoring_feature_set(
    lake: Lake, dataset: str, version: str | None, model: DatasetSpec | None
) -> ScoringSet:
    """Feature set ``version`` of ``dataset``, else the newest one whose rows give a model
    trained with ``model`` (its lineage spec) every input as it was trained.

    A newer set built with another spec (a retrain that dropped a feature or changed a
    window) would hand the model imputed or other values without a word: it is passed over,
    and a set named by ``version`` that the model cannot take is refused with what differs.
    Without ``model`` (a version logged outside the pipeline) the newest set is taken.
    """
    if version is not None:
        snapshot = lake.find("features", dataset, version)
        if snapshot is None:
            raise LookupError(f"no feature set {dataset}/{version} in {lake.root}")
        ref, rows = _ref_and_spec(snapshot, lake)
        if model is not None:
            check_scorable(model, ref, rows, "the model")
        return ScoringSet(ref, [])
    if model is None:
        return ScoringSet(latest_feature_set(lake, dataset), [])
    passed_over = []
    for snapshot in reversed(lake.snapshots("features", dataset)):
        ref, rows = _ref_and_spec(snapshot, lake)
        why = input_differences(model, rows)
        if not why:
            return ScoringSet(ref, passed_over)
        passed_over.append(_unscorable(ref, why))
    if not passed_over:
        latest_feature_set(lake, dataset)  # raises: none was built yet
    raise UnscorableFeatureSetError(
        "the model",
        f"no feature set of {dataset!r} gives it every input as it was trained (newest "
        f"first: {passed_over[0]}); build features with the spec it was trained with",
    )


def check_scorable(model: DatasetSpec, ref: FeatureSetRef, rows: DatasetSpec, who: str) -> None:
    """Raise :class:`UnscorableFeatureSetError` unless ``ref``'s rows (built with ``rows``)
    give a model trained with ``model`` every input as it was trained."""
    if why := input_differences(model, rows):
        raise UnscorableFeatureSetError(who, _unscorable(ref, why))


def _unscorable(ref: FeatureSetRef, why: list[str]) -> str:
    shown = "; ".join(why[:5]) + (f"; and {len(why) - 5} more" if len(why) > 5 else "")
    return (
        f"feature set {ref.version} was built with another spec, whose rows lack inputs the "
        f"model was trained on or compute them otherwise ({shown})"
    )


def load_feature_set(ref: FeatureSetRef, lake: Lake) -> tuple[pd.DataFrame, DatasetSpec]:
    """The frame and the exact spec it was built with."""
    return lake.read(ref.snapshot), spec_of(ref, lake)


def online_source_tables(spec: DatasetSpec) -> list[str]:
    """Sources the online store is materialized from for ``spec``: those of its feature
    views, lookups and as-of joins."""
    joins = [*spec.feature_views, *spec.lookups, *spec.as_of_joins]
    return sorted({j.source for j in joins})


def materialize_online(
    clean: dict[str, CleanRef],
    spec: DatasetSpec,
    lake: Lake,
    store: OnlineStoreBase,
    as_of: datetime | None = None,
    incremental: bool = True,
) -> MaterializeResult:
    """Write what a model of ``spec`` finds online, from clean snapshots: its feature views
    and as-of tables as of ``as_of`` (default: each just after its newest known source row),
    its lookup tables as they are. A spec with nothing to find online writes nothing."""
    needed = online_source_tables(spec)
    if missing := sorted(set(needed) - set(clean)):
        raise ValueError(f"no clean snapshot for sources {missing}; run validation first")
    tables = {t: lake.read(clean[t].clean) for t in needed}
    snapshots = {t: clean[t].clean.snapshot_id for t in needed}
    return materialize_spec(store, spec, tables, as_of, incremental, snapshots)
