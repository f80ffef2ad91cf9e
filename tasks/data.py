"""Ingestion and validation tasks.

Tasks that produce snapshots are cached on content: the key is the hash of what they read
(file bytes, the raw parts of a partition) plus the lake's identity, never a pickled frame,
so a rerun on the same inputs is a cache hit that returns the same snapshot ids. Results
are stored as JSON, so a cache never unpickles anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from mlsys_core.config import Settings
from mlsys_core.data import cleaning, ingest
from mlsys_core.data.cleaning import CleaningPlan, CleanRef, PartitionResult
from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.data.sources import file_sha256, landed, read_source_bytes
from mlsys_core.spec import SourceSpec, TableContract
from tasks.base import task
from tasks.retry import retry_on_io_errors

CACHED: dict[str, Any] = {"persist_result": True, "result_serializer": "json"}


def _key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def source_content_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """What the source holds now; None (no caching) for a query, which is the read itself."""
    source: SourceSpec = parameters["source"]
    settings: Settings = parameters["settings"]
    lake = Lake(settings.lake_dir)
    if source.format == "sql":
        return None
    if source.incremental:
        content = [f"{f.path.name}:{f.sha256}" for f in landed(source)]
    elif source.package:
        content = [read_source_bytes(source).sha256]
    else:
        content = [file_sha256(Path(source.path).expanduser())]
    return _key("snapshot", lake.identity(), source.model_dump_json(), *content)


def partition_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Raw parts are content-addressed, so their names are their content. (A cached result
    whose parts a failed run took back is cleaned again by ``finish_cleaning``.)"""
    settings: Settings = parameters["settings"]
    return _key(
        "clean-partition",
        Lake(settings.lake_dir).identity(),
        parameters["table"],
        parameters["partition"],
        *(p.file for p in parameters["raw_parts"]),
        parameters["contract"].model_dump_json(),
        sorted(parameters["types"].items()),
        cleaning.CLEANING_VERSION,
    )


@task(
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=retry_on_io_errors,
    cache_key_fn=source_content_key,
    **CACHED,
)
def snapshot_source(source: SourceSpec, settings: Settings) -> SnapshotRef:
    """Copy one source into the lake as an immutable, content-addressed snapshot."""
    return ingest.snapshot_source(source, Lake(settings.lake_dir))


@task
def plan_cleaning(raw: SnapshotRef, contract: TableContract, settings: Settings) -> CleaningPlan:
    """What cleaning ``raw`` takes: its partitions, column types and what is done already."""
    return cleaning.plan_cleaning(raw, contract, Lake(settings.lake_dir), settings.batch_rows)


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_on_io_errors,
    cache_key_fn=partition_key,
    **CACHED,
)
def clean_partition(  # noqa: PLR0913
    table: str,
    partition: str,
    raw_parts: list[PartRef],
    contract: TableContract,
    types: dict[str, str],
    settings: Settings,
) -> PartitionResult:
    """Clean one partition batch by batch into a clean part and a quarantine part."""
    return cleaning.clean_partition(
        table, partition, raw_parts, contract, Lake(settings.lake_dir), settings.batch_rows, types
    )


# No retries: the errors it re-raises are its partitions', which had their own; no cache:
# it is handed exceptions, and it is the table's commit.
@task(cache_policy=NO_CACHE)
def finish_cleaning(
    plan: CleaningPlan,
    outcomes: dict[str, PartitionResult | BaseException],
    settings: Settings,
) -> CleanRef:
    """All or nothing: commit the table's clean and quarantine snapshots together, or take
    back every partition this run cleaned and raise the first partition's error."""
    return cleaning.finish_cleaning(plan, outcomes, Lake(settings.lake_dir))


@task
def latest_raw(tables: list[str], settings: Settings) -> dict[str, SnapshotRef]:
    lake = Lake(settings.lake_dir)
    refs = {t: lake.latest("raw", t) for t in tables}
    if missing := [t for t, ref in refs.items() if ref is None]:
        raise LookupError(f"no raw snapshot of {missing} in {lake.root}; run ingest first")
    return refs


@task
def latest_clean(tables: list[str], settings: Settings) -> dict[str, CleanRef]:
    lake = Lake(settings.lake_dir)
    return {t: cleaning.latest_clean(lake, t) for t in tables}


@task
def publish_quality_report(results: dict[str, CleanRef]) -> None:
    """A Prefect artifact: per table, rows in, clean, quarantined and why."""
    rows = [
        {
            "table": name,
            "rows_in": ref.rows_in,
            "clean": ref.clean.rows,
            "quarantined": ref.quarantine.rows,
            "reasons": "; ".join(f"{r} ({n})" for r, n in ref.reasons.items()) or "-",
            "clean_snapshot": ref.clean.snapshot_id,
        }
        for name, ref in results.items()
    ]
    create_table_artifact(rows, key="data-quality", description="Validation and quarantine")
