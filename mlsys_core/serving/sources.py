"""Where each model input comes from at serving time, and finding the ones a caller omits.

Every input column of a model has one serving source, read off the spec the version was
trained with:

- ``request``: a base-table column only the caller can send (imputed when absent);
- ``event_time``: the event time (required); the model derives calendar parts from it;
- ``lookup``: a lookup join's output, found in the online store by the request's key
  and joined with ``lookup_join``, the function that built the training rows;
- ``as_of``: an as-of join's output: the newest right row the online store holds per key,
  joined on the request's event time with ``point_in_time_join``, as in training;
- ``view``: a feature view's value, materialized into the online store by the offline
  store's own computation.

The request schema, the ``mlsys serve`` start-up table, ``/sources``, readiness and the
materialization before a version becomes champion all read this one plan.
"""

from __future__ import annotations

import time
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.features.assemble import join_as_of, join_lookups, request_keys
from mlsys_core.features.online import (
    JoinedTable,
    OnlineStoreBase,
    encode_key,
    joined_tables,
    online_sources,
    typed_frame,
)
from mlsys_core.spec import AsOfJoin, DatasetSpec, LookupJoin

SourceKind = Literal["request", "event_time", "lookup", "as_of", "view"]
AgeClock = Literal["event_time", "wall"]


class Found(NamedTuple):
    """What the online store gave a batch of request rows.

    ``ages``: per row, per feature view read, the age of its values at request time in
    seconds (request time minus the time the stored values are exact as of); ``stale``: per
    row, the views whose values were older than the view's ``ttl`` (their features missing).
    """

    values: dict[str, list[Any]]
    misses: list[list[str]]
    ages: list[dict[str, float]]
    stale: list[list[str]]


class InputSource(BaseModel):
    """Where one model input comes from when a request does not carry it."""

    model_config = ConfigDict(frozen=True)

    column: str
    kind: SourceKind
    online: str | None = None  # the stored view or table it is read from
    keys: list[str] = []  # the request fields it is found by
    note: str = ""

    @property
    def found(self) -> bool:
        """The service finds it (the caller may omit it)."""
        return self.kind in ("lookup", "as_of", "view")


class ServingPlan:
    """The serving source of every model input of one spec, and how to find them."""

    def __init__(
        self, spec: DatasetSpec, online: bool = True, age_clock: AgeClock = "event_time"
    ) -> None:
        self.spec = spec
        self.online = online
        self.age_clock = age_clock
        self.required = list(
            dict.fromkeys([*spec.entity_keys, *filter(None, [spec.event_timestamp])])
        )
        self.request_keys = request_keys(spec)
        self.tables = joined_tables(spec)
        self.table_of: dict[int, str] = {
            id(j): name for name, (_, joins) in self.tables.items() for j in joins
        }
        self.sources = online_sources(spec)
        self.inputs = {c: self._source_of(c) for c in spec.input_columns}

    def _source_of(self, column: str) -> InputSource:
        spec = self.spec
        if column == spec.event_timestamp:
            parts = ", ".join(spec.features.calendar) or "its parts"
            return InputSource(
                column=column, kind="event_time", note=f"request (required); derives {parts}"
            )
        for join in spec.lookups:
            if column in join.columns.values():
                keys = list(join.on)
                return InputSource(
                    column=column,
                    kind="lookup",
                    online=self.table_of[id(join)],
                    keys=keys,
                    note=f"lookup {join.source} by {', '.join(keys)}",
                )
        for join in spec.as_of_joins:
            if column in join.columns.values():
                keys = list(join.on)
                return InputSource(
                    column=column,
                    kind="as_of",
                    online=self.table_of[id(join)],
                    keys=keys,
                    note=f"as-of {join.source} by {', '.join(keys)} at the event time",
                )
        for view in spec.feature_views:
            if column in view.features:
                keys = view.entity.join_keys
                return InputSource(
                    column=column,
                    kind="view",
                    online=view.name,
                    keys=keys,
                    note=f"view {view.name} by {', '.join(keys)}",
                )
        required = " (required)" if column in self.required else ""
        return InputSource(column=column, kind="request", note=f"request{required}")

    # -- what the caller sends, what the service finds --------------------------------------
    @property
    def found(self) -> list[str]:
        """Inputs the service finds by itself (when online lookups are on)."""
        return [c for c, s in self.inputs.items() if s.found] if self.online else []

    @property
    def request_features(self) -> list[str]:
        """Inputs only the caller can send (absent: imputed)."""
        found = set(self.found)
        return [c for c in self.inputs if c not in found and c not in self.required]

    @property
    def online_names(self) -> list[str]:
        """What the online store must hold for this plan (empty when lookups are off)."""
        return list(self.sources) if self.online else []

    def describe(self) -> str:
        """A table of every model input and where it comes from, for people."""
        width = max([len(c) for c in self.inputs] + [5])
        lines = [f"{'input':<{width}}  source"]
        for column, source in self.inputs.items():
            note = source.note
            if source.found and not self.online:
                note += " (online lookups off: send it, else imputed)"
            elif source.kind == "request" and column not in self.required:
                note += " (optional: imputed when absent)"
            lines.append(f"{column:<{width}}  {note}")
        lines.append(f"{'':<{width}}  required: {', '.join(self.required) or 'none'}")
        if self.request_keys:
            keys = ", ".join(self.request_keys)
            lines.append(f"{'':<{width}}  send to find features: {keys}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "request_keys": self.request_keys,
            "request_features": self.request_features,
            "found_by_service": self.found,
            "inputs": {c: s.model_dump() for c, s in self.inputs.items()},
            "online": self.online_names,
        }

    # -- finding inputs --------------------------------------------------------------------
    def request_times_ns(self, request: pd.DataFrame) -> np.ndarray:
        """Each row's request time, what a feature's age is measured at: its event time
        (``age_clock="event_time"``: the time training's point-in-time join reads features
        as of; replayed and live requests alike), else the server's clock."""
        column = self.spec.event_timestamp
        now = time.time_ns()
        if self.age_clock == "wall" or column is None or column not in request:
            return np.full(len(request), now, dtype=np.int64)
        stamps = pd.to_datetime(request[column], utc=True)
        values = stamps.astype("datetime64[ns, UTC]").to_numpy("datetime64[ns]").view(np.int64)
        return np.where(stamps.isna().to_numpy(), now, values)

    def find(self, store: OnlineStoreBase, request: pd.DataFrame) -> Found:
        """The found inputs of each request row, per row the online sources that missed
        (no stored row for its key, or a key the request left null), and the age of each
        feature view's values (a view older than its ``ttl`` gives missing values).

        ``request`` holds the request's base columns as training typed them (numbers as
        float64, text as objects, times as UTC datetimes).
        """
        n = len(request)
        misses: list[list[str]] = [[] for _ in range(n)]
        ages: list[dict[str, float]] = [{} for _ in range(n)]
        stale: list[list[str]] = [[] for _ in range(n)]
        if not self.online or not self.sources:
            return Found({}, misses, ages, stale)
        states = store.states()
        frame = request.reset_index(drop=True)
        fetched: dict[int, pd.DataFrame] = {}
        for name, (table, joins) in self.tables.items():
            state = states.get(name)
            for join in joins:
                rows = self._read(store, state, name, frame, list(join.on), misses)
                if state is None:  # never materialized: every row misses
                    fetched[id(join)] = _empty_right(frame, join, table)
                else:
                    found = {r.key: r.values for r in rows if r is not None}
                    fetched[id(join)] = typed_frame(list(found.values()), state.columns)

        def right(join: LookupJoin | AsOfJoin) -> pd.DataFrame:
            return fetched[id(join)]

        joined = join_as_of(join_lookups(frame, self.spec, right), self.spec, right)
        values: dict[str, list[Any]] = {
            column: _plain_list(joined[column])
            for column in self.found
            if self.inputs[column].kind in ("lookup", "as_of")
        }
        for view in self.spec.feature_views:
            wanted = [f for f in view.features if f in self.inputs]
            if not wanted:
                continue
            state = states.get(view.name)
            rows = self._read(store, state, view.name, frame, view.entity.join_keys, misses)
            defaults = (state.defaults if state is not None else None) or {}
            for f in wanted:
                values[f] = [r.values.get(f) if r is not None else defaults.get(f) for r in rows]
        self._age(states, frame, values, ages, stale)
        return Found(values, [list(dict.fromkeys(m)) for m in misses], ages, stale)

    def _age(
        self,
        states: dict[str, Any],
        frame: pd.DataFrame,
        values: dict[str, list[Any]],
        ages: list[dict[str, float]],
        stale: list[list[str]],
    ) -> None:
        """Each row's age of each view read; a view older than its ttl gives None."""
        now: np.ndarray | None = None
        for view in self.spec.feature_views:
            wanted = [f for f in view.features if f in values]
            state = states.get(view.name)
            if not wanted or state is None or state.watermark_ns is None:
                continue
            # Every stored value of a view (and an absent entity's defaults) is exact as of
            # the view's watermark: a writer moves it only once all entities are as of it.
            if now is None:
                now = self.request_times_ns(frame)
            age = (now - state.watermark_ns) / 1e9
            ttl = getattr(view, "ttl", None)
            limit = ttl.total_seconds() if ttl is not None else np.inf
            for i, seconds in enumerate(age.tolist()):
                ages[i][view.name] = seconds
                if seconds > limit:
                    stale[i].append(view.name)
                    for f in wanted:
                        values[f][i] = None  # too old to trust: missing, imputed

    @staticmethod
    def _read(
        store: OnlineStoreBase,
        state: Any,
        name: str,
        frame: pd.DataFrame,
        keys: list[str],
        misses: list[list[str]],
    ) -> list[Any]:
        """The stored rows of each request row's key (None: a miss, recorded)."""
        if state is None:
            rows: list[Any] = [None] * len(frame)
        else:
            encoded = [
                encode_key(list(values), state.key_kinds)
                for values in frame[keys].itertuples(index=False, name=None)
            ]
            rows = store.read(name, encoded)
        for i, row in enumerate(rows):
            if row is None:
                misses[i].append(name)
        return rows


def _empty_right(
    frame: pd.DataFrame, join: LookupJoin | AsOfJoin, table: JoinedTable
) -> pd.DataFrame:
    """No right rows, typed so the join still runs (its outputs all missing)."""
    columns: dict[str, pd.Series] = {
        right: pd.Series([], dtype=frame[left].dtype) for left, right in join.on.items()
    }
    if table.timestamp:
        columns[table.timestamp] = pd.Series([], dtype="datetime64[ns, UTC]")
    for col in table.columns:
        columns.setdefault(col, pd.Series([], dtype=object))
    return pd.DataFrame(columns)


def _plain_list(values: pd.Series) -> list[Any]:
    """A column as plain Python values, every missing marker as None."""
    out = values.astype(object).where(values.notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in out]
