"""Stage 2: type and check every raw snapshot; quarantine failing rows with reasons."""

from __future__ import annotations

from prefect import flow

from mlsys_core.config import Settings
from mlsys_core.data.cleaning import CleanRef
from mlsys_core.data.lake import SnapshotRef
from mlsys_core.spec import DatasetSpec, nycflights13_spec
from tasks.data import clean_snapshot, latest_raw, publish_quality_report


@flow(name="validate", log_prints=True)
def validate(
    raw: dict[str, SnapshotRef] | None = None, spec: DatasetSpec | None = None
) -> dict[str, CleanRef]:
    """Clean the given raw snapshots (default: the newest of each contracted source)."""
    spec = spec or nycflights13_spec()
    settings = Settings()
    raw = raw or latest_raw(sorted(spec.contracts), settings)
    futures = {
        name: clean_snapshot.submit(ref, spec.contracts[name], settings)
        for name, ref in raw.items()
        if name in spec.contracts
    }
    results = {name: future.result() for name, future in futures.items()}
    for name, ref in results.items():
        print(
            f"{name}: {ref.rows_in} in = {ref.clean.rows} clean + {ref.quarantine.rows} "
            f"quarantined {ref.reasons or ''}"
        )
    publish_quality_report(results)
    return results
