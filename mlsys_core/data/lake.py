"""The lake: immutable Parquet snapshots, each a folder named by a content hash.

A snapshot is written to a temporary folder and renamed into place, so a reader sees a
whole snapshot or none, and writing the same content twice is a no-op.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

Layer = Literal["raw", "clean", "quarantine", "features"]
MANIFEST = "_manifest.json"
DATA = "part-0.parquet"


class SnapshotRef(BaseModel):
    """A small, serialisable pointer to one snapshot; stages pass these, not frames."""

    model_config = ConfigDict(frozen=True)

    layer: Layer
    table: str
    snapshot_id: str
    rows: int
    path: str


class LakeError(RuntimeError):
    """A snapshot that should exist does not, or is damaged."""


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

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
        if existing := self.find(layer, table, snapshot_id):
            return existing
        final = self._dir(layer, table, snapshot_id)
        tmp = final.parent / f".tmp-{snapshot_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(arrow, tmp / DATA)
            meta = {
                "layer": layer,
                "table": table,
                "snapshot_id": snapshot_id,
                "rows": arrow.num_rows,
                "schema": [{"name": f.name, "type": str(f.type)} for f in arrow.schema],
                "created_at": datetime.now(UTC).isoformat(),
                **(manifest or {}),
            }
            (tmp / MANIFEST).write_text(json.dumps(meta, indent=2, default=str))
            for path in (tmp / DATA, tmp / MANIFEST):
                _fsync(path)
            try:
                os.rename(tmp, final)
            except OSError:
                if self.find(layer, table, snapshot_id) is None:  # not a lost race: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._ref(final)

    def read(self, ref: SnapshotRef, columns: list[str] | None = None) -> pd.DataFrame:
        path = Path(ref.path) / DATA
        if not path.is_file():
            raise LakeError(f"snapshot {ref.layer}/{ref.table}/{ref.snapshot_id} is missing")
        return pq.read_table(path, columns=columns).to_pandas()

    def manifest(self, ref: SnapshotRef) -> dict[str, Any]:
        return json.loads((Path(ref.path) / MANIFEST).read_text())

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

    def _ref(self, folder: Path) -> SnapshotRef:
        meta = json.loads((folder / MANIFEST).read_text())
        return SnapshotRef(
            layer=meta["layer"],
            table=meta["table"],
            snapshot_id=meta["snapshot_id"],
            rows=meta["rows"],
            path=str(folder),
        )


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
