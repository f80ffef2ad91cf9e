"""Ingestion: a source becomes an immutable raw snapshot whose id is its content hash."""

from __future__ import annotations

from mlsys_core.data.lake import Lake, SnapshotRef
from mlsys_core.data.sources import parse_source, read_source_bytes
from mlsys_core.spec import SourceSpec


def snapshot_source(source: SourceSpec, lake: Lake) -> SnapshotRef:
    """Copy one source into the lake; identical bytes give the same id and write nothing."""
    raw = read_source_bytes(source)
    snapshot_id = raw.sha256[:20]
    if existing := lake.find("raw", source.name, snapshot_id):
        return existing
    frame = parse_source(raw)
    manifest = {
        "source": {"uri": raw.uri, "sha256": raw.sha256, "bytes": len(raw.data)},
        "parents": [],
    }
    return lake.write("raw", source.name, snapshot_id, frame, manifest)
