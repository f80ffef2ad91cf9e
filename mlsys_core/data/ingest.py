"""Ingestion: a source becomes an immutable raw snapshot whose id is its content hash.

Whole sources (a file, a query) are snapshotted as they are; identical bytes give the same
id and write nothing. Landing folders are ingested incrementally: a file whose content
hash an earlier snapshot already holds is skipped, new files are appended as partitions,
and the new snapshot names the previous one as its parent.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pandas as pd

from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.data.sources import (
    LandingFile,
    landed,
    parse_file,
    parse_source,
    read_source_bytes,
)
from mlsys_core.spec import SourceSpec

UNPARTITIONED = "all"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def snapshot_source(source: SourceSpec, lake: Lake) -> SnapshotRef:
    """Copy one source into the lake (only what is new, for a landing folder)."""
    if source.incremental:
        return ingest_landing(source, lake)
    raw = read_source_bytes(source)
    snapshot_id = raw.sha256[:20]
    if existing := lake.find("raw", source.name, snapshot_id):
        return existing
    frame = parse_source(raw)
    manifest = {
        "source": {"uri": raw.uri, "sha256": raw.sha256, "bytes": len(raw.data)},
        "files": [raw.sha256],
        "parents": [],
    }
    if not source.partition_by:
        return lake.write("raw", source.name, snapshot_id, frame, manifest)
    parts = _write_partitions(frame, source, lake, raw.sha256)
    return lake.write_snapshot("raw", source.name, snapshot_id, parts, manifest)


def ingest_landing(source: SourceSpec, lake: Lake) -> SnapshotRef:
    """Snapshot the landing folder, appending only files not seen before.

    Returns the previous snapshot unchanged when nothing new has landed. One file is
    parsed at a time, so memory is bounded by the largest file, not the table.
    """
    previous = lake.latest("raw", source.name)
    seen: list[str] = []
    parts: list[PartRef] = []
    parents: list[str] = []
    if previous is not None:
        meta = lake.manifest(previous)
        seen, parts = list(meta.get("files", [])), lake.parts(previous)
        parents = [f"raw/{source.name}/{previous.snapshot_id}"]
    new = _new_files(landed(source), set(seen))
    if not new:
        if previous is None:
            raise LookupError(f"source {source.name!r}: landing folder {source.path} is empty")
        return previous
    created: list[PartRef] = []
    try:
        for file in new:
            frame = parse_file(source, file)
            parts.extend(_write_partitions(frame, source, lake, file.sha256, created))
        files = [*seen, *(f.sha256 for f in new)]
        snapshot_id = hashlib.sha256("\n".join(files).encode()).hexdigest()[:20]
        manifest = {
            "source": {"uri": str(source.path), "pattern": source.pattern},
            "files": files,
            "new_files": [{"name": f.path.name, "sha256": f.sha256, "bytes": f.size} for f in new],
            "parents": parents,
        }
        return lake.write_snapshot("raw", source.name, snapshot_id, parts, manifest)
    except BaseException:
        # A bad file or a failed commit: take back this run's parts, so the lake is as it was.
        for part in created:
            (lake.root / part.file).unlink(missing_ok=True)
        raise


def _new_files(files: list[LandingFile], seen: set[str]) -> list[LandingFile]:
    """Files whose content is new; a copy landing twice in one run is taken once."""
    out, taken = [], set(seen)
    for file in files:
        if file.sha256 not in taken:
            taken.add(file.sha256)
            out.append(file)
    return out


def _write_partitions(
    frame: pd.DataFrame,
    source: SourceSpec,
    lake: Lake,
    content_hash: str,
    created: list[PartRef] | None = None,
) -> list[PartRef]:
    """One part per partition value of this file's rows, named by the file's hash; parts
    this call writes (rather than finds) are added to ``created``."""
    part_id = content_hash[:20]
    created = created if created is not None else []

    def write(partition: str, rows: pd.DataFrame) -> PartRef:
        if existing := lake.find_part("raw", source.name, partition, part_id):
            return existing
        part = lake.write_part("raw", source.name, partition, part_id, rows)
        created.append(part)
        return part

    if not source.partition_by:
        return [write(UNPARTITIONED, frame)]
    if missing := [c for c in source.partition_by if c not in frame.columns]:
        # The contract would reject the table anyway; say so here, where it is clear.
        raise ValueError(f"source {source.name!r}: partition columns {missing} are missing")
    paths = np.full(len(frame), "", dtype=object)
    for i, column in enumerate(source.partition_by):
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        values = np.array([f"{column}={_partition_value(u)}" for u in uniques], dtype=object)
        paths = values[codes] if i == 0 else paths + "/" + values[codes]
    out = []
    for path, rows in frame.groupby(paths, sort=True):
        out.append(write(path, rows))
    return out


def _partition_value(value: object) -> str:
    """A folder-safe partition value; numbers are normalised (``1``, ``1.0`` and ``"01"``
    land together), so rows that the contract types alike share a partition."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "__null__"
    try:
        number = float(str(value).strip())
    except ValueError:
        text = str(value).strip()
    else:
        if math.isfinite(number) and number == int(number):
            return str(int(number))
        text = repr(number)
    return _UNSAFE.sub("_", text)[:64] or "__empty__"
