"""Stage 1: snapshot every declared source into the lake (only what is new, for landing
folders)."""

from __future__ import annotations

from flows import runners
from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.data.lake import SnapshotRef
from mlsys_core.datasets import SpecRef, spec_or_default
from tasks.data import snapshot_source
from tasks.metrics import metered


@flow(name="ingest", log_prints=True, task_runner=runners.build())
@metered()
def ingest(
    spec: SpecRef | None = None, landing: dict[str, str] | None = None
) -> dict[str, SnapshotRef]:
    """Snapshot each source of ``spec`` (a dataset reference or spec; default: the settings'
    dataset, ``MLSYS_DATASET``); unchanged sources are no-ops.

    ``landing`` maps source names to landing folders, read incrementally: each run appends
    only the files that arrived since the last one (the scheduled ``ingest`` deployment).
    """
    settings = Settings()
    spec = spec_or_default(spec, settings.dataset)
    if landing:
        spec = spec.with_landing(landing)
    futures = {source.name: snapshot_source.submit(source, settings) for source in spec.sources}
    refs = {name: future.result() for name, future in futures.items()}
    for name, ref in refs.items():
        print(f"raw/{name}/{ref.snapshot_id}: {ref.rows} rows")
    return refs
