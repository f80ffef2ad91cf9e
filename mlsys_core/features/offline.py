"""The offline store: point-in-time correct features for any set of (entity, timestamp) rows.

For each entity row, a feature is computed only from source rows whose availability time is
strictly before the row's timestamp. A tie counts as not yet known.

How, in O(n log n) and without a cross join (what makes Feast's join slow and memory-hungry):
per view, source rows are sorted once by (entity code, availability rank) into one int64
composite key, with running sums of each aggregated quantity alongside. An entity row's
window ``[t - w, t)`` is then two binary searches in that sorted array, and its aggregate a
difference of two running sums. The newest-row views use the same search, one step back.
Output rows are computed in input order, so there is exactly one per entity row, even when
(key, timestamp) pairs repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from mlsys_core.features.definitions import (
    DefinitionError,
    LatestView,
    WindowView,
    check_views,
    views_for,
)

View = WindowView | LatestView


class EntityRowsError(ValueError):
    """Entity rows that cannot be joined: a missing key column or a null timestamp."""


def to_ns(values: pd.Series | pd.Index) -> np.ndarray:
    """Nanoseconds since the epoch, UTC (naive times are read as UTC); NaT -> int64 min."""
    index = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return index.as_unit("ns").asi8


def availability_ns(view: View, source: pd.DataFrame) -> np.ndarray:
    """When each source row became known, in ns; rows never known get int64 min."""
    event = to_ns(source[view.timestamp])
    if isinstance(view, LatestView):
        avail = event + pd.Timedelta(view.lag).value
        return np.where(event == _NAT, _NAT, avail)
    rule = view.availability
    offset = np.zeros(len(source), dtype=np.float64)
    for col in rule.offset_minutes:
        offset += pd.to_numeric(source[col], errors="coerce").to_numpy(np.float64)
    known = (event != _NAT) & np.isfinite(offset)
    minutes_ns = np.where(known, np.round(offset * 60e9), 0).astype(np.int64)
    avail = event + minutes_ns + pd.Timedelta(rule.lag).value
    if rule.at_least is not None:
        avail = np.maximum(avail, event + pd.Timedelta(rule.at_least).value)
    return np.where(known, avail, _NAT)


_NAT = np.iinfo(np.int64).min


@dataclass
class _KeyCodes:
    """Dense integer codes 0..k-1 for the key tuples seen in a source, and -1 for any other
    (or partly null) tuple, shared by source and entity rows."""

    uniques: list[pd.Index]
    combined: pd.Index  # the sparse product codes of the tuples seen, in dense-code order

    @classmethod
    def fit(cls, frame: pd.DataFrame, keys: list[str]) -> tuple[_KeyCodes, np.ndarray]:
        uniques, codes = [], []
        for key in keys:
            code, unique = pd.factorize(frame[key], use_na_sentinel=True)
            uniques.append(pd.Index(unique))
            codes.append(code.astype(np.int64))
        sizes = [max(len(u), 1) for u in uniques]
        if float(np.prod(sizes, dtype=np.float64)) >= 2**62:
            raise DefinitionError(f"entity keys {keys}: too many combinations to encode")
        sparse = cls._combine(codes, sizes)
        dense, combined = pd.factorize(sparse[sparse >= 0])
        out = np.full(len(sparse), -1, dtype=np.int64)
        out[sparse >= 0] = dense
        return cls(uniques, pd.Index(combined)), out

    def encode(self, frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
        codes = [
            u.get_indexer(frame[k]).astype(np.int64)
            for u, k in zip(self.uniques, keys, strict=True)
        ]
        sparse = self._combine(codes, [max(len(u), 1) for u in self.uniques])
        dense = self.combined.get_indexer(sparse).astype(np.int64)
        return np.where(sparse >= 0, dense, -1)

    @staticmethod
    def _combine(codes: list[np.ndarray], sizes: list[int]) -> np.ndarray:
        out = np.zeros(len(codes[0]), dtype=np.int64)
        missing = np.zeros(len(codes[0]), dtype=bool)
        for code, size in zip(codes, sizes, strict=True):
            out = out * size + code
            missing |= code < 0
        return np.where(missing, -1, out)


class _PreparedView:
    """One view's source rows, sorted by (entity, availability), with running sums."""

    def __init__(self, view: View, source: pd.DataFrame) -> None:
        if missing := [c for c in view.source_columns if c not in source.columns]:
            raise DefinitionError(f"view {view.name!r}: source lacks columns {missing}")
        self.view = view
        keys = view.entity.join_keys
        avail = availability_ns(view, source)
        self.keys, code = _KeyCodes.fit(source, keys)  # dense: code * stride fits in int64
        keep = (code >= 0) & (avail != _NAT)
        code, avail = code[keep], avail[keep]
        # Ranks of availability times make a composite key that cannot overflow int64.
        self.times, rank = np.unique(avail, return_inverse=True)
        self.stride = len(self.times) + 1
        composite = code * self.stride + rank
        order = np.argsort(composite, kind="stable")
        self.sorted_keys = composite[order]
        self.rows = np.flatnonzero(keep)[order]  # positions in the source frame
        self.source = source
        self.sums: dict[str, np.ndarray] = {}
        if isinstance(view, WindowView):
            self._running_sums(view)
        else:
            self.event = to_ns(source[view.timestamp])[self.rows]

    def _running_sums(self, view: WindowView) -> None:
        def running(values: np.ndarray) -> np.ndarray:
            out = np.empty(len(values) + 1, dtype=values.dtype)
            out[0] = 0
            np.cumsum(values, out=out[1:])
            return out

        for agg in view.aggregations:
            values = pd.to_numeric(self.source[agg.column], errors="coerce")
            values = values.to_numpy(np.float64)[self.rows]
            known = np.isfinite(values)
            self.sums.setdefault(f"n:{agg.column}", running(known.astype(np.int64)))
            if agg.function == "mean":
                self.sums.setdefault(f"sum:{agg.column}", running(np.where(known, values, 0.0)))
            if agg.function == "rate":
                hits = (known & (values > agg.threshold)).astype(np.int64)
                self.sums.setdefault(f"hit:{agg.column}:{agg.threshold}", running(hits))

    def _positions(self, code: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """How many sorted source rows come before each (code, ts), exclusive.

        Queries come sorted by (code, ts) (see ``_query_order``): both binary searches then
        walk forward through memory instead of jumping, which is several times faster on
        millions of rows than the same searches in random order.
        """
        before = np.searchsorted(self.times, ts, side="left")  # times strictly before ts
        return np.searchsorted(self.sorted_keys, code * self.stride + before, side="left")

    @staticmethod
    def _query_order(code: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return np.lexsort((ts, code))

    def window_features(
        self, code: np.ndarray, ts: np.ndarray, names: list[str]
    ) -> dict[str, np.ndarray]:
        view = self.view
        assert isinstance(view, WindowView)
        order = self._query_order(code, ts)
        code, ts = code[order], ts[order]  # computed in query order, put back at the end
        known = code >= 0
        safe = np.where(known, code, 0)
        hi = self._positions(safe, ts)
        lows: dict[timedelta, np.ndarray] = {}
        out = {}
        for agg in view.aggregations:
            if agg.name not in names:
                continue
            if agg.window not in lows:
                lows[agg.window] = self._positions(safe, ts - pd.Timedelta(agg.window).value)
            lo = lows[agg.window]
            count = self.sums[f"n:{agg.column}"]
            n = np.where(known, count[hi] - count[lo], 0)
            if agg.function == "count":
                value = n
            else:
                key = f"sum:{agg.column}" if agg.function == "mean" else f"hit:{agg.column}:"
                total = self.sums[key if agg.function == "mean" else f"{key}{agg.threshold}"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    value = np.where(known & (n > 0), (total[hi] - total[lo]) / n, np.nan)
            out[agg.name] = np.empty_like(value)
            out[agg.name][order] = value
        return out

    def latest_features(self, code: np.ndarray, ts: np.ndarray, names: list[str]) -> pd.DataFrame:
        view = self.view
        assert isinstance(view, LatestView)
        by_feature = {feature: col for col, feature in view.columns.items()}
        if len(self.rows) == 0:
            picked, valid = np.zeros(len(code), dtype=np.int64), np.zeros(len(code), dtype=bool)
            return self._take(by_feature, names, picked, valid)
        order = self._query_order(code, ts)
        known = code >= 0
        safe = np.where(known, code, 0)
        pos = np.empty(len(code), dtype=np.int64)
        pos[order] = self._positions(safe[order], ts[order]) - 1
        clipped = np.maximum(pos, 0)
        same_key = (self.sorted_keys[clipped] // self.stride) == safe
        fresh = self.event[clipped] >= ts - pd.Timedelta(view.ttl).value
        valid = known & (pos >= 0) & same_key & fresh
        return self._take(by_feature, names, self.rows[clipped], valid)

    def _take(
        self, columns: dict[str, str], names: list[str], picked: np.ndarray, valid: np.ndarray
    ) -> pd.DataFrame:
        out = {}
        for name in names:
            source = self.source[columns[name]]
            if len(source) == 0:  # nothing to take from: all missing, in the column's kind
                missing = None if source.dtype == object else np.nan
                out[name] = pd.Series([missing] * len(picked), dtype=source.dtype)
                continue
            values = source.iloc[picked].reset_index(drop=True)
            if values.dtype == object:  # one missing marker for strings, whatever the source had
                out[name] = values.where(pd.Series(valid) & values.notna(), None)
            else:
                out[name] = values.where(pd.Series(valid))
        return pd.DataFrame(out, index=range(len(picked)))


class OfflineStore:
    """Point-in-time features from source tables, as the feature views declare them."""

    def __init__(self, views: list[View], tables: dict[str, pd.DataFrame]) -> None:
        check_views(views)
        if missing := sorted({v.source for v in views} - set(tables)):
            raise DefinitionError(f"no table for the views' sources {missing}")
        self.views = {v.name: v for v in views}
        self.tables = tables
        self._prepared: dict[str, _PreparedView] = {}

    def _prepare(self, name: str) -> _PreparedView:
        if name not in self._prepared:
            view = self.views[name]
            self._prepared[name] = _PreparedView(view, self.tables[view.source])
        return self._prepared[name]

    def get_historical_features(
        self, entity_rows: pd.DataFrame, feature_names: list[str], timestamp: str
    ) -> pd.DataFrame:
        """One row per entity row, in order and on its index: the row's columns plus the
        requested features as known strictly before ``entity_rows[timestamp]``."""
        wanted = views_for(list(self.views.values()), feature_names)
        if timestamp not in entity_rows.columns:
            raise EntityRowsError(f"entity rows lack the timestamp column {timestamp!r}")
        needed = {k for name in wanted for k in self.views[name].entity.join_keys}
        if missing := sorted(needed - set(entity_rows.columns)):
            raise EntityRowsError(f"entity rows lack the join keys {missing}")
        ts = to_ns(entity_rows[timestamp])
        if (ts == _NAT).any():
            raise EntityRowsError(f"entity rows have null timestamps in {timestamp!r}")
        columns: dict[str, np.ndarray | pd.Series] = {}
        for name, names in wanted.items():
            prepared = self._prepare(name)
            code = prepared.keys.encode(entity_rows, self.views[name].entity.join_keys)
            if isinstance(prepared.view, WindowView):
                columns |= prepared.window_features(code, ts, names)
            else:
                latest = prepared.latest_features(code, ts, names)
                columns |= {c: latest[c].to_numpy() for c in latest.columns}
        # One frame built once from the arrays: no block-by-block concatenation and copying.
        ordered = {f: columns[f] for f in dict.fromkeys(feature_names)}
        features = pd.DataFrame(ordered, index=entity_rows.index, copy=False)
        overlap = [c for c in features.columns if c in entity_rows.columns]
        return pd.concat([entity_rows.drop(columns=overlap), features], axis=1)
