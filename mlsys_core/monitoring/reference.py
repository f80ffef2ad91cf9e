"""The reference side of every drift check, computed once per model version and cached.

A folder per cache key under ``<state>/monitoring/reference/``: ``stats.json`` (counts,
distinct values, std per column) and one Parquet file of sorted values per numerical
column. The folder is written under a temporary name and renamed into place, so a reader
sees a whole cache entry or none; nothing in it is a pickle. A writer killed mid-write leaves
its temporary folder (a name starting with a dot, which no reader opens);
:func:`remove_stale_temporary` removes those older than a grace period, and every save does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlsys_core.crashpoints import crash_point
from mlsys_core.monitoring.stattests import ReferenceStats

CACHE_VERSION = "1"  # bump when the statistics change, so old entries are not reused
STATS = "stats.json"
TEMPORARY_GRACE = timedelta(hours=1)  # no save takes this long; an older temporary is dead


def reference_key(**parts: object) -> str:
    """A content key for the reference: model version, feature set, columns, sampling."""
    text = json.dumps({"cache": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def save_reference(stats: ReferenceStats, folder: Path) -> None:
    """Write ``stats`` as ``folder``, atomically; an existing entry is kept (same key, same
    content)."""
    folder = Path(folder)
    if (folder / STATS).is_file():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary(folder.parent)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        files = {}
        for i, (name, values) in enumerate(sorted(stats.sorted_values.items())):
            file = f"values-{i}.parquet"
            pq.write_table(pa.table({"value": values}), tmp / file)
            files[name] = file
            crash_point("reference.values")  # a values file written, the entry is not
        payload = {"stats": stats.model_dump(mode="json"), "values": files}
        (tmp / STATS).write_text(json.dumps(payload))
        crash_point("reference.rename")  # whole, under its temporary name
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / STATS).is_file():  # not a concurrent writer: a real failure
                raise
        crash_point("reference.placed")  # in place; the caller has not heard yet
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporary(root: Path, grace: timedelta = TEMPORARY_GRACE) -> list[Path]:
    """Remove the temporary folders of saves that died (older than ``grace``)."""
    root, now = Path(root), time.time()
    if not root.is_dir():
        return []
    stale = [
        p
        for p in root.glob(".*.tmp-*")
        if p.is_dir() and now - p.stat().st_mtime >= grace.total_seconds()
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def load_reference(folder: Path) -> ReferenceStats | None:
    """The cached statistics, or None when there is no (complete) entry."""
    path = Path(folder) / STATS
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    stats = ReferenceStats.model_validate(payload["stats"])
    stats.sorted_values = {
        name: pq.read_table(Path(folder) / file)["value"].to_numpy().astype(np.float64)
        for name, file in payload["values"].items()
    }
    return stats


def cached_reference(
    folder: Path, compute: Callable[[], ReferenceStats]
) -> tuple[ReferenceStats, bool]:
    """The cached statistics (and True), or ``compute()`` saved to ``folder`` (and False)."""
    if (stats := load_reference(folder)) is not None:
        return stats, True
    stats = compute()
    save_reference(stats, folder)
    return stats, False
