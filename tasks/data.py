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

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.context import TaskRunContext

from mlsys_core.config import Settings
from mlsys_core.data import cleaning, ingest
from mlsys_core.data.cleaning import CleanRef, PartitionResult
from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.data.sources import file_sha256, landed, read_source_bytes
from mlsys_core.spec import SourceSpec, TableContract
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
    """Raw parts are content-addressed, so their names are their content."""
    settings: Settings = parameters["settings"]
    return _key(
        "clean-partition",
        Lake(settings.lake_dir).identity(),
        parameters["table"],
        parameters["partition"],
        *(p.file for p in parameters["raw_parts"]),
        parameters["contract"].model_dump_json(),
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
def raw_partitions(raw: SnapshotRef, settings: Settings) -> dict[str, list[PartRef]]:
    return cleaning.raw_partitions(raw, Lake(settings.lake_dir))


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_on_io_errors,
    cache_key_fn=partition_key,
    **CACHED,
)
def clean_partition(
    table: str,
    partition: str,
    raw_parts: list[PartRef],
    contract: TableContract,
    settings: Settings,
) -> PartitionResult:
    """Clean one partition batch by batch into a clean part and a quarantine part."""
    return cleaning.clean_partition(
        table, partition, raw_parts, contract, Lake(settings.lake_dir), settings.batch_rows
    )


@task
def cleaned_already(
    table: str, groups: dict[str, list[PartRef]], contract: TableContract, settings: Settings
) -> set[str]:
    """Partitions whose cleaning is in the lake from an earlier run (never rolled back)."""
    lake = Lake(settings.lake_dir)
    return {
        partition
        for partition, parts in groups.items()
        if cleaning.partition_done(table, partition, parts, contract, lake)
    }


@task
def discard_partitions(results: list[PartitionResult], settings: Settings) -> None:
    """Take back partitions this run wrote, when their table failed as a whole."""
    lake = Lake(settings.lake_dir)
    for result in results:
        cleaning.discard_partition(result, lake)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io_errors)
def combine_partitions(
    raw: SnapshotRef, contract: TableContract, results: list[PartitionResult], settings: Settings
) -> CleanRef:
    return cleaning.combine_partitions(raw, contract, results, Lake(settings.lake_dir))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io_errors)
def clean_snapshot(raw: SnapshotRef, contract: TableContract, settings: Settings) -> CleanRef:
    """Split a raw snapshot into clean and quarantined rows, each with its reason."""
    return cleaning.clean_snapshot(raw, contract, Lake(settings.lake_dir), settings.batch_rows)


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
