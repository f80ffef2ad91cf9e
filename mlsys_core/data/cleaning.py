"""Cleaning a raw snapshot into a clean snapshot and a quarantine snapshot, in the lake.

Cleaning runs one partition at a time, batch by batch (see ``batches.py``), so memory is
bounded by the batch size, partitions can be cleaned in parallel, and a new version of a
growing table cleans only its new partitions: a cleaned partition is an immutable part,
named by a hash of its raw parts and the contract, and reused by every later version.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mlsys_core.atomic import write_text_atomically
from mlsys_core.data.batches import MAIN, QUARANTINE, ContractStep, run_chain
from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.spec import TableContract

CLEANING_VERSION = "2"  # bump when cleaning's behaviour changes, so ids move with it
DEFAULT_BATCH_ROWS = 65_536


class CleanRef(BaseModel):
    """The outcome of cleaning one table; ``rows_in == clean + quarantined`` is checked."""

    model_config = ConfigDict(frozen=True)

    table: str
    raw: SnapshotRef
    clean: SnapshotRef
    quarantine: SnapshotRef
    reasons: dict[str, int]

    @property
    def rows_in(self) -> int:
        return self.raw.rows


class PartitionResult(BaseModel):
    """One cleaned partition: its clean part, its quarantine part and the counts."""

    model_config = ConfigDict(frozen=True)

    partition: str
    clean: PartRef
    quarantine: PartRef
    rows_in: int
    reasons: dict[str, int]


def cleaning_id(raw_ref: SnapshotRef, contract: TableContract) -> str:
    key = f"{raw_ref.snapshot_id}:{contract.model_dump_json()}:{CLEANING_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def raw_partitions(raw_ref: SnapshotRef, lake: Lake) -> dict[str, list[PartRef]]:
    """The raw parts of a snapshot grouped by partition, in a stable order."""
    groups: dict[str, list[PartRef]] = {}
    for part in lake.parts(raw_ref):
        groups.setdefault(part.partition or "all", []).append(part)
    return dict(sorted(groups.items()))


def clean_partition(
    table: str,
    partition: str,
    raw_parts: list[PartRef],
    contract: TableContract,
    lake: Lake,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> PartitionResult:
    """Clean one partition batch by batch; the same raw parts and contract are done once."""
    part_id = partition_id(raw_parts, contract)
    stats_path = _stats_path(lake, table, partition, part_id)
    if stats_path.is_file():  # the commit marker: both parts were written before it
        return PartitionResult.model_validate_json(stats_path.read_text())
    step = ContractStep(contract, table)
    with (
        lake.part_writer("clean", table, partition, part_id) as clean,
        lake.part_writer("quarantine", table, partition, part_id) as quarantine,
    ):
        counts = run_chain(
            lake.iter_batches(raw_parts, batch_rows),
            [step],
            {MAIN: clean.write, QUARANTINE: quarantine.write},
        )
    rows_in = sum(p.rows for p in raw_parts)
    if counts["rows_in"] != rows_in or counts[MAIN] + counts[QUARANTINE] != rows_in:
        raise AssertionError(
            f"{table}/{partition}: rows_in {rows_in} != clean {counts[MAIN]} + "
            f"quarantined {counts[QUARANTINE]}"
        )
    result = PartitionResult(
        partition=partition,
        clean=clean.ref,
        quarantine=quarantine.ref,
        rows_in=rows_in,
        reasons=dict(step.reasons),
    )
    write_text_atomically(stats_path, result.model_dump_json())
    return result


def partition_id(raw_parts: list[PartRef], contract: TableContract) -> str:
    key = json.dumps([sorted(p.file for p in raw_parts), contract.model_dump_json()])
    return hashlib.sha256(f"{key}:{CLEANING_VERSION}".encode()).hexdigest()[:20]


def _stats_path(lake: Lake, table: str, partition: str, part_id: str) -> Path:
    return lake.part_path("clean", table, partition, part_id).with_suffix(".json")


def partition_done(
    table: str, partition: str, raw_parts: list[PartRef], contract: TableContract, lake: Lake
) -> bool:
    return _stats_path(lake, table, partition, partition_id(raw_parts, contract)).is_file()


def discard_partition(result: PartitionResult, lake: Lake) -> None:
    """Remove one cleaned partition (its marker first, so it never looks complete)."""
    part_id = Path(result.clean.file).stem
    table = Path(result.clean.file).parts[1]
    _stats_path(lake, table, result.partition, part_id).unlink(missing_ok=True)
    for part in (result.clean, result.quarantine):
        (lake.root / part.file).unlink(missing_ok=True)


def combine_partitions(
    raw_ref: SnapshotRef, contract: TableContract, results: list[PartitionResult], lake: Lake
) -> CleanRef:
    """Record the clean and quarantine snapshots made of the cleaned partitions."""
    snapshot_id, table = cleaning_id(raw_ref, contract), raw_ref.table
    results = sorted(results, key=lambda r: r.partition)
    reasons: Counter[str] = Counter()
    for result in results:
        reasons.update(result.reasons)
    counts = {
        "rows_in": sum(r.rows_in for r in results),
        "clean": sum(r.clean.rows for r in results),
        "quarantined": sum(r.quarantine.rows for r in results),
        "reasons": dict(sorted(reasons.items())),
    }
    if counts["rows_in"] != raw_ref.rows or counts["clean"] + counts["quarantined"] != raw_ref.rows:
        raise AssertionError(f"{table}: rows_in {raw_ref.rows} != clean + quarantined ({counts})")
    manifest = {"parents": [f"raw/{table}/{raw_ref.snapshot_id}"], "counts": counts}
    # Quarantine first: a clean snapshot never exists without its quarantine beside it.
    quarantine = lake.write_snapshot(
        "quarantine", table, snapshot_id, [r.quarantine for r in results], manifest
    )
    clean = lake.write_snapshot("clean", table, snapshot_id, [r.clean for r in results], manifest)
    return CleanRef(
        table=table, raw=raw_ref, clean=clean, quarantine=quarantine, reasons=counts["reasons"]
    )


def clean_snapshot(
    raw_ref: SnapshotRef,
    contract: TableContract,
    lake: Lake,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> CleanRef:
    """Clean one raw snapshot; the same raw snapshot and contract give the same ids."""
    snapshot_id, table = cleaning_id(raw_ref, contract), raw_ref.table
    clean = lake.find("clean", table, snapshot_id)
    quarantine = lake.find("quarantine", table, snapshot_id)
    if clean is not None and quarantine is not None:
        return _existing(raw_ref, clean, quarantine, lake)
    results = [
        clean_partition(table, partition, parts, contract, lake, batch_rows)
        for partition, parts in raw_partitions(raw_ref, lake).items()
    ]
    return combine_partitions(raw_ref, contract, results, lake)


def _existing(
    raw: SnapshotRef, clean: SnapshotRef, quarantine: SnapshotRef, lake: Lake
) -> CleanRef:
    counts = lake.manifest(clean)["counts"]
    if counts["rows_in"] != raw.rows or clean.rows + quarantine.rows != raw.rows:
        raise AssertionError(
            f"{raw.table}: rows_in {raw.rows} != clean {clean.rows} + quarantined {quarantine.rows}"
        )
    return CleanRef(
        table=raw.table, raw=raw, clean=clean, quarantine=quarantine, reasons=counts["reasons"]
    )


def latest_clean(lake: Lake, table: str) -> CleanRef:
    """The newest cleaning of a table, rebuilt from the lake's manifests."""
    clean = lake.latest("clean", table)
    if clean is None:
        raise LookupError(f"no clean snapshot of {table!r} in {lake.root}; run validation first")
    meta = lake.manifest(clean)
    quarantine = lake.find("quarantine", table, clean.snapshot_id)
    raw = lake.find("raw", table, meta["parents"][0].rsplit("/", 1)[-1])
    if quarantine is None or raw is None:
        raise LookupError(f"clean snapshot {table}/{clean.snapshot_id} lacks its lineage")
    return _existing(raw, clean, quarantine, lake)
