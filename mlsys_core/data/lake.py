"""The lake: immutable Parquet snapshots, each a folder named by a content hash.

A snapshot is written to a temporary folder and renamed into place, so a reader sees a
whole snapshot or none, and writing the same content twice is a no-op.

Large or growing tables are *partitioned*: their data lives in immutable part files under
``<layer>/<table>/_parts/<partition>/``, and a snapshot's manifest lists the parts it is
made of. A new version of such a table lists the old parts plus new ones, so appending a
month copies nothing, and every version stays readable.

Consistency under failure:

- **Commit points.** A part appears by one rename, a snapshot by one rename of its folder
  (its manifest inside). Snapshots that only make sense together (a clean table and its
  quarantine) form a *group*: each member's manifest names every member, a member is
  visible to readers only when all of them are in place, and they are renamed in order,
  so the last rename is the group's one commit point.
- **Taking back a failed write.** Code that writes inside ``with lake.writing():`` has
  every part, marker and snapshot folder it placed removed again if it fails, unless a
  committed snapshot references it by then (another writer may have adopted it).
- **Garbage.** What a killed process leaves (temporary files, parts no snapshot names,
  incomplete groups) is invisible to readers; ``mlsys lake check`` lists it and
  ``mlsys lake gc`` removes it after a grace period (``maintenance.py``). Commits and
  removals take a lock on the lake (shared for commits, exclusive for removals), a commit
  checks its parts are still there, and a writer that reuses an existing file refreshes
  its time, so a collection never removes what a running writer is about to commit.
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from mlsys_core.crashpoints import crash_point

Layer = Literal["raw", "clean", "quarantine", "features", "stream", "predictions", "scores"]
LAYERS: tuple[Layer, ...] = (
    "raw", "clean", "quarantine", "features", "stream", "predictions", "scores",
)  # fmt: skip
# Layers that are append-only logs: a part is committed by its own rename and read by
# listing the folder, so no snapshot needs to name it (the prediction log).
APPEND_ONLY: frozenset[str] = frozenset({"predictions"})
MANIFEST = "_manifest.json"
DATA = "part-0.parquet"
PARTS = "_parts"
LOCK = "_lake.lock"
IDENTITY = "_lake_id"
TMP = ".tmp-"  # every temporary name in the lake starts with it (or is a dot-file)
SIDECAR = ".json"  # a file beside a part, named like it (a cleaning marker): kept with it
_SAFE = re.compile(r"^[A-Za-z0-9_.=-]+$")
_REFRESH_S = 60.0  # how often a long write refreshes the times of what it placed so far


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


class GroupMember(BaseModel):
    """One snapshot of a group committed together (see ``Lake.write_group``)."""

    model_config = ConfigDict(frozen=True)

    layer: Layer
    table: str
    snapshot_id: str
    parts: list[PartRef]
    manifest: dict[str, Any] = {}

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.table}/{self.snapshot_id}"


class LakeError(RuntimeError):
    """A snapshot that should exist does not, or is damaged."""


@dataclass
class _Writes:
    """What one ``Lake.writing()`` block placed, to take back if it fails."""

    root: Path
    placed: list[Path] = field(default_factory=list)
    refreshed: float = field(default_factory=time.monotonic)


_WRITES: contextvars.ContextVar[_Writes | None] = contextvars.ContextVar(
    "lake_writes", default=None
)


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def identity(self) -> str:
        """A random id made when the lake is first used: caches keyed on it never outlive
        the lake they describe (a wiped and rebuilt lake gets a new one)."""
        path = self.root / IDENTITY
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f"{TMP}id-{uuid.uuid4().hex}"
            tmp.write_text(uuid.uuid4().hex)
            try:
                crash_point("lake.identity")
                os.link(tmp, path)  # fails if another process made it first: theirs wins
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()

    def _dir(self, layer: Layer, table: str, snapshot_id: str) -> Path:
        return self.root / layer / table / snapshot_id

    # -- visibility ----------------------------------------------------------------------
    def find(self, layer: Layer, table: str, snapshot_id: str) -> SnapshotRef | None:
        """The snapshot, if it is committed (a group member: if its whole group is)."""
        folder = self._dir(layer, table, snapshot_id)
        meta = _read_manifest(folder)
        if meta is None or not self._group_complete(meta):
            return None
        return _ref(folder, meta)

    def _group_complete(self, meta: dict[str, Any]) -> bool:
        return all((self.root / key / MANIFEST).is_file() for key in meta.get("group", []))

    def is_visible(self, folder: Path) -> bool:
        meta = _read_manifest(folder)
        return meta is not None and self._group_complete(meta)

    # -- writing snapshots ---------------------------------------------------------------
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
            crash_point("lake.snapshot.data")
            return {"rows": arrow.num_rows, "schema": _schema_json(arrow.schema)}

        return self._commit(layer, table, snapshot_id, data, manifest)

    def write_snapshot(
        self,
        layer: Layer,
        table: str,
        snapshot_id: str,
        parts: list[PartRef],
        manifest: dict[str, Any] | None = None,
    ) -> SnapshotRef:
        """Record a snapshot made of existing part files; the parts are not copied.

        Refused (``LakeError``) when a part is missing or the parts' column types cannot be
        read as one table: a snapshot that no reader could read is never written.
        """
        member = GroupMember(
            layer=layer, table=table, snapshot_id=snapshot_id, parts=parts,
            manifest=manifest or {},
        )  # fmt: skip
        return self._commit_member(member, group=None)

    def write_group(self, members: list[GroupMember]) -> list[SnapshotRef]:
        """Commit snapshots that exist together or not at all.

        Members are renamed into place in order; none is visible until the last one is,
        so that rename is the commit point of the whole group. A member left from an
        interrupted attempt is reused.
        """
        keys = [m.key for m in members]
        return [self._commit_member(m, group=keys) for m in members]

    def _commit_member(self, member: GroupMember, group: list[str] | None) -> SnapshotRef:
        # Raw data is kept as read, so two files may disagree on a column's type (numbers,
        # and one bad cell in another file): such columns read as text. Every other layer
        # is typed, and a snapshot its readers could not read is refused.
        schema, as_text = _parts_schema(
            self.root, member.parts, member.key, text_on_conflict=member.layer == "raw"
        )

        def data(_: Path) -> dict[str, Any]:
            return {
                "rows": sum(p.rows for p in member.parts),
                "schema": _schema_json(schema),
                "parts": [p.model_dump() for p in member.parts],
                **({"read_as_text": as_text} if as_text else {}),
            }

        return self._commit(
            member.layer, member.table, member.snapshot_id, data, member.manifest,
            parts=member.parts, group=group,
        )  # fmt: skip

    def _commit(  # noqa: PLR0913
        self,
        layer: Layer,
        table: str,
        snapshot_id: str,
        write_data,  # noqa: ANN001
        manifest: dict[str, Any] | None,
        parts: list[PartRef] | None = None,
        group: list[str] | None = None,
    ) -> SnapshotRef:
        final = self._dir(layer, table, snapshot_id)
        if self.is_visible(final):
            return self._ref(final)  # committed already: content addressed, so the same
        if self.adopt([final / MANIFEST]):
            # A group member an interrupted attempt left: reuse it, its time refreshed so a
            # collection spares it until the group commits.
            return self._ref(final)
        tmp = final.parent / f"{TMP}{snapshot_id}-{uuid.uuid4().hex[:8]}"
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
            if group:
                meta["group"] = group
            (tmp / MANIFEST).write_text(json.dumps(meta, indent=2, default=str))
            _fsync(tmp / MANIFEST)
            crash_point("lake.snapshot.manifest")
            with self._locked(exclusive=False):
                if final.is_dir() and not (final / MANIFEST).is_file():
                    discard_folder(final)  # debris no reader can see: never a snapshot
                self._require(final, parts or [], group)
                try:
                    os.rename(tmp, final)
                except OSError:
                    if not (final / MANIFEST).is_file():  # not a lost race: a real error
                        raise
                else:
                    self._placed(final)
            crash_point("lake.snapshot.placed")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._ref(final)

    def _require(self, final: Path, parts: list[PartRef], group: list[str] | None) -> None:
        """Under the commit lock: every part, and every group member before this one, is
        still in place (a collection or a rollback may have removed what we found)."""
        key = str(final.relative_to(self.root))
        for part in parts:
            if not _touch(self.root / part.file):
                raise LakeError(f"part {part.file} of {key} is missing; rerun the write")
        earlier = group[: group.index(key)] if group else []
        for member in earlier:
            if not _touch(self.root / member / MANIFEST):
                raise LakeError(f"{key}: its group member {member} is missing; rerun the write")

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
        return self._part_ref(path, partition)

    def _part_ref(self, path: Path, partition: str) -> PartRef:
        rows = pq.ParquetFile(path).metadata.num_rows
        return PartRef(partition=partition, file=str(path.relative_to(self.root)), rows=rows)

    def adopt_part(self, layer: Layer, table: str, partition: str, part_id: str) -> PartRef | None:
        """An existing part a writer is about to reference, its time refreshed (so a
        collection running now spares it); None when there is none."""
        path = self.part_path(layer, table, partition, part_id)
        if not self.adopt([path]):
            return None
        try:
            return self._part_ref(path, partition)
        except FileNotFoundError:
            return None

    def adopt(self, paths: list[Path]) -> bool:
        """Refresh the times of files a writer is about to reuse, under the commit lock (so
        a collection either removed them already or will now see them young); False when
        any is gone."""
        if not all(p.exists() for p in paths):
            return False
        with self._locked(exclusive=False):
            return all(_touch(p) for p in paths)

    @contextmanager
    def part_writer(
        self, layer: Layer, table: str, partition: str, part_id: str
    ) -> Iterator[PartWriter]:
        """Stream batches into one part; it appears (renamed into place) only on success."""
        final = self.part_path(layer, table, partition, part_id)
        # Staged in the lake's root and moved in on success: a failed write leaves no file
        # and no folder behind.
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP}part-{uuid.uuid4().hex}.parquet"
        writer = PartWriter(tmp)
        try:
            yield writer
            writer.finish()
            _fsync(tmp)
            _replace_into(tmp, final)
            self._placed(final)
            crash_point("lake.part.placed")
        finally:
            writer.close()
            tmp.unlink(missing_ok=True)
        writer.ref = PartRef(
            partition=partition, file=str(final.relative_to(self.root)), rows=writer.rows
        )

    def write_part(
        self, layer: Layer, table: str, partition: str, part_id: str, frame: pd.DataFrame
    ) -> PartRef:
        """Write one part, or reuse the part of that name if it exists (content named)."""
        if existing := self.adopt_part(layer, table, partition, part_id):
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

    # -- all or nothing ------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Take back what this block places if it fails.

        Parts, markers (``placed``) and uncommitted snapshot folders placed inside the
        block are removed on an exception, except what a committed snapshot references by
        then. A committed snapshot is never removed: its rename was the commit. Blocks
        nest; an inner block that succeeds hands what it placed to the outer one.
        """
        outer = _WRITES.get()
        writes = _Writes(self.root.absolute())
        token = _WRITES.set(writes)
        try:
            yield
        except BaseException:
            self.take_back(writes.placed)
            raise
        finally:
            _WRITES.reset(token)
        if outer is not None:
            outer.placed.extend(writes.placed)

    def placed(self, path: Path) -> None:
        """Record a file written beside the lake's own writes (a marker), for rollback."""
        self._placed(Path(path))

    def _placed(self, path: Path) -> None:
        writes = _WRITES.get()
        if writes is None or writes.root != self.root.absolute():
            return  # not inside a writing() block of this lake
        writes.placed.append(path)
        now = time.monotonic()
        if now - writes.refreshed > _REFRESH_S:
            # A long write keeps what it placed young, so a collection spares it.
            writes.refreshed = now
            for earlier in writes.placed:
                _touch(earlier / MANIFEST if earlier.is_dir() else earlier)

    def take_back(self, placed: list[Path]) -> None:
        """Remove what a failed write placed (see ``writing``)."""
        if not placed:
            return
        referenced: dict[Path, set[str]] = {}

        def in_use(file: Path) -> bool:
            layer, table = file.relative_to(self.root).parts[:2]
            table_dir = self.root / layer / table
            if layer in APPEND_ONLY:
                return True  # a log part is committed by its own rename
            if table_dir not in referenced:
                referenced[table_dir] = referenced_files(self, table_dir)
            return str(file.relative_to(self.root)) in referenced[table_dir]

        with self._locked(exclusive=True):
            for path in reversed(placed):
                if path.is_dir():
                    if not self.is_visible(path):
                        discard_folder(path)
                elif path.suffix == SIDECAR:
                    if not in_use(path.with_suffix(".parquet")):
                        path.unlink(missing_ok=True)
                elif not in_use(path):
                    path.unlink(missing_ok=True)

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        """The lake's lock: shared while committing, exclusive while removing files."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------
    def read(self, ref: SnapshotRef, columns: list[str] | None = None) -> pd.DataFrame:
        as_text = self.manifest(ref).get("read_as_text", [])
        tables = [_as_text(self._read_part(part, columns), as_text) for part in self.parts(ref)]
        if not tables:
            return pd.DataFrame(columns=columns or [])
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    def head(self, ref: SnapshotRef, rows: int = 1) -> pd.DataFrame:
        """The first ``rows`` rows of a snapshot, read as ``read`` reads them, without
        reading the snapshot whole."""
        as_text = self.manifest(ref).get("read_as_text", [])
        for part in self.parts(ref):
            with pq.ParquetFile(self._part_file(part)) as handle:
                for batch in handle.iter_batches(batch_size=rows):
                    return _as_text(pa.Table.from_batches([batch]), as_text).to_pandas()
        return pd.DataFrame()

    def read_part(self, part: PartRef, columns: list[str] | None = None) -> pd.DataFrame:
        return self._read_part(part, columns).to_pandas()

    def iter_batches(
        self, parts: list[PartRef], batch_size: int, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` rows: memory stays flat with table size."""
        for part in parts:
            handle = pq.ParquetFile(self._part_file(part))
            _check_columns(handle.schema_arrow, columns, part)
            yield from handle.iter_batches(batch_size=batch_size, columns=columns)

    def part_columns(self, parts: list[PartRef]) -> list[str]:
        """The columns of ``parts`` together, in the order they first appear."""
        names: dict[str, None] = {}
        for part in parts:
            names |= dict.fromkeys(pq.read_schema(self._part_file(part)).names)
        return list(names)

    def _part_file(self, part: PartRef) -> Path:
        path = self.root / part.file
        if not path.is_file():
            raise LakeError(f"part {part.file} is missing from {self.root}")
        return path

    def _read_part(self, part: PartRef, columns: list[str] | None) -> pa.Table:
        path = self._part_file(part)
        if columns is not None:
            _check_columns(pq.read_schema(path), columns, part)
        return pq.read_table(path, columns=columns)

    def manifest(self, ref: SnapshotRef) -> dict[str, Any]:
        path = Path(ref.path) / MANIFEST
        if not path.is_file():
            raise LakeError(f"snapshot {ref.layer}/{ref.table}/{ref.snapshot_id} is missing")
        return json.loads(path.read_text())

    def snapshots(self, layer: Layer, table: str) -> list[SnapshotRef]:
        """Every committed snapshot of a table, oldest first."""
        folder = self.root / layer / table
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            if path.name.startswith((".", "_")):
                continue
            meta = _read_manifest(path)
            if meta is not None and self._group_complete(meta):
                found.append((meta["created_at"], _ref(path, meta)))
        return [ref for _, ref in sorted(found, key=lambda pair: pair[0])]

    def latest(self, layer: Layer, table: str) -> SnapshotRef | None:
        """The most recently written committed snapshot of a table, or None."""
        found = self.snapshots(layer, table)
        return found[-1] if found else None

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
        meta = _read_manifest(folder)
        if meta is None:
            raise LakeError(f"snapshot {folder} has no manifest")
        return _ref(folder, meta)


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
        # Converted on the calling thread: parts are written from several threads already,
        # and pyarrow would start and join a pool of its own for every batch.
        table = (
            frame
            if isinstance(frame, pa.Table)
            else pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
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
        crash_point("lake.part.write")  # the part is half written

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
        crash_point("lake.part.retype")

    def finish(self) -> None:
        """Close the file; a part that got no batch at all is still a valid, empty file."""
        if self._writer is None and self._schema is None:
            self.write(pa.table({}))
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def referenced_files(lake: Lake, table_dir: Path) -> set[str]:
    """Files (relative to the lake root) that committed snapshots of a table name."""
    names: set[str] = set()
    if not table_dir.is_dir():
        return names
    for folder in table_dir.iterdir():
        if folder.name.startswith((".", "_")):
            continue
        meta = _read_manifest(folder)
        if meta is not None and lake._group_complete(meta):
            names |= manifest_files(meta)
    return names


def manifest_files(meta: dict[str, Any]) -> set[str]:
    """Every part file a manifest names, wherever it names it (``parts`` and others,
    such as a stream job's ``state`` and ``late_parts``)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str) and f"/{PARTS}/" in node["file"]:
                found.add(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in meta.items() if k != "spec"})
    return found


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None


def _ref(folder: Path, meta: dict[str, Any]) -> SnapshotRef:
    return SnapshotRef(
        layer=meta["layer"],
        table=meta["table"],
        snapshot_id=meta["snapshot_id"],
        rows=meta["rows"],
        path=str(folder),
    )


def _schema_json(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def _parts_schema(
    root: Path, parts: list[PartRef], where: str, text_on_conflict: bool = False
) -> tuple[pa.Schema, list[str]]:
    """The one schema the parts read as, and the columns read as text because the parts
    disagree on their type (``text_on_conflict``; otherwise such parts are refused)."""
    schemas = []
    for part in parts:
        try:
            schemas.append(pq.read_schema(root / part.file).remove_metadata())
        except FileNotFoundError:
            raise LakeError(f"part {part.file} of {where} is missing") from None
    if not schemas:
        return pa.schema([]), []
    try:
        return pa.unify_schemas(schemas, promote_options="permissive"), []
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        if not text_on_conflict:
            raise LakeError(
                f"{where}: its parts disagree on column types ({err}); a table that cannot "
                "be read is not written"
            ) from None
    conflicts = _conflicting_columns(schemas)
    texted = [_with_text(s, conflicts) for s in schemas]
    return pa.unify_schemas(texted, promote_options="permissive"), conflicts


def _conflicting_columns(schemas: list[pa.Schema]) -> list[str]:
    names = sorted({n for s in schemas for n in s.names})
    out = []
    for name in names:
        fields = [pa.schema([s.field(name)]) for s in schemas if name in s.names]
        try:
            pa.unify_schemas(fields, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            out.append(name)
    return out


def _with_text(schema: pa.Schema, columns: list[str]) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if f.name in columns else f for f in schema])


def _as_text(table: pa.Table, columns: list[str]) -> pa.Table:
    for name in columns:
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).cast(pa.string()))
    return table


def _check_columns(schema: pa.Schema, columns: list[str] | None, part: PartRef) -> None:
    if columns is not None and (missing := [c for c in columns if c not in schema.names]):
        raise LakeError(f"{part.file} has no columns {missing}; it has {schema.names}")


def _replace_into(tmp: Path, final: Path) -> None:
    """Rename into a folder that a concurrent collection may have just removed (empty)."""
    crash_point("lake.part.rename")  # the part is whole but not in place
    for attempt in range(3):
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, final)
            return
        except FileNotFoundError:
            if attempt == 2 or not tmp.exists():
                raise


def discard_folder(folder: Path) -> None:
    """Remove a folder so that no half-removed snapshot is ever seen: it is renamed to a
    temporary name first (one atomic step), then deleted."""
    trash = folder.parent / f"{TMP}trash-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _touch(path: Path) -> bool:
    """Refresh a file's time; False when it is gone."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
