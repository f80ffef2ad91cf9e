"""Ingestion and validation tasks."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact

from mlsys_core.config import Settings
from mlsys_core.data import cleaning, ingest
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.data.lake import Lake, SnapshotRef
from mlsys_core.spec import SourceSpec, TableContract
from tasks.retry import retry_on_io_errors


@task(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=retry_on_io_errors)
def snapshot_source(source: SourceSpec, settings: Settings) -> SnapshotRef:
    """Copy one source into the lake as an immutable, content-addressed snapshot."""
    return ingest.snapshot_source(source, Lake(settings.lake_dir))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io_errors)
def clean_snapshot(raw: SnapshotRef, contract: TableContract, settings: Settings) -> CleanRef:
    """Split a raw snapshot into clean and quarantined rows, each with its reason."""
    return cleaning.clean_snapshot(raw, contract, Lake(settings.lake_dir))


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
