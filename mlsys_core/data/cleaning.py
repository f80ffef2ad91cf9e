"""Cleaning a raw snapshot into a clean snapshot and a quarantine snapshot, in the lake.

Cleaning runs one partition at a time, batch by batch (see ``batches.py``), so memory is
bounded by the batch size, partitions can be cleaned in parallel, and a new version of a
growing table cleans only its new partitions: a cleaned partition is an immutable part,
named by a hash of its raw parts, the contract and the column types, and reused by every
later version.

A table is all or nothing, by one path for every caller: ``plan_cleaning``, then
``clean_partition`` for each partition (the validate flow maps them as tasks;
``clean_snapshot`` runs them in turn), then ``finish_cleaning``, which either commits the
clean and quarantine snapshots together (one commit point, ``Lake.write_group``) or takes
back every partition this run cleaned and raises the first error.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mlsys_core.atomic import write_text_atomically
from mlsys_core.data.batches import MAIN, QUARANTINE, ContractStep, run_chain
from mlsys_core.data.contract import record_types
from mlsys_core.data.lake import SIDECAR, GroupMember, Lake, PartRef, SnapshotRef
from mlsys_core.spec import TableContract

CLEANING_VERSION = "3"  # bump when cleaning's behaviour changes, so ids move with it
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


class CleaningPlan(BaseModel):
    """What cleaning one raw snapshot takes: its partitions, the column types every part
    is held to, and what an earlier run already did."""

    model_config = ConfigDict(frozen=True)

    table: str
    raw: SnapshotRef
    contract: TableContract
    types: dict[str, str]  # every typed column: declared, or recorded from the data
    snapshot_id: str
    partitions: dict[str, list[PartRef]]
    done: list[str]  # partitions cleaned before this run: never taken back by it
    batch_rows: int
    existing: CleanRef | None = None

    @property
    def undeclared_types(self) -> dict[str, str]:
        """The recorded types of the columns the contract does not declare."""
        return {k: v for k, v in self.types.items() if k not in self.contract.columns}


class CleaningError(RuntimeError):
    """A table's cleaning did not finish; nothing of this run stays in the lake."""


def cleaning_id(raw_ref: SnapshotRef, contract: TableContract, types: dict[str, str]) -> str:
    key = f"{raw_ref.snapshot_id}:{contract.model_dump_json()}:{_types_key(types)}"
    return hashlib.sha256(f"{key}:{CLEANING_VERSION}".encode()).hexdigest()[:20]


def _types_key(types: dict[str, str]) -> str:
    return json.dumps(sorted(types.items()))


def raw_partitions(raw_ref: SnapshotRef, lake: Lake) -> dict[str, list[PartRef]]:
    """The raw parts of a snapshot grouped by partition, in a stable order."""
    groups: dict[str, list[PartRef]] = {}
    for part in lake.parts(raw_ref):
        groups.setdefault(part.partition or "all", []).append(part)
    return dict(sorted(groups.items()))


def table_types(raw_ref: SnapshotRef, contract: TableContract, lake: Lake) -> dict[str, str]:
    """The type of every column of the table: declared in the contract, or recorded when
    ingest first saw values in it (for an older raw snapshot without that record: inferred
    here, part by part in order, the same way)."""
    meta = lake.manifest(raw_ref)
    recorded = meta.get("column_types")
    if recorded is None:
        recorded = {}
        for part in lake.parts(raw_ref):
            recorded = record_types(recorded, lake.read_part(part))
    types = {name: str(kind) for name, kind in recorded.items()}
    types.update({name: rule.dtype for name, rule in contract.columns.items()})
    return types


def plan_cleaning(
    raw_ref: SnapshotRef,
    contract: TableContract,
    lake: Lake,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> CleaningPlan:
    """Everything cleaning ``raw_ref`` needs to know before any partition is cleaned."""
    table = raw_ref.table
    types = table_types(raw_ref, contract, lake)
    snapshot_id = cleaning_id(raw_ref, contract, types)
    partitions = raw_partitions(raw_ref, lake)
    existing = None
    clean = lake.find("clean", table, snapshot_id)
    quarantine = lake.find("quarantine", table, snapshot_id)
    if clean is not None and quarantine is not None:
        existing = _existing(raw_ref, clean, quarantine, lake)
    undeclared = {k: v for k, v in types.items() if k not in contract.columns}
    done = [
        p
        for p, parts in partitions.items()
        if partition_done(table, p, parts, contract, lake, undeclared)
    ]
    return CleaningPlan(
        table=table, raw=raw_ref, contract=contract, types=types, snapshot_id=snapshot_id,
        partitions=partitions, done=done, batch_rows=batch_rows, existing=existing,
    )  # fmt: skip


def clean_partition(  # noqa: PLR0913
    table: str,
    partition: str,
    raw_parts: list[PartRef],
    contract: TableContract,
    lake: Lake,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    types: dict[str, str] | None = None,
) -> PartitionResult:
    """Clean one partition batch by batch; the same raw parts, contract and types are
    cleaned once. All or nothing: a failure takes back its parts and marker."""
    types = types or {}
    part_id = partition_id(raw_parts, contract, types)
    stats_path = _stats_path(lake, table, partition, part_id)
    if (done := _adopt(stats_path, lake)) is not None:
        return done
    step = ContractStep(contract, table, types, lake.part_columns(raw_parts))
    with lake.writing():
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
        # The marker is the partition's commit: both parts are in place before it.
        lake.placed(stats_path)
        write_text_atomically(stats_path, result.model_dump_json())
    return result


def _adopt(stats_path: Path, lake: Lake) -> PartitionResult | None:
    """The result an earlier run recorded, if its marker and both parts are still there
    (their times refreshed, so a collection spares them until this run commits)."""
    try:
        result = PartitionResult.model_validate_json(stats_path.read_text())
    except FileNotFoundError:
        return None
    files = [stats_path, lake.root / result.clean.file, lake.root / result.quarantine.file]
    return result if lake.adopt(files) else None


def partition_id(raw_parts: list[PartRef], contract: TableContract, types: dict[str, str]) -> str:
    key = json.dumps([sorted(p.file for p in raw_parts), contract.model_dump_json()])
    return hashlib.sha256(f"{key}:{_types_key(types)}:{CLEANING_VERSION}".encode()).hexdigest()[:20]


def _stats_path(lake: Lake, table: str, partition: str, part_id: str) -> Path:
    return lake.part_path("clean", table, partition, part_id).with_suffix(SIDECAR)


def partition_done(  # noqa: PLR0913
    table: str,
    partition: str,
    raw_parts: list[PartRef],
    contract: TableContract,
    lake: Lake,
    types: dict[str, str] | None = None,
) -> bool:
    part_id = partition_id(raw_parts, contract, types or {})
    return _stats_path(lake, table, partition, part_id).is_file()


def _result_files(result: PartitionResult, lake: Lake) -> list[Path]:
    part_id = Path(result.clean.file).stem
    table = Path(result.clean.file).parts[1]
    marker = _stats_path(lake, table, result.partition, part_id)
    return [marker, lake.root / result.clean.file, lake.root / result.quarantine.file]


def discard_partition(result: PartitionResult, lake: Lake) -> None:
    """Remove one cleaned partition (its marker first, so it never looks complete), unless
    a committed snapshot uses it."""
    lake.take_back(list(reversed(_result_files(result, lake))))


def finish_cleaning(
    plan: CleaningPlan,
    outcomes: Mapping[str, PartitionResult | BaseException],
    lake: Lake,
) -> CleanRef:
    """The table's commit, all or nothing.

    ``outcomes`` has each partition's result, or the error it failed with. If any failed
    (or is missing), the partitions this run cleaned are taken back and the first error is
    raised: a failed run leaves the lake as it found it. Otherwise the clean and quarantine
    snapshots are committed together. A result whose parts are gone (a cached result whose
    parts an earlier failed run took back) is cleaned again.
    """
    if plan.existing is not None:
        return plan.existing
    errors = [o for o in outcomes.values() if isinstance(o, BaseException)]
    missing = [p for p in plan.partitions if p not in outcomes]
    if errors or missing:
        for partition, outcome in outcomes.items():
            if isinstance(outcome, PartitionResult) and partition not in plan.done:
                discard_partition(outcome, lake)
        if errors:
            raise errors[0]
        raise CleaningError(f"{plan.table}: partitions {missing} were not cleaned")
    results: dict[str, PartitionResult] = {}
    try:
        with lake.writing():
            for partition, parts in plan.partitions.items():
                result = outcomes[partition]
                if not all(f.is_file() for f in _result_files(result, lake)):  # type: ignore[arg-type]
                    result = clean_partition(
                        plan.table, partition, parts, plan.contract, lake, plan.batch_rows,
                        plan.undeclared_types,
                    )  # fmt: skip
                results[partition] = result  # type: ignore[assignment]
            return combine_partitions(plan, list(results.values()), lake)
    except BaseException:
        # The commit failed: this run's partitions go too (a committed snapshot that uses
        # them keeps them: if the pair committed, only what followed it failed).
        for partition, result in results.items():
            if partition not in plan.done:
                discard_partition(result, lake)
        raise


def combine_partitions(plan: CleaningPlan, results: list[PartitionResult], lake: Lake) -> CleanRef:
    """Commit the clean and quarantine snapshots made of the cleaned partitions, together:
    the clean snapshot's rename is the commit point of the pair."""
    raw_ref, table, snapshot_id = plan.raw, plan.table, plan.snapshot_id
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
    manifest = {
        "parents": [f"raw/{table}/{raw_ref.snapshot_id}"],
        "counts": counts,
        "column_types": plan.types,
    }
    quarantine, clean = lake.write_group(
        [
            GroupMember(
                layer="quarantine", table=table, snapshot_id=snapshot_id,
                parts=[r.quarantine for r in results], manifest=manifest,
            ),
            GroupMember(
                layer="clean", table=table, snapshot_id=snapshot_id,
                parts=[r.clean for r in results], manifest=manifest,
            ),
        ]
    )  # fmt: skip
    return CleanRef(
        table=table, raw=raw_ref, clean=clean, quarantine=quarantine, reasons=counts["reasons"]
    )


def clean_snapshot(
    raw_ref: SnapshotRef,
    contract: TableContract,
    lake: Lake,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> CleanRef:
    """Clean one raw snapshot, all or nothing; the same raw snapshot and contract give the
    same ids. The validate flow runs the same steps with its partitions as mapped tasks."""
    plan = plan_cleaning(raw_ref, contract, lake, batch_rows)
    if plan.existing is not None:
        return plan.existing
    outcomes: dict[str, PartitionResult | BaseException] = {}
    for partition, parts in plan.partitions.items():
        try:
            outcomes[partition] = clean_partition(
                plan.table, partition, parts, contract, lake, batch_rows, plan.undeclared_types
            )
        except BaseException as err:  # noqa: BLE001 - finish_cleaning takes back, re-raises
            outcomes[partition] = err
            break
    return finish_cleaning(plan, outcomes, lake)


def column_types(ref: SnapshotRef, lake: Lake) -> dict[str, str]:
    """The type of every column of a clean table (declared or recorded)."""
    meta = lake.manifest(ref)
    if "column_types" in meta:
        return dict(meta["column_types"])
    # A clean snapshot from before types were recorded: its Parquet types say enough.
    types = {}
    for field in meta.get("schema", []):
        kind = field["type"]
        numeric = kind.startswith(("double", "float", "int"))
        time = kind.startswith("timestamp")
        types[field["name"]] = "float" if numeric else "datetime" if time else "string"
    return types


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
