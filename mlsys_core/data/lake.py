"""The lake: immutable Parquet snapshots, each a folder named by a content hash.

A snapshot is written to a temporary folder and renamed into place, so a reader sees a
whole snapshot or none, and writing the same content twice is a no-op.

Large or growing tables are *partitioned*: their data lives in immutable part files under
``<layer>/<table>/_parts/<partition>/``, and a snapshot's manifest lists the parts it is
made of. A new version of such a table lists the old parts plus new ones, so appending a
month copies nothing, and every version stays readable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

Layer = Literal["raw", "clean", "quarantine", "features", "stream", "predictions", "scores"]
MANIFEST = "_manifest.json"
DATA = "part-0.parquet"
PARTS = "_parts"
_SAFE = re.compile(r"^[A-Za-z0-9_.=-]+$")


class SnapshotRef(BaseModel):
    """A small, serialisable pointer to one snapshot; stages pass these, not frames."""

    model_config = ConfigDict(frozen=True)

    layer: Layer
    table: str
    snapshot_id: str
    rows: int
    path: str


class PartRef(BaseModel):
    """One immutable data file of a partitioned table, relative to the lake root."""

    model_config = ConfigDict(frozen=True)

    partition: str
    file: str
    rows: int


class LakeError(RuntimeError):
    """A snapshot that should exist does not, or is damaged."""


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def identity(self) -> str:
        """A random id made when the lake is first used: caches keyed on it never outlive
        the lake they describe (a wiped and rebuilt lake gets a new one)."""
        path = self.root / "_lake_id"
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".tmp-id-{uuid.uuid4().hex}"
            tmp.write_text(uuid.uuid4().hex)
            try:
                os.link(tmp, path)  # fails if another process made it first: theirs wins
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()

    def _dir(self, layer: Layer, table: str, snapshot_id: str) -> Path:
        return self.root / layer / table / snapshot_id

    def find(self, layer: Layer, table: str, snapshot_id: str) -> SnapshotRef | None:
        folder = self._dir(layer, table, snapshot_id)
        if not (folder / MANIFEST).is_file():
            return None
        return self._ref(folder)

    def write(
        self,
        layer: Layer,
        table: str,
        snapshot_id: str,
        frame: pd.DataFrame,
        manifest: dict[str, Any] | None = None,
    ) -> SnapshotRef:
        """Write ``frame`` as snapshot ``snapshot_id`` unless it already exists."""
        arrow = pa.Table.from_pandas(frame, preserve_index=False)

        def data(tmp: Path) -> dict[str, Any]:
            pq.write_table(arrow, tmp / DATA)
            _fsync(tmp / DATA)
            return {
                "rows": arrow.num_rows,
                "schema": [{"name": f.name, "type": str(f.type)} for f in arrow.schema],
            }

        return self._commit(layer, table, snapshot_id, data, manifest)

    def write_snapshot(
        self,
        layer: Layer,
        table: str,
        snapshot_id: str,
        parts: list[PartRef],
        manifest: dict[str, Any] | None = None,
    ) -> SnapshotRef:
        """Record a snapshot made of existing part files; the parts are not copied."""
        for part in parts:
            if not (self.root / part.file).is_file():
                raise LakeError(f"part {part.file} of {layer}/{table}/{snapshot_id} is missing")
        schema = pq.read_schema(self.root / parts[0].file) if parts else pa.schema([])

        def data(_: Path) -> dict[str, Any]:
            return {
                "rows": sum(p.rows for p in parts),
                "schema": [{"name": f.name, "type": str(f.type)} for f in schema],
                "parts": [p.model_dump() for p in parts],
            }

        return self._commit(layer, table, snapshot_id, data, manifest)

    def _commit(self, layer, table, snapshot_id, write_data, manifest) -> SnapshotRef:  # noqa: ANN001
        if existing := self.find(layer, table, snapshot_id):
            return existing
        final = self._dir(layer, table, snapshot_id)
        tmp = final.parent / f".tmp-{snapshot_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            meta = {
                "layer": layer,
                "table": table,
                "snapshot_id": snapshot_id,
                **write_data(tmp),
                "created_at": datetime.now(UTC).isoformat(),
                **(manifest or {}),
            }
            (tmp / MANIFEST).write_text(json.dumps(meta, indent=2, default=str))
            _fsync(tmp / MANIFEST)
            try:
                os.rename(tmp, final)
            except OSError:
                if self.find(layer, table, snapshot_id) is None:  # not a lost race: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._ref(final)

    # -- parts ---------------------------------------------------------------------------
    def part_path(self, layer: Layer, table: str, partition: str, part_id: str) -> Path:
        for piece in [*partition.split("/"), part_id]:
            if not _SAFE.match(piece):
                raise LakeError(f"unsafe partition or part name: {piece!r}")
        return self.root / layer / table / PARTS / partition / f"{part_id}.parquet"

    def find_part(self, layer: Layer, table: str, partition: str, part_id: str) -> PartRef | None:
        path = self.part_path(layer, table, partition, part_id)
        if not path.is_file():
            return None
        rows = pq.ParquetFile(path).metadata.num_rows
        return PartRef(partition=partition, file=str(path.relative_to(self.root)), rows=rows)

    @contextmanager
    def part_writer(
        self, layer: Layer, table: str, partition: str, part_id: str
    ) -> Iterator[PartWriter]:
        """Stream batches into one part; it appears (renamed into place) only on success."""
        final = self.part_path(layer, table, partition, part_id)
        # Staged in the lake's root and moved in on success: a failed write leaves no file
        # and no folder behind.
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-part-{uuid.uuid4().hex}.parquet"
        writer = PartWriter(tmp)
        try:
            yield writer
            writer.close()
            _fsync(tmp)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            writer.close()
            tmp.unlink(missing_ok=True)
        writer.ref = PartRef(
            partition=partition, file=str(final.relative_to(self.root)), rows=writer.rows
        )

    def write_part(
        self, layer: Layer, table: str, partition: str, part_id: str, frame: pd.DataFrame
    ) -> PartRef:
        if existing := self.find_part(layer, table, partition, part_id):
            return existing
        with self.part_writer(layer, table, partition, part_id) as writer:
            writer.write(frame)
        return writer.ref

    def parts(self, ref: SnapshotRef) -> list[PartRef]:
        """The data files of a snapshot, in order (a plain snapshot has one)."""
        meta = self.manifest(ref)
        if "parts" in meta:
            return [PartRef.model_validate(p) for p in meta["parts"]]
        file = Path(ref.path) / DATA
        return [PartRef(partition="", file=str(file.relative_to(self.root)), rows=ref.rows)]

    # -- reading -------------------------------------------------------------------------
    def read(self, ref: SnapshotRef, columns: list[str] | None = None) -> pd.DataFrame:
        tables = [self._read_part(part, columns) for part in self.parts(ref)]
        if not tables:
            return pd.DataFrame(columns=columns or [])
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    def read_part(self, part: PartRef, columns: list[str] | None = None) -> pd.DataFrame:
        return self._read_part(part, columns).to_pandas()

    def iter_batches(
        self, parts: list[PartRef], batch_size: int, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` rows: memory stays flat with table size."""
        for part in parts:
            path = self._part_file(part)
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)

    def _part_file(self, part: PartRef) -> Path:
        path = self.root / part.file
        if not path.is_file():
            raise LakeError(f"part {part.file} is missing from {self.root}")
        return path

    def _read_part(self, part: PartRef, columns: list[str] | None) -> pa.Table:
        return pq.read_table(self._part_file(part), columns=columns)

    def manifest(self, ref: SnapshotRef) -> dict[str, Any]:
        path = Path(ref.path) / MANIFEST
        if not path.is_file():
            raise LakeError(f"snapshot {ref.layer}/{ref.table}/{ref.snapshot_id} is missing")
        return json.loads(path.read_text())

    def latest(self, layer: Layer, table: str) -> SnapshotRef | None:
        """The most recently written snapshot of a table, or None."""
        folder = self.root / layer / table
        if not folder.is_dir():
            return None
        manifests = [p / MANIFEST for p in folder.iterdir() if (p / MANIFEST).is_file()]
        if not manifests:
            return None
        newest = max(manifests, key=lambda m: json.loads(m.read_text())["created_at"])
        return self._ref(newest.parent)

    def lineage(self, ref: SnapshotRef) -> list[dict[str, Any]]:
        """Every snapshot ``ref`` was built from, transitively, nearest first.

        Each entry is ``{"snapshot": "layer/table/id", "parents": [...], "created_at",
        "rows"}``; a snapshot reached twice (a diamond) is listed once.
        """
        chain, seen, queue = [], set(), [f"{ref.layer}/{ref.table}/{ref.snapshot_id}"]
        while queue:
            key = queue.pop(0)
            if key in seen:
                continue
            seen.add(key)
            layer, table, snapshot_id = key.split("/")
            node = self.find(layer, table, snapshot_id)  # type: ignore[arg-type]
            if node is None:
                raise LakeError(f"lineage of {ref.table} names {key}, which is not in the lake")
            meta = self.manifest(node)
            parents = list(meta.get("parents", []))
            chain.append(
                {
                    "snapshot": key,
                    "parents": parents,
                    "created_at": meta["created_at"],
                    "rows": meta["rows"],
                }
            )
            queue.extend(parents)
        return chain

    def _ref(self, folder: Path) -> SnapshotRef:
        meta = json.loads((folder / MANIFEST).read_text())
        return SnapshotRef(
            layer=meta["layer"],
            table=meta["table"],
            snapshot_id=meta["snapshot_id"],
            rows=meta["rows"],
            path=str(folder),
        )


class PartWriter:
    """Appends frames to one Parquet file; later frames are cast to the first's schema, so
    a part always has one schema."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self.ref: PartRef | None = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame | pa.Table) -> None:
        table = (
            frame
            if isinstance(frame, pa.Table)
            else pa.Table.from_pandas(frame, preserve_index=False)
        )
        table = table.replace_schema_metadata(None)
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.path, self._schema)
        elif table.schema != self._schema:
            if self._widens_nulls(table.schema):
                self._retype(table.schema)
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
                raise LakeError(f"batch schema differs from the part's: {err}") from err
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _widens_nulls(self, schema: pa.Schema) -> bool:
        """A column that was all null so far (type null) and now has a real type."""
        return any(
            f.type == pa.null()
            and f.name in schema.names
            and schema.field(f.name).type != pa.null()
            for f in self._schema
        )

    def _retype(self, schema: pa.Schema) -> None:
        # Rare path: the part so far is rewritten once with the typed columns, so a first
        # batch whose column happened to be all null does not fix that column's type.
        fields = [
            schema.field(f.name) if f.type == pa.null() and f.name in schema.names else f
            for f in self._schema
        ]
        self._schema = pa.schema(fields)
        self._writer.close()
        written = pq.read_table(self.path).cast(self._schema)
        self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(written)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif not self.path.exists() and self.ref is None and self._schema is None:
            # No batch at all: an empty part is still a valid, readable file.
            pq.write_table(pa.table({}), self.path)
            self._schema = pa.schema([])


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
