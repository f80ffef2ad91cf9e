"""Checking the lake and collecting its garbage, safely while writers run.

What a reader never sees but a crash can leave: temporary files and folders, parts that no
committed snapshot names, cleaning markers of partitions whose table never committed,
members of an incomplete snapshot group, folders without a manifest. Damage is different:
a committed manifest whose parts are missing, or a manifest that is not JSON; collection
never touches those, it reports them.

A file younger than the grace period may belong to a writer that is running (a part
written, its snapshot not yet committed), so it is reported as pending and left alone.
Removal takes the lake's exclusive lock and looks again under it: commits hold the shared
lock and check their parts are there, and writers that reuse a file refresh its time under
that lock, so a collection never removes what a running writer is about to commit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.data.durations import duration_seconds
from mlsys_core.data.lake import (
    APPEND_ONLY,
    DATA,
    LAYERS,
    MANIFEST,
    PARTS,
    SIDECAR,
    Lake,
    discard_folder,
    manifest_files,
    referenced_files,
)

DEFAULT_GRACE = timedelta(hours=24)
Kind = Literal[
    "temporary",  # a temporary file or folder a writer did not finish or clean up
    "orphan_part",  # a part file no committed snapshot names
    "orphan_marker",  # a cleaning marker whose parts no committed snapshot names
    "incomplete_group",  # a snapshot whose group (clean + quarantine) is not all there
    "no_manifest",  # a snapshot folder without a manifest
    "missing_part",  # damage: a committed snapshot names a part that is not there
    "bad_manifest",  # damage: a manifest that cannot be read
    "unpaired",  # damage: a committed clean or quarantine snapshot without its twin
]
DAMAGE: frozenset[str] = frozenset({"missing_part", "bad_manifest", "unpaired"})


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Kind
    path: str  # relative to the lake root
    detail: str
    age_s: float


class LakeReport(BaseModel):
    """What ``check_lake`` found; ``pending`` are findings younger than the grace period."""

    root: str
    grace_s: float
    snapshots: int
    parts: int
    findings: list[Finding]

    @property
    def damage(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in DAMAGE]

    @property
    def garbage(self) -> list[Finding]:
        """Leftovers old enough to collect."""
        return [f for f in self.findings if f.kind not in DAMAGE and f.age_s >= self.grace_s]

    @property
    def pending(self) -> list[Finding]:
        """Leftovers a running writer may still commit or clean up."""
        return [f for f in self.findings if f.kind not in DAMAGE and f.age_s < self.grace_s]

    @property
    def ok(self) -> bool:
        return not self.damage and not self.garbage


class GcReport(BaseModel):
    removed: list[Finding]
    kept: int  # findings left alone: too young, or taken back into use meanwhile
    bytes_freed: int
    dry_run: bool


def check_lake(lake: Lake, grace: timedelta = DEFAULT_GRACE) -> LakeReport:
    """Walk the lake and list every leftover and every damaged snapshot."""
    now = time.time()
    findings: list[Finding] = []
    snapshots = parts = 0

    def add(kind: Kind, path: Path, detail: str) -> None:
        rel = str(path.relative_to(lake.root))
        findings.append(Finding(kind=kind, path=rel, detail=detail, age_s=now - _mtime(path)))

    if not lake.root.is_dir():
        return LakeReport(root=str(lake.root), grace_s=grace.total_seconds(), snapshots=0,
                          parts=0, findings=[])  # fmt: skip
    for entry in sorted(lake.root.iterdir()):
        if entry.name.startswith("."):
            add("temporary", entry, "temporary file of an unfinished write")
    for table_dir in _table_dirs(lake.root):
        table = _scan_table(lake, table_dir, add)
        snapshots += table.snapshots
        parts += table.parts
    return LakeReport(
        root=str(lake.root), grace_s=grace.total_seconds(), snapshots=snapshots, parts=parts,
        findings=findings,
    )  # fmt: skip


class _TableScan(BaseModel):
    snapshots: int = 0
    parts: int = 0


def _scan_table(lake: Lake, table_dir: Path, add) -> _TableScan:  # noqa: ANN001, C901, PLR0912
    layer = table_dir.parent.name
    scan = _TableScan()
    visible: dict[str, dict] = {}
    referenced: set[str] = set()
    for entry in sorted(table_dir.iterdir()):
        if entry.name == PARTS:
            continue
        if entry.name.startswith("."):
            add("temporary", entry, "temporary folder of an unfinished snapshot write")
            continue
        if not entry.is_dir():
            continue
        try:
            meta = json.loads((entry / MANIFEST).read_text())
        except FileNotFoundError:
            add("no_manifest", entry, "a snapshot folder without a manifest: no reader sees it")
            continue
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            add("bad_manifest", entry / MANIFEST, f"not readable: {err}")
            continue
        if not lake._group_complete(meta):
            missing = [k for k in meta["group"] if not (lake.root / k / MANIFEST).is_file()]
            add("incomplete_group", entry, f"uncommitted: its group lacks {missing}")
            continue
        visible[entry.name] = meta
        scan.snapshots += 1
        named = manifest_files(meta)
        if "parts" not in meta:
            named.add(str((entry / DATA).relative_to(lake.root)))
        for file in sorted(named):
            if not (lake.root / file).is_file():
                add("missing_part", entry, f"names {file}, which is missing")
        referenced |= named
    _legacy_pairs(lake, layer, table_dir, visible, add)
    parts_dir = table_dir / PARTS
    for path in sorted(_files(parts_dir)):
        rel = str(path.relative_to(lake.root))
        if path.name.startswith("."):
            add("temporary", path, "temporary file of an unfinished write")
        elif path.suffix == SIDECAR:
            sibling = str(path.with_suffix(".parquet").relative_to(lake.root))
            if sibling not in referenced:
                add("orphan_marker", path, "a cleaned partition no committed snapshot uses")
        else:
            scan.parts += 1
            if layer not in APPEND_ONLY and rel not in referenced:
                add("orphan_part", path, "no committed snapshot names it")
    return scan


def _legacy_pairs(lake: Lake, layer: str, table_dir: Path, visible: dict, add) -> None:  # noqa: ANN001
    """Clean and quarantine snapshots committed one by one (before they were committed
    together) are twins by id; one without the other is reported, never removed."""
    twin = {"clean": "quarantine", "quarantine": "clean"}.get(layer)
    if twin is None:
        return
    for snapshot_id, meta in visible.items():
        if "group" not in meta and lake.find(twin, table_dir.name, snapshot_id) is None:  # type: ignore[arg-type]
            add("unpaired", table_dir / snapshot_id, f"committed, but its {twin} twin is missing")


def collect_garbage(
    lake: Lake, grace: timedelta = DEFAULT_GRACE, dry_run: bool = False
) -> GcReport:
    """Remove what no committed snapshot references and is older than ``grace``.

    Safe while flows run: everything is looked at again under the lake's exclusive lock
    just before it is removed, and what a writer took back into use is kept.
    """
    report = check_lake(lake, grace)
    candidates = report.garbage
    removed: list[Finding] = []
    freed = 0
    if dry_run or not candidates:
        return GcReport(removed=[] if not dry_run else candidates,
                        kept=len(report.pending), bytes_freed=0, dry_run=dry_run)  # fmt: skip
    order = {"incomplete_group": 0, "no_manifest": 1, "orphan_marker": 2, "orphan_part": 3}
    with lake._locked(exclusive=True):
        references: dict[Path, set[str]] = {}
        for finding in sorted(candidates, key=lambda f: order.get(f.kind, 4)):
            path = lake.root / finding.path
            if not path.exists() or time.time() - _mtime(path) < report.grace_s:
                continue  # gone, or taken back into use since the check
            if not _still_garbage(lake, finding, path, references):
                continue
            size = _size(path)
            if path.is_dir() and finding.kind in ("incomplete_group", "no_manifest"):
                discard_folder(path)
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(finding)
            freed += size
        _remove_empty_folders(lake.root)
    return GcReport(removed=removed, kept=len(candidates) - len(removed) + len(report.pending),
                    bytes_freed=freed, dry_run=False)  # fmt: skip


def _still_garbage(
    lake: Lake, finding: Finding, path: Path, references: dict[Path, set[str]]
) -> bool:
    """Look again under the lock: a snapshot may have committed since the check."""
    if finding.kind == "incomplete_group":
        return not lake.is_visible(path)
    if finding.kind == "no_manifest":
        return not (path / MANIFEST).exists()
    if finding.kind in ("orphan_part", "orphan_marker"):
        rel = path.relative_to(lake.root)
        table_dir = lake.root / rel.parts[0] / rel.parts[1]
        if table_dir not in references:
            references[table_dir] = referenced_files(lake, table_dir)
        target = path.with_suffix(".parquet") if finding.kind == "orphan_marker" else path
        return str(target.relative_to(lake.root)) not in references[table_dir]
    return True  # temporary


def _table_dirs(root: Path) -> Iterator[Path]:
    for layer in LAYERS:
        folder = root / layer
        if folder.is_dir():
            for table_dir in sorted(folder.iterdir()):
                if table_dir.is_dir():
                    yield table_dir


def _files(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            yield Path(dirpath) / name


def _remove_empty_folders(root: Path) -> None:
    for layer in LAYERS:
        for parts_dir in (root / layer).glob(f"*/{PARTS}"):
            for dirpath, dirnames, filenames in os.walk(parts_dir, topdown=False):
                if not dirnames and not filenames and Path(dirpath) != parts_dir:
                    try:
                        os.rmdir(dirpath)
                    except OSError:  # a writer just put a file in it
                        pass


def _mtime(path: Path) -> float:
    """The newest modification time of a file, or of a folder and what it holds."""
    try:
        newest = path.stat().st_mtime
    except FileNotFoundError:
        return time.time()
    if path.is_dir():
        for file in _files(path):
            try:
                newest = max(newest, file.stat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in _files(path) if f.exists())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def parse_duration(text: str) -> timedelta:
    """A grace period as a number of seconds or with its units (``90s``, ``15m``, ``1h 30m``,
    ``2 days``), read as a duration column's ``units`` are."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float(duration_seconds(pd.Series([text], dtype=object), "units").iloc[0])
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r} (use 90s, 15m, 2h, 1d)")
    if seconds < 0:
        raise ValueError(f"a grace period cannot be negative: {text!r}")
    return timedelta(seconds=seconds)
