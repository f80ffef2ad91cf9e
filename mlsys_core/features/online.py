"""The online store: what serving reads by entity key, as of a known time.

Three parts, so that another backend (Redis) or another writer (a stream job) plugs in
without reshaping serving:

- **one key encoding** (:func:`encode_key`): an entity's join-key values as one text, from
  the contract's type of each key column. ``7``, ``7.0`` (an integer column the contract
  holds as float64) and ``np.int64(7)`` are one key; so are a naive and a UTC time. The
  writer and every reader use this function and no other;
- **the storage interface** (:class:`OnlineStoreBase`): per stored view a :class:`ViewState`
  (what it holds, its key columns and their types, the time its values are as of, its row
  count), per-view writes of rows each carrying the time it is as of, and batch reads by
  key. :class:`SQLiteOnlineStore` is the embedded implementation;
- **what is stored**: :func:`materialize_view` computes a feature view's values with the
  offline store at one time, the watermark, so an online value is by construction the
  offline value at that time; :func:`materialize_lookup` stores a lookup's right rows by
  key (served through the same ``lookup_join`` as training); :func:`materialize_as_of`
  stores, per key, the newest right row of an as-of join known at the watermark (served
  through the same ``point_in_time_join``).

A full run rewrites a view; an incremental run reads only the source rows that can still
matter (those known after ``watermark - horizon``), recomputes only the entities they
touch, and upserts them. Entities it does not touch had nothing in their windows at the
old watermark and have nothing at the new one, so their stored values stay right.

Each view is written in one transaction: a reader sees the old state or the new one.
Reads go through a small LRU cache whose entries expire after ``cache_ttl_s`` seconds and
which a write in this process clears; another process's write is seen once entries expire.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.crashpoints import crash_point
from mlsys_core.features.offline import NAT, OfflineStore, availability_ns, to_ns
from mlsys_core.spec import AsOfJoin, DatasetSpec, LookupJoin
from mlsys_core.spec.definitions import (
    DefinitionError,
    LatestView,
    WindowView,
    check_views,
    definitions_hash,
)

View = WindowView | LatestView
KeyKind = Literal["number", "text", "time", "auto"]
StateKind = Literal["window", "latest", "lookup", "as_of"]
_AS_OF = "__as_of__"
ONLINE_STORES = "mlsys.online_stores"  # entry-point group: scheme -> store class
_READ_CHUNK = 500  # keys per SELECT ... IN (...)


class OnlineStoreError(ValueError):
    """A materialization that would leave the store inconsistent, or a bad read."""


# -- keys ------------------------------------------------------------------------------------
def key_kind(dtype: str | None) -> KeyKind:
    """How a key column is encoded, from its contract type (``ColumnRule.dtype``)."""
    return {"int": "number", "float": "number", "string": "text", "datetime": "time"}.get(
        dtype or "", "auto"
    )


def is_null(value: Any) -> bool:
    """A scalar that holds no value: None, NaN (numpy's too) or NaT."""
    if value is None or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, np.datetime64) and np.isnat(value)


def _number_text(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    number = float(value)
    if number.is_integer() and abs(number) < 2**63:
        return str(int(number))  # 7.0 (an int column held as float64) is the integer 7
    return repr(number)


def _canonical(value: Any, kind: KeyKind) -> str | None:
    if is_null(value):
        return None
    if kind == "time":
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
        return stamp.isoformat()
    numeric = isinstance(value, int | float | np.integer | np.floating | bool | np.bool_)
    if numeric and kind in ("number", "auto"):
        return _number_text(value)
    if kind == "number":  # text in a number column: its number, if it is one
        try:
            value = float(str(value))
        except ValueError:
            return str(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # an integer held as float, or a text column read as numbers
    return repr(float(value)) if isinstance(value, float | np.floating) else str(value)


def encode_key(values: Sequence[Any], kinds: Sequence[KeyKind]) -> str:
    """The stored key of an entity: its join-key values in their canonical text."""
    if len(values) != len(kinds):
        raise OnlineStoreError(f"{len(values)} key values for {len(kinds)} key columns")
    return json.dumps([_canonical(v, k) for v, k in zip(values, kinds, strict=True)])


def encode_keys(frame: pd.DataFrame, columns: list[str], kinds: Sequence[KeyKind]) -> list[str]:
    """:func:`encode_key` of each row of ``frame[columns]``, column by column."""
    if len(columns) != len(kinds):
        raise OnlineStoreError(f"{len(kinds)} key types for key columns {columns}")
    parts = [
        [_canonical(v, kind) for v in frame[c].tolist()]
        for c, kind in zip(columns, kinds, strict=True)
    ]
    return [json.dumps(list(row)) for row in zip(*parts, strict=True)] if parts else []


def has_null_key(key: str) -> bool:
    """Whether an encoded key has a null part (such an entity is never stored)."""
    return None in json.loads(key)


# -- values ----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars unwrapped, NaN as null, times as ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if is_null(value):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    return value


def typed_frame(records: list[dict[str, Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    """Stored payloads back as a frame whose columns have the dtypes they were written from,
    so joins and the model see what training saw (times as UTC nanoseconds)."""
    frame = pd.DataFrame.from_records(records, columns=list(dtypes)) if records else None
    out = {}
    for col, dtype in dtypes.items():
        values = frame[col] if frame is not None else pd.Series([], dtype=object)
        if dtype.startswith("datetime64"):
            out[col] = pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
        elif dtype == "bool":
            out[col] = values.astype(object).where(values.notna(), None)
        elif dtype.startswith(("int", "uint", "float", "Int", "Float", "UInt")):
            numbers = pd.to_numeric(values, errors="coerce")
            out[col] = numbers.astype("float64" if numbers.isna().any() else dtype)
        else:
            out[col] = values.astype(object).where(values.notna(), None)
    return pd.DataFrame(out)


# -- what a store holds ----------------------------------------------------------------------
class ViewState(BaseModel):
    """What one stored view holds, and since when.

    ``watermark_ns``: the values are those known strictly before it (a lookup: None, it has
    no time). ``defaults``: what an entity with no stored row gets (for feature views, what
    the offline store gives it too: count 0, other values null); a lookup or as-of join has
    none (no row is a miss, joined as training joins a missing right row).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: StateKind
    definition: str
    source: str
    join_keys: list[str]
    key_kinds: list[KeyKind]
    columns: dict[str, str]  # payload column -> dtype it was written from
    features: list[str]  # the feature names it serves
    defaults: dict[str, Any] | None = None
    watermark_ns: int | None = None
    source_snapshot: str | None = None
    rows: int = 0
    written_at: str = ""

    @property
    def watermark(self) -> pd.Timestamp | None:
        return None if self.watermark_ns is None else pd.Timestamp(self.watermark_ns, tz=UTC)


class OnlineRow(NamedTuple):
    """One entity's stored values and the time they are as of (event time, for a stream)."""

    key: str
    values: dict[str, Any]
    as_of_ns: int | None = None


class ViewMaterialization(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: StateKind = "window"
    mode: Literal["full", "incremental", "unchanged"]
    source_rows_read: int
    entities_written: int
    as_of: datetime | None = None


class MaterializeResult(BaseModel):
    """What one materialization did, per stored view; ``as_of`` is the latest watermark."""

    model_config = ConfigDict(frozen=True)

    as_of: datetime | None
    views: dict[str, ViewMaterialization]


class _TTLCache:
    """Least-recently-used entries that also expire after ``ttl_s`` seconds."""

    def __init__(self, maxsize: int, ttl_s: float) -> None:
        self.maxsize, self.ttl_s = maxsize, ttl_s
        self._data: OrderedDict[tuple[str, str], tuple[float, OnlineRow | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, str]) -> tuple[bool, OnlineRow | None]:
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry[0] < time.monotonic():
                self._data.pop(key, None)
                self.misses += 1
                return False, None
            self._data.move_to_end(key)
            self.hits += 1
            return True, entry[1]

    def put(self, key: tuple[str, str], value: OnlineRow | None) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class OnlineStoreBase(ABC):
    """The interface serving reads and writers write: three primitives per backend
    (:meth:`states`, :meth:`write_view`, :meth:`read_rows`), the rest shared."""

    def __init__(self, cache_size: int = 10_000, cache_ttl_s: float = 30.0) -> None:
        self.cache = _TTLCache(cache_size, cache_ttl_s)
        self._states: tuple[float, dict[str, ViewState]] | None = None
        self.states_ttl_s = min(cache_ttl_s, 2.0)

    # -- the backend's primitives ------------------------------------------------------------
    @abstractmethod
    def load_states(self) -> dict[str, ViewState]:
        """Every stored view's state, by name (read from the backend, uncached)."""

    @abstractmethod
    def _write(self, state: ViewState, rows: Iterable[OnlineRow], replace: bool) -> int:
        """Atomically: replace (or upsert into) a view's rows and set its state with the
        resulting row count; returns that count."""

    @abstractmethod
    def read_rows(self, view: str, keys: Sequence[str]) -> list[OnlineRow | None]:
        """The stored rows of ``keys`` (None where a key has none), uncached."""

    # -- shared ------------------------------------------------------------------------------
    def write_view(self, state: ViewState, rows: Iterable[OnlineRow], replace: bool) -> int:
        """Write a view's rows (all of them when ``replace``, else an upsert) and its state."""
        state = state.model_copy(update={"written_at": datetime.now(UTC).isoformat()})
        count = self._write(state, rows, replace)
        self.cache.clear()
        self._states = None
        return count

    def states(self) -> dict[str, ViewState]:
        """Stored views' states, re-read at most every couple of seconds; a view another
        process rewrote since drops the cached rows (so its writes show within seconds)."""
        now = time.monotonic()
        if self._states is None or self._states[0] < now:
            fresh = self.load_states()
            if self._states is not None:
                old = self._states[1]
                if any(
                    old.get(n) is None or old[n].written_at != s.written_at
                    for n, s in fresh.items()
                ):
                    self.cache.clear()
            self._states = (now + self.states_ttl_s, fresh)
        return self._states[1]

    def read(self, view: str, keys: Sequence[str]) -> list[OnlineRow | None]:
        """Rows of ``keys`` through the cache; a key with a null part is never stored."""
        out: list[OnlineRow | None] = [None] * len(keys)
        wanted: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit, row = self.cache.get((view, key))
            if hit:
                out[i] = row
            elif not has_null_key(key):
                wanted.setdefault(key, []).append(i)
        if wanted:
            found = self.read_rows(view, list(wanted))
            for key, row in zip(wanted, found, strict=True):
                self.cache.put((view, key), row)
                for i in wanted[key]:
                    out[i] = row
        return out

    def watermark(self, view: str) -> pd.Timestamp | None:
        """The time a view's stored values are as of, or None if never materialized."""
        state = self.states().get(view)
        return state.watermark if state else None

    def feature_names(self) -> list[str]:
        """Every feature the stored feature views serve, view by view."""
        return [
            f for s in self.states().values() if s.kind in ("window", "latest") for f in s.features
        ]

    def get_features(self, entity_id: dict[str, Any], feature_names: list[str]) -> dict[str, Any]:
        """One entity's feature vector, as of each view's watermark; an unknown entity gets
        what the offline store gives it (count 0, other values null)."""
        states = {n: s for n, s in self.states().items() if s.kind in ("window", "latest")}
        owners = {f: name for name, s in states.items() for f in s.features}
        if unknown := [f for f in feature_names if f not in owners]:
            raise DefinitionError(f"no materialized view holds {unknown}; run materialize")
        out: dict[str, Any] = {}
        for view in dict.fromkeys(owners[f] for f in feature_names):
            state = states[view]
            if missing := [k for k in state.join_keys if k not in entity_id]:
                raise OnlineStoreError(f"entity id lacks {missing} for view {view!r}")
            key = encode_key([entity_id[k] for k in state.join_keys], state.key_kinds)
            (row,) = self.read(view, [key])
            values = row.values if row is not None else (state.defaults or {})
            out |= {f: values.get(f) for f in state.features}
        return {f: out[f] for f in feature_names}

    def materialize(
        self,
        views: list[View],
        tables: dict[str, pd.DataFrame],
        as_of: datetime,
        incremental: bool = False,
        key_kinds: dict[str, list[KeyKind]] | None = None,
    ) -> MaterializeResult:
        """Store every entity's values of ``views`` as known strictly before ``as_of``.

        ``incremental`` reuses what an earlier run stored for the same definitions and reads
        only recent source rows (an error if that is impossible); a view never materialized
        before gets a full run. ``key_kinds``: per view, its keys' types (default: inferred
        from the values).
        """
        check_views(views)
        done = {
            view.name: materialize_view(
                self,
                view,
                tables[view.source],
                as_of,
                incremental,
                (key_kinds or {}).get(view.name),
                strict=True,
            )
            for view in views
        }
        return MaterializeResult(as_of=as_of.astimezone(UTC), views=done)


class SQLiteOnlineStore(OnlineStoreBase):
    """The embedded online store: one SQLite file (WAL), one transaction per view write."""

    SCHEMA_VERSION = 2
    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS online_views (name TEXT PRIMARY KEY, state TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS online_rows (
        view TEXT NOT NULL,
        entity_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        as_of_ns INTEGER,
        PRIMARY KEY (view, entity_key)
    ) WITHOUT ROWID;
    """

    def __init__(self, path: Path, cache_size: int = 10_000, cache_ttl_s: float = 30.0) -> None:
        super().__init__(cache_size, cache_ttl_s)
        self.path = Path(path)
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLiteOnlineStore({str(self.path)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            if not self._ready:
                conn.execute("PRAGMA journal_mode=WAL")
                crash_point("online.schema")  # each statement below commits on its own
                if conn.execute("PRAGMA user_version").fetchone()[0] < self.SCHEMA_VERSION:
                    # An older layout held only feature views: drop it, materialize again.
                    conn.executescript("DROP TABLE IF EXISTS views; DROP TABLE IF EXISTS rows;")
                conn.executescript(self._SCHEMA)
                conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
                self._ready = True
            yield conn
        finally:
            conn.close()

    def load_states(self) -> dict[str, ViewState]:
        if not self.path.exists():
            return {}
        with self._connect() as conn:
            rows = conn.execute("SELECT name, state FROM online_views").fetchall()
        return {name: ViewState.model_validate_json(state) for name, state in rows}

    def _write(self, state: ViewState, rows: Iterable[OnlineRow], replace: bool) -> int:
        def records() -> Iterator[tuple[str, str, str, int | None]]:
            for i, r in enumerate(rows):
                if i == 1:
                    crash_point("online.write.rows")  # a row is in, the transaction is open
                yield state.name, r.key, json.dumps(r.values, allow_nan=False), r.as_of_ns

        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    conn.execute("DELETE FROM online_rows WHERE view = ?", (state.name,))
                conn.executemany(
                    "INSERT INTO online_rows (view, entity_key, payload, as_of_ns) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (view, entity_key) DO UPDATE SET "
                    "payload = excluded.payload, as_of_ns = excluded.as_of_ns",
                    records(),
                )
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM online_rows WHERE view = ?", (state.name,)
                ).fetchone()
                state = state.model_copy(update={"rows": int(count)})
                conn.execute(
                    "INSERT OR REPLACE INTO online_views (name, state) VALUES (?, ?)",
                    (state.name, state.model_dump_json()),
                )
                crash_point("online.write.commit")  # all written, not committed
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        crash_point("online.write.committed")  # committed; the caller has not heard yet
        return int(count)

    def read_rows(self, view: str, keys: Sequence[str]) -> list[OnlineRow | None]:
        if not keys or not self.path.exists():
            return [None] * len(keys)
        found: dict[str, OnlineRow] = {}
        with self._connect() as conn:
            for start in range(0, len(keys), _READ_CHUNK):
                chunk = list(keys[start : start + _READ_CHUNK])
                marks = ",".join("?" * len(chunk))
                for key, payload, as_of_ns in conn.execute(
                    "SELECT entity_key, payload, as_of_ns FROM online_rows "
                    f"WHERE view = ? AND entity_key IN ({marks})",
                    (view, *chunk),
                ):
                    found[key] = OnlineRow(key, json.loads(payload), as_of_ns)
        return [found.get(k) for k in keys]


OnlineStore = SQLiteOnlineStore  # the embedded default, under its historical name


def online_store_path(state_root: Path) -> Path:
    """Where the embedded online store lives inside the state folder."""
    return Path(state_root) / "online" / "features.db"


def open_online_store(state_root: Path, url: str | None = None) -> OnlineStoreBase:
    """The online store a deployment uses: ``url`` names one; None is the embedded SQLite
    file in the state folder.

    ``sqlite:///PATH`` is built in. Any other scheme is a backend published under the
    ``mlsys.online_stores`` entry-point group: its name is the scheme, its value a class
    with ``from_url(url)`` (``redis`` is published so, by this package's pyproject.toml).
    """
    if url is None:
        return SQLiteOnlineStore(online_store_path(state_root))
    if url.startswith("sqlite:///"):
        return SQLiteOnlineStore(Path(url.removeprefix("sqlite:///")))
    scheme = url.split("://", 1)[0] if "://" in url else ""
    backends = {e.name: e for e in entry_points(group=ONLINE_STORES)}
    if scheme not in backends:
        known = "".join(f" or {name}://..." for name in sorted(backends))
        raise OnlineStoreError(f"unsupported online store {url!r}: expected sqlite:///PATH{known}")
    return backends[scheme].load().from_url(url)


# -- materialization -------------------------------------------------------------------------
def _ns(when: datetime) -> int:
    if when.tzinfo is None:
        raise OnlineStoreError("as_of must be timezone-aware")
    return int(to_ns(pd.Series([when]))[0])


def _when(ns: int) -> datetime:
    return pd.Timestamp(ns, tz=UTC).to_pydatetime()


def _dtypes(frame: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    return {c: str(frame[c].dtype) for c in columns}


def _column_values(values: pd.Series) -> list[Any]:
    """A column as JSON values: NaN and NaT as None, times as ISO text, numpy unwrapped."""
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        values.dtype
    ):
        return [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in values.tolist()]
    if pd.api.types.is_float_dtype(values.dtype):
        return [None if math.isnan(v) else v for v in values.tolist()]
    if values.dtype == object:
        return [_plain(v) for v in values.tolist()]
    return values.astype(object).where(values.notna(), None).tolist()


def _payloads(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    lists = [_column_values(frame[c]) for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*lists, strict=True)]


def _infer_kinds(frame: pd.DataFrame, keys: list[str]) -> list[KeyKind]:
    kinds: list[KeyKind] = []
    for key in keys:
        dtype = frame[key].dtype
        if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
            kinds.append("time")
        elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            kinds.append("number")
        else:
            kinds.append("auto")
    return kinds


def _defaults(view: View) -> dict[str, Any]:
    """Values of an entity with nothing known: what the offline store gives it too."""
    if isinstance(view, WindowView):
        empty = {"count": 0, "sum": 0.0}
        return {a.name: empty.get(a.function) for a in view.aggregations}
    return dict.fromkeys(view.features)


def materialize_view(
    store: OnlineStoreBase,
    view: View,
    source: pd.DataFrame,
    as_of: datetime,
    incremental: bool = False,
    key_kinds: list[KeyKind] | None = None,
    strict: bool = False,
    snapshot: str | None = None,
) -> ViewMaterialization:
    """Store each entity's values of one feature view as known strictly before ``as_of``,
    computed by the offline store (the training path) at that time.

    An incremental run that is impossible (the definition changed, or the stored values are
    as of a later time) is an error when ``strict``, else a full run.
    """
    as_of_ns = _ns(as_of)
    definition = definitions_hash([view])
    keys = view.entity.join_keys
    kinds = key_kinds or _infer_kinds(source, keys)
    stored = store.states().get(view.name)
    mode: Literal["full", "incremental"] = "full"
    avail = availability_ns(view, source)
    known = (avail != NAT) & (avail < as_of_ns)
    if incremental and stored is not None:
        problem = None
        if stored.definition != definition or stored.key_kinds != kinds:
            problem = f"view {view.name!r} changed since it was materialized; run a full one"
        elif stored.watermark_ns is None or stored.watermark_ns > as_of_ns:
            problem = f"view {view.name!r} is materialized up to a later time; run a full one"
        if problem and strict:
            raise OnlineStoreError(problem)
        if problem is None:
            since = stored.watermark_ns - pd.Timedelta(view.horizon).value  # type: ignore[operator]
            known &= avail >= since
            mode = "incremental"
    # Rows known only at or after as_of cannot change a value as of then: never read.
    source = source[known]
    entities = source[keys].dropna().drop_duplicates()
    entities[_AS_OF] = pd.Timestamp(as_of_ns, unit="ns", tz="UTC")
    values = OfflineStore([view], {view.source: source}).get_historical_features(
        entities, view.features, _AS_OF
    )
    rows = [
        OnlineRow(key, payload, as_of_ns)
        for key, payload in zip(
            encode_keys(values, keys, kinds), _payloads(values, view.features), strict=True
        )
    ]
    state = ViewState(
        name=view.name,
        kind=view.kind,
        definition=definition,
        source=view.source,
        join_keys=keys,
        key_kinds=kinds,
        columns=_dtypes(values, view.features),
        features=view.features,
        defaults=_defaults(view),
        watermark_ns=as_of_ns,
        source_snapshot=snapshot,
    )
    store.write_view(state, rows, replace=mode == "full")
    return ViewMaterialization(
        kind=view.kind,
        mode=mode,
        source_rows_read=len(source),
        entities_written=len(rows),
        as_of=_when(as_of_ns),
    )


class JoinedTable(BaseModel):
    """The rows of one side table that a spec's lookups (or as-of joins) read, by its right
    key columns: what the online store holds for them."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["lookup", "as_of"]
    source: str
    keys: list[str]  # right key columns
    columns: list[str]  # right value columns (the union over the joins sharing it)
    timestamp: str | None = None  # as-of: the right table's event time
    lag: timedelta = timedelta(0)  # as-of: availability lag

    @property
    def name(self) -> str:
        where = f"{self.source}:{','.join(self.keys)}"
        if self.kind == "lookup":
            return f"lookup:{where}"
        return f"as_of:{where}@{self.timestamp}+{int(self.lag.total_seconds())}s"

    @property
    def stored_columns(self) -> list[str]:
        cols = [*self.keys, *filter(None, [self.timestamp]), *self.columns]
        return list(dict.fromkeys(cols))

    @property
    def definition(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def materialize_joined(
    store: OnlineStoreBase,
    table: JoinedTable,
    frame: pd.DataFrame,
    key_kinds: list[KeyKind] | None = None,
    as_of: datetime | None = None,
    snapshot: str | None = None,
    features: list[str] | None = None,
) -> ViewMaterialization:
    """Store a lookup's right rows by key, or an as-of join's newest right row per key
    known at ``as_of`` (its timestamp + lag at or before it, as the join itself counts).

    A lookup whose definition and source snapshot are unchanged is left as it is.
    """
    kinds = key_kinds or _infer_kinds(frame, table.keys)
    if missing := [c for c in table.stored_columns if c not in frame.columns]:
        raise OnlineStoreError(f"{table.name}: source {table.source!r} lacks columns {missing}")
    stored = store.states().get(table.name)
    as_of_ns = None if as_of is None else _ns(as_of)
    if (
        table.kind == "lookup"
        and stored is not None
        and snapshot is not None
        and (stored.definition, stored.source_snapshot, stored.key_kinds)
        == (table.definition, snapshot, kinds)
    ):
        return ViewMaterialization(
            kind="lookup", mode="unchanged", source_rows_read=0, entities_written=0
        )
    rows = frame[table.stored_columns].dropna(subset=table.keys)
    if table.kind == "as_of":
        if as_of_ns is None:
            raise OnlineStoreError(f"{table.name}: an as-of join is materialized as of a time")
        event = to_ns(rows[table.timestamp])
        known = (event != NAT) & (event + pd.Timedelta(table.lag).value <= as_of_ns)
        rows = rows[known].assign(**{_AS_OF: event[known]})
        rows = rows.sort_values(_AS_OF, kind="stable").drop_duplicates(table.keys, keep="last")
    elif rows.duplicated(table.keys).any():
        raise OnlineStoreError(f"lookup on {table.keys}: the right table repeats keys")
    stamps = rows[_AS_OF].tolist() if table.kind == "as_of" else [as_of_ns] * len(rows)
    records = [
        OnlineRow(key, payload, stamp)
        for key, payload, stamp in zip(
            encode_keys(rows, table.keys, kinds),
            _payloads(rows, table.stored_columns),
            stamps,
            strict=True,
        )
    ]
    state = ViewState(
        name=table.name,
        kind=table.kind,
        definition=table.definition,
        source=table.source,
        join_keys=table.keys,
        key_kinds=kinds,
        columns=_dtypes(frame, table.stored_columns),
        features=features or table.columns,
        watermark_ns=as_of_ns if table.kind == "as_of" else None,
        source_snapshot=snapshot,
    )
    store.write_view(state, records, replace=True)
    return ViewMaterialization(
        kind=table.kind,
        mode="full",
        source_rows_read=len(frame),
        entities_written=len(records),
        as_of=None if as_of_ns is None else _when(as_of_ns),
    )


def newest_known(views: list[View], tables: dict[str, pd.DataFrame]) -> datetime:
    """Just after the last time any source row became known: "now" for historical data."""
    newest = max(int(availability_ns(v, tables[v.source]).max(initial=NAT)) for v in views)
    if newest == NAT:
        raise OnlineStoreError("no source row is ever known; nothing to materialize")
    return (pd.Timestamp(newest, unit="ns", tz="UTC") + pd.Timedelta(seconds=1)).to_pydatetime()


def newest_row(frame: pd.DataFrame, timestamp: str, lag: timedelta) -> datetime:
    """Just after the newest row of a time-varying side table became available."""
    newest = int(to_ns(frame[timestamp]).max(initial=NAT))
    if newest == NAT:
        raise OnlineStoreError(f"no row has a {timestamp!r}; nothing to materialize")
    return _when(newest + pd.Timedelta(lag).value + 10**9)


# -- what a spec needs online -------------------------------------------------------------
@dataclass(frozen=True)
class OnlineSource:
    """One thing the online store must hold for a version: a feature view or a table."""

    name: str
    source: str
    kind: Literal["window", "latest", "lookup", "as_of"]
    key_kinds: list[KeyKind]
    view: View | None = None
    table: JoinedTable | None = None


def _key_kinds(spec: DatasetSpec, source: str, columns: list[str]) -> list[KeyKind]:
    contract = spec.contracts.get(source)
    rules = contract.columns if contract else {}
    return [key_kind(rules[c].dtype if c in rules else None) for c in columns]


def joined_tables(spec: DatasetSpec) -> dict[str, tuple[JoinedTable, list[LookupJoin | AsOfJoin]]]:
    """The side tables the spec's joins read, grouped by what they are stored by."""
    groups: dict[tuple, list[LookupJoin | AsOfJoin]] = {}
    for join in [*spec.lookups, *spec.as_of_joins]:
        if isinstance(join, AsOfJoin):
            key: tuple = ("as_of", join.source, tuple(join.on.values()), join.timestamp)
            key += (join.availability_lag,)
        else:
            key = ("lookup", join.source, tuple(join.on.values()), None, None)
        groups.setdefault(key, []).append(join)
    out = {}
    for (kind, source, keys, timestamp, lag), joins in groups.items():
        columns = list(dict.fromkeys(c for j in joins for c in j.columns))
        table = JoinedTable(
            kind=kind,
            source=source,
            keys=list(keys),
            columns=columns,
            timestamp=timestamp,
            **({"lag": lag} if lag is not None else {}),
        )
        out[table.name] = (table, joins)
    return out


def online_sources(spec: DatasetSpec) -> dict[str, OnlineSource]:
    """What the online store must hold to serve a model of ``spec``, by stored name: each
    feature view, each lookup table and each as-of table, with its keys' types taken from
    its source's contract."""
    out = {}
    for view in spec.feature_views:
        kinds = _key_kinds(spec, view.source, view.entity.join_keys)
        out[view.name] = OnlineSource(view.name, view.source, view.kind, kinds, view=view)
    for name, (table, _) in joined_tables(spec).items():
        kinds = _key_kinds(spec, table.source, table.keys)
        out[name] = OnlineSource(name, table.source, table.kind, kinds, table=table)
    return out


def materialize_spec(
    store: OnlineStoreBase,
    spec: DatasetSpec,
    tables: dict[str, pd.DataFrame],
    as_of: datetime | None = None,
    incremental: bool = True,
    snapshots: dict[str, str] | None = None,
) -> MaterializeResult:
    """Write everything a model of ``spec`` finds online: each feature view and as-of table
    as of ``as_of`` (default: just after its own newest source row became known, "now" for
    data that has stopped), each lookup table from its source snapshot.

    ``incremental`` makes view runs incremental where possible (else full); a lookup whose
    snapshot is unchanged is left as it is.
    """
    done: dict[str, ViewMaterialization] = {}
    for name, src in online_sources(spec).items():
        frame = tables[src.source]
        snapshot = (snapshots or {}).get(src.source)
        if src.view is not None:
            when = as_of or newest_known([src.view], {src.source: frame})
            done[name] = materialize_view(
                store, src.view, frame, when, incremental, src.key_kinds, False, snapshot
            )
            continue
        table = src.table
        assert table is not None
        when = None
        if table.kind == "as_of":
            when = as_of or newest_row(frame, table.timestamp or "", table.lag)
        done[name] = materialize_joined(store, table, frame, src.key_kinds, when, snapshot)
    stamps = [v.as_of for v in done.values() if v.as_of is not None]
    latest = as_of.astimezone(UTC) if as_of else max(stamps, default=None)
    return MaterializeResult(as_of=latest, views=done)


def source_problems(store: OnlineStoreBase, names: Iterable[str]) -> dict[str, str]:
    """Why each of ``names`` cannot be served from ``store`` (absent: it can): never
    materialized, or materialized empty."""
    states = store.states()
    problems = {}
    for name in names:
        state = states.get(name)
        if state is None:
            problems[name] = "not materialized"
        elif state.rows == 0:
            problems[name] = "materialized empty"
    return problems
