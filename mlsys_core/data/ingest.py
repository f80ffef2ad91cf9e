"""Ingestion: a source becomes an immutable raw snapshot whose id is its content hash.

Whole sources (a file, a query) are snapshotted as they are; identical bytes read the same
way give the same id and write nothing. Landing folders are ingested incrementally: a file
whose content hash an earlier snapshot already holds is skipped, new files are appended as
partitions, and the new snapshot names the previous one as its parent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mlsys_core.data.contract import record_types
from mlsys_core.data.lake import Lake, PartRef, SnapshotRef
from mlsys_core.data.sources import (
    EmptySourceError,
    LandingFile,
    SourceBytes,
    landed,
    parse_file,
    parse_source,
    read_source_bytes,
)
from mlsys_core.spec import SourceSpec

log = logging.getLogger(__name__)
UNPARTITIONED = "all"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def snapshot_source(source: SourceSpec, lake: Lake) -> SnapshotRef:
    """Copy one source into the lake (only what is new, for a landing folder).

    All or nothing: a failure leaves no part of this run behind. An input with no rows is
    refused (``on_empty="skip"``: skipped with a warning) and writes no snapshot.
    """
    if source.incremental:
        return ingest_landing(source, lake)
    raw = read_source_bytes(source)
    snapshot_id = read_key(raw)[:20]
    if existing := lake.find("raw", source.name, snapshot_id):
        return existing
    frame = parse_source(raw)
    previous = lake.latest("raw", source.name)
    if frame.empty:
        _refuse_empty(source, raw.uri)
        if previous is None:
            raise EmptySourceError(
                f"source {source.name!r}: {raw.uri} has no rows and no earlier snapshot to keep"
            )
        return previous
    manifest = {
        "source": {"uri": raw.uri, "sha256": raw.sha256, "bytes": len(raw.data)},
        "files": [raw.sha256],
        "parents": [],
        "column_types": record_types(_recorded(previous, lake), frame),
    }
    with lake.writing():
        if not source.partition_by:
            return lake.write("raw", source.name, snapshot_id, frame, manifest)
        parts = _write_partitions(frame, source, lake, raw.sha256)
        return lake.write_snapshot("raw", source.name, snapshot_id, parts, manifest)


# How a file is read, besides its bytes: the same bytes read with another separator or
# encoding are another table. Every field but those that say where the bytes are and how
# the table is kept, so a read option added to SourceSpec is keyed without naming it here.
_NOT_READ = ("name", "package", "path", "url", "query", "incremental", "pattern")
_NOT_READ += ("partition_by", "on_empty")
READ_OPTIONS = tuple(k for k in SourceSpec.model_fields if k not in _NOT_READ)


def read_key(raw: SourceBytes) -> str:
    """A raw snapshot's key: its bytes' hash, and the read options that differ from the
    defaults, so a spec that fixes how its file is read (``encoding="cp1252"``, a
    separator) reads it again instead of finding the table read the old way. Options
    left at their defaults keep the bytes' hash alone, as before."""
    # A query's rows are already read: only the columns joined from them change the table.
    read = ("joined",) if raw.spec.format == "sql" else READ_OPTIONS
    options = {
        k: getattr(raw.spec, k)
        for k in read
        if getattr(raw.spec, k) != SourceSpec.model_fields[k].get_default(call_default_factory=True)
    }
    if not options:
        return raw.sha256
    told = json.dumps(options, sort_keys=True)
    return hashlib.sha256(f"{raw.sha256}\n{told}".encode()).hexdigest()


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
    types = _recorded(previous, lake)
    taken: list[LandingFile] = []
    # A bad file or a failed commit takes back this run's parts: the lake is as it was.
    with lake.writing():
        for file in new:
            frame = parse_file(source, file)
            if frame.empty:
                _refuse_empty(source, str(file.path))
                continue
            # Each column is typed by the first file that has values in it, whether the
            # files landed one run at a time or together.
            types = record_types(types, frame)
            parts.extend(_write_partitions(frame, source, lake, file.sha256))
            taken.append(file)
        if not taken:
            if previous is None:
                raise EmptySourceError(
                    f"source {source.name!r}: every file in {source.path} has no rows"
                )
            return previous
        files = [*seen, *(f.sha256 for f in taken)]
        snapshot_id = hashlib.sha256("\n".join(files).encode()).hexdigest()[:20]
        manifest = {
            "source": {"uri": str(source.path), "pattern": source.pattern},
            "files": files,
            "new_files": [
                {"name": _landed_name(f, source), "sha256": f.sha256, "bytes": f.size}
                for f in taken
            ],
            "parents": parents,
            "column_types": types,
        }
        return lake.write_snapshot("raw", source.name, snapshot_id, parts, manifest)


def _landed_name(file: LandingFile, source: SourceSpec) -> str:
    """A landed file's path in its folder (``year=2024/part-0.parquet``)."""
    return file.path.relative_to(Path(source.path).expanduser()).as_posix()


def _recorded(previous: SnapshotRef | None, lake: Lake) -> dict[str, str]:
    return dict(lake.manifest(previous).get("column_types", {})) if previous else {}


def _refuse_empty(source: SourceSpec, where: str) -> None:
    """An input with no rows is refused, or (``on_empty="skip"``) skipped with a warning."""
    if source.on_empty == "error":
        raise EmptySourceError(
            f"source {source.name!r}: {where} has no rows; nothing was written (set "
            "on_empty='skip' on the source to skip empty inputs with a warning)"
        )
    log.warning("source %r: %s has no rows; skipped, nothing written", source.name, where)


def _new_files(files: list[LandingFile], seen: set[str]) -> list[LandingFile]:
    """Files whose content is new; a copy landing twice in one run is taken once."""
    out, taken = [], set(seen)
    for file in files:
        if file.sha256 not in taken:
            taken.add(file.sha256)
            out.append(file)
    return out


def _write_partitions(
    frame: pd.DataFrame, source: SourceSpec, lake: Lake, content_hash: str
) -> list[PartRef]:
    """One part per partition value of this file's rows, named by the file's hash (a part
    that is already there is reused)."""
    part_id = content_hash[:20]

    def write(partition: str, rows: pd.DataFrame) -> PartRef:
        return lake.write_part("raw", source.name, partition, part_id, rows)

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
