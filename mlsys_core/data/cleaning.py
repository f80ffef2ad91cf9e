"""Cleaning a raw snapshot into a clean snapshot and a quarantine snapshot, in the lake."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict

from mlsys_core.data.contract import clean_table
from mlsys_core.data.lake import Lake, SnapshotRef
from mlsys_core.spec import TableContract

CLEANING_VERSION = "1"  # bump when clean_table's behaviour changes, so ids move with it


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


def clean_snapshot(raw_ref: SnapshotRef, contract: TableContract, lake: Lake) -> CleanRef:
    """Clean one raw snapshot; the same raw snapshot and contract give the same ids."""
    key = f"{raw_ref.snapshot_id}:{contract.model_dump_json()}:{CLEANING_VERSION}"
    snapshot_id = hashlib.sha256(key.encode()).hexdigest()[:20]
    table = raw_ref.table
    clean, quarantine = (
        lake.find("clean", table, snapshot_id),
        lake.find("quarantine", table, snapshot_id),
    )
    if clean is None or quarantine is None:
        result = clean_table(lake.read(raw_ref), contract, table)
        lineage = {"parents": [f"raw/{table}/{raw_ref.snapshot_id}"]}
        counts = {
            "rows_in": result.rows_in,
            "clean": len(result.clean),
            "quarantined": len(result.quarantined),
            "reasons": dict(result.reasons),
        }
        # Quarantine first: a clean snapshot never exists without its quarantine beside it.
        quarantine = lake.write(
            "quarantine", table, snapshot_id, result.quarantined, {**lineage, "counts": counts}
        )
        clean = lake.write("clean", table, snapshot_id, result.clean, {**lineage, "counts": counts})
    counts = lake.manifest(clean)["counts"]
    if counts["rows_in"] != raw_ref.rows or clean.rows + quarantine.rows != raw_ref.rows:
        raise AssertionError(
            f"{table}: rows_in {raw_ref.rows} != clean {clean.rows} + quarantined {quarantine.rows}"
        )
    return CleanRef(
        table=table, raw=raw_ref, clean=clean, quarantine=quarantine, reasons=counts["reasons"]
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
    return CleanRef(
        table=table, raw=raw, clean=clean, quarantine=quarantine, reasons=meta["counts"]["reasons"]
    )
