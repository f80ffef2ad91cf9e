"""The online store: each entity's feature values as of the last materialization, in SQLite.

``materialize`` computes the values with the offline store at one time, the watermark, so
an online value is by construction the offline value at that time. A full run rewrites a
view; an incremental run reads only the source rows that can still matter (those known
after ``watermark - horizon``), recomputes only the entities they touch, and upserts them.
Entities it does not touch had nothing in their windows at the old watermark and have
nothing at the new one, so their stored values stay right.

Each view is written in one SQLite transaction: a reader sees the old state or the new one.
Reads go through a small LRU cache whose entries expire after ``cache_ttl_s`` seconds and
which ``materialize`` clears; another process's materialize is seen once entries expire.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.features.definitions import (
    DefinitionError,
    LatestView,
    WindowView,
    check_views,
    definitions_hash,
)
from mlsys_core.features.offline import _NAT, OfflineStore, availability_ns, to_ns

View = WindowView | LatestView
_AS_OF = "__as_of__"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS views (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    join_keys TEXT NOT NULL,
    defaults TEXT NOT NULL,
    watermark_ns INTEGER NOT NULL,
    materialized_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    view TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (view, entity_key)
) WITHOUT ROWID;
"""


class OnlineStoreError(ValueError):
    """A materialization that would leave the store inconsistent, or a bad read."""


class ViewMaterialization(BaseModel):
    model_config = ConfigDict(frozen=True)

    mode: Literal["full", "incremental"]
    source_rows_read: int
    entities_written: int


class MaterializeResult(BaseModel):
    """What one ``materialize`` call did, per view."""

    model_config = ConfigDict(frozen=True)

    as_of: datetime
    views: dict[str, ViewMaterialization]


def entity_key(values: list[Any]) -> str:
    """The stored key of an entity: its join-key values as text, so 7 and "7" are one key."""
    return json.dumps([None if _is_null(v) else str(v) for v in values])


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars unwrapped, NaN as null, times as ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if _is_null(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    return value


def _defaults(view: View) -> dict[str, Any]:
    """Values of an entity with nothing known: what the offline store gives it too."""
    if isinstance(view, WindowView):
        return {a.name: (0 if a.function == "count" else None) for a in view.aggregations}
    return dict.fromkeys(view.features)


class _TTLCache:
    """Least-recently-used entries that also expire after ``ttl_s`` seconds."""

    def __init__(self, maxsize: int, ttl_s: float) -> None:
        self.maxsize, self.ttl_s = maxsize, ttl_s
        self._data: OrderedDict[tuple[str, str], tuple[float, dict[str, Any] | None]] = (
            OrderedDict()
        )
        self.hits = self.misses = 0

    def get(self, key: tuple[str, str]) -> tuple[bool, dict[str, Any] | None]:
        entry = self._data.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._data.pop(key, None)
            self.misses += 1
            return False, None
        self._data.move_to_end(key)
        self.hits += 1
        return True, entry[1]

    def put(self, key: tuple[str, str], value: dict[str, Any] | None) -> None:
        self._data[key] = (time.monotonic() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class OnlineStore:
    """Latest feature values per entity in one SQLite file, with a read-through cache."""

    def __init__(self, path: Path, cache_size: int = 10_000, cache_ttl_s: float = 30.0) -> None:
        self.path = Path(path)
        self.cache = _TTLCache(cache_size, cache_ttl_s)
        self._meta: dict[str, dict[str, Any]] | None = None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            yield conn
        finally:
            conn.close()

    # -- writes ------------------------------------------------------------------------------
    def materialize(
        self,
        views: list[View],
        tables: dict[str, pd.DataFrame],
        as_of: datetime,
        incremental: bool = False,
    ) -> MaterializeResult:
        """Store every entity's values as known strictly before ``as_of``.

        ``incremental`` reuses what an earlier run stored for the same definitions and reads
        only recent source rows; a view never materialized before gets a full run.
        """
        check_views(views)
        if as_of.tzinfo is None:
            raise OnlineStoreError("as_of must be timezone-aware")
        as_of_ns = int(to_ns(pd.Series([as_of]))[0])
        done = {}
        with self._connect() as conn:
            for view in views:
                done[view.name] = self._materialize_view(
                    conn, view, tables[view.source], as_of_ns, incremental
                )
        self.cache.clear()
        self._meta = None
        return MaterializeResult(as_of=as_of.astimezone(UTC), views=done)

    def _materialize_view(
        self,
        conn: sqlite3.Connection,
        view: View,
        source: pd.DataFrame,
        as_of_ns: int,
        incremental: bool,
    ) -> ViewMaterialization:
        definition = definitions_hash([view])
        stored = conn.execute(
            "SELECT definition, watermark_ns FROM views WHERE name = ?", (view.name,)
        ).fetchone()
        mode: Literal["full", "incremental"] = "full"
        avail = availability_ns(view, source)
        known = (avail != _NAT) & (avail < as_of_ns)
        if incremental and stored is not None:
            if stored[0] != definition:
                raise OnlineStoreError(
                    f"view {view.name!r} changed since it was materialized; run a full one"
                )
            if stored[1] > as_of_ns:
                raise OnlineStoreError(
                    f"view {view.name!r} is materialized up to a later time; run a full one"
                )
            since = stored[1] - pd.Timedelta(view.horizon).value
            known &= avail >= since
            mode = "incremental"
        # Rows known only at or after as_of cannot change a value as of then: never read.
        source = source[known]
        keys = view.entity.join_keys
        entities = source[keys].dropna().drop_duplicates()
        entities[_AS_OF] = pd.Timestamp(as_of_ns, unit="ns", tz="UTC")
        values = OfflineStore([view], {view.source: source}).get_historical_features(
            entities, view.features, _AS_OF
        )
        records = [
            (
                view.name,
                entity_key(list(row[: len(keys)])),
                json.dumps(
                    {f: _plain(v) for f, v in zip(view.features, row[len(keys) :], strict=True)}
                ),
            )
            for row in values[[*keys, *view.features]].itertuples(index=False, name=None)
        ]
        conn.execute("BEGIN IMMEDIATE")
        try:
            if mode == "full":
                conn.execute("DELETE FROM rows WHERE view = ?", (view.name,))
            conn.executemany(
                "INSERT INTO rows (view, entity_key, payload) VALUES (?, ?, ?) "
                "ON CONFLICT (view, entity_key) DO UPDATE SET payload = excluded.payload",
                records,
            )
            conn.execute(
                "INSERT OR REPLACE INTO views VALUES (?, ?, ?, ?, ?, ?)",
                (
                    view.name,
                    definition,
                    json.dumps(keys),
                    json.dumps(_defaults(view)),
                    as_of_ns,
                    datetime.now(UTC).isoformat(),
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ViewMaterialization(
            mode=mode, source_rows_read=len(source), entities_written=len(records)
        )

    # -- reads -------------------------------------------------------------------------------
    def _views(self) -> dict[str, dict[str, Any]]:
        if self._meta is None:
            with self._connect() as conn:
                rows = conn.execute(
                    "SELECT name, join_keys, defaults, watermark_ns FROM views"
                ).fetchall()
            self._meta = {
                name: {
                    "join_keys": json.loads(keys),
                    "defaults": json.loads(defaults),
                    "watermark": pd.Timestamp(watermark, unit="ns", tz="UTC"),
                }
                for name, keys, defaults, watermark in rows
            }
        return self._meta

    def watermark(self, view: str) -> pd.Timestamp | None:
        """The time a view's stored values are as of, or None if never materialized."""
        meta = self._views().get(view)
        return meta["watermark"] if meta else None

    def feature_names(self) -> list[str]:
        """Every materialized feature, view by view."""
        return [f for meta in self._views().values() for f in meta["defaults"]]

    def get_features(self, entity_id: dict[str, Any], feature_names: list[str]) -> dict[str, Any]:
        """One entity's feature vector, as of each view's watermark; an unknown entity gets
        what the offline store gives it (count 0, other values null)."""
        meta = self._views()
        owners = {f: name for name, m in meta.items() for f in m["defaults"]}
        if unknown := [f for f in feature_names if f not in owners]:
            raise DefinitionError(f"no materialized view holds {unknown}; run materialize")
        by_view: dict[str, list[str]] = {}
        for f in dict.fromkeys(feature_names):
            by_view.setdefault(owners[f], []).append(f)
        out: dict[str, Any] = {}
        for view, names in by_view.items():
            keys = meta[view]["join_keys"]
            if missing := [k for k in keys if k not in entity_id]:
                raise OnlineStoreError(f"entity id lacks {missing} for view {view!r}")
            key = entity_key([entity_id[k] for k in keys])
            hit, payload = self.cache.get((view, key))
            if not hit:
                payload = self._read(view, key)
                self.cache.put((view, key), payload)
            values = payload if payload is not None else meta[view]["defaults"]
            out |= {n: values[n] for n in names}
        return {f: out[f] for f in feature_names}

    def _read(self, view: str, key: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT payload FROM rows WHERE view = ? AND entity_key = ?", (view, key)
            ).fetchone()
        return json.loads(row[0]) if row else None


def online_store_path(state_root: Path) -> Path:
    """Where the embedded online store lives inside the state folder."""
    return Path(state_root) / "online" / "features.db"


def newest_known(views: list[View], tables: dict[str, pd.DataFrame]) -> datetime:
    """Just after the last time any source row became known: "now" for historical data."""
    newest = max(int(availability_ns(v, tables[v.source]).max(initial=_NAT)) for v in views)
    if newest == _NAT:
        raise OnlineStoreError("no source row is ever known; nothing to materialize")
    return (pd.Timestamp(newest, unit="ns", tz="UTC") + pd.Timedelta(seconds=1)).to_pydatetime()
