"""Assembling the feature frame from clean tables, as the dataset spec declares it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from mlsys_core.features.keys import KeyIndex, column_values, take_rows
from mlsys_core.features.offline import NAT, OfflineStore, hits, to_ns
from mlsys_core.features.pit import AsOfIndex, point_in_time_join
from mlsys_core.spec import (
    AsOfJoin,
    DatasetSpec,
    HashSplit,
    LabelSpec,
    LookupJoin,
    RecentSplit,
    TimeSplit,
)

SPLIT = "_split"


class LookupIndex:
    """A right table prepared for many-to-one lookups on ``on`` (left key -> right key):
    its keys coded once, so each batch of left rows is a hash lookup and a gather. Its rows
    with a null key part are left out, as the online store leaves them out."""

    def __init__(self, right: pd.DataFrame, on: dict[str, str], columns: dict[str, str]) -> None:
        right_keys = list(on.values())
        self.on = on
        self.keys, codes = KeyIndex.fit(right, right_keys)
        held = np.flatnonzero(codes >= 0)  # a row with a null key is never found
        if self.keys.size < len(held):
            raise ValueError(f"lookup on {right_keys}: the right table repeats keys")
        self.row_of_code = np.empty(self.keys.size, dtype=np.int64)
        self.row_of_code[codes[held]] = held
        self.values = {out: right[col] for col, out in columns.items()}

    def join(self, left: pd.DataFrame, copy: bool = True) -> pd.DataFrame:
        """``copy=False``: the result takes ``left``'s arrays (see ``with_columns``)."""
        code = self.keys.encode(left, list(self.on))
        rows = np.full(len(code), -1, dtype=np.int64)  # -1: no right row (also: none at all)
        hit = code >= 0
        rows[hit] = self.row_of_code[code[hit]]
        return take_rows(left, self.values, rows, copy=copy)


def lookup_join(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: dict[str, str],
    columns: dict[str, str],
    copy: bool = True,
) -> pd.DataFrame:
    """Many-to-one left join; a right key seen twice is an error, not a silent fan-out.
    ``copy=False``: the result takes ``left``'s arrays (see ``with_columns``)."""
    return LookupIndex(right, on, columns).join(left, copy=copy)


def make_label(frame: pd.DataFrame, label: LabelSpec) -> pd.Series:
    """1.0 / 0.0, or NaN where the label column is null (no outcome to learn from); with
    ``present``, 1.0 where it holds a value and 0.0 where it is null."""
    values = frame[label.column]
    if label.present:
        return values.notna().astype("float64")
    hit = pd.Series(hits(values, label.threshold, label.positive), index=frame.index)
    return hit.astype("float64").where(values.notna(), np.nan)


class EventLabels:
    """The label of base events, prepared once for any number of batches of them: read
    from the base row's column, or looked up in the outcome table (1 when a row of it that
    counts names the event); NaN where the event names none (a null key part) or is newer
    than ``labelled_until`` (its outcome may still come)."""

    def __init__(
        self,
        label: LabelSpec,
        time: str | None,
        tables: Mapping[str, pd.DataFrame],
        newest: pd.Timestamp | None,
    ) -> None:
        """``time``: the event-time column; ``tables`` hold the outcome table, if any;
        ``newest``: the whole base table's newest event."""
        self.label, self.time = label, time
        self.labelled_until = labelled_until(label, newest)
        self.named: KeyIndex | None = None
        if (source := self.label.source) is not None:
            outcomes, on = tables[source], self.label.on or {}
            wanted = [*on.values(), *filter(None, [self.label.column])]
            if missing := [c for c in wanted if c not in outcomes.columns]:
                raise ValueError(f"the label's outcome table {source!r} has no columns {missing}")
            if self.label.column is not None:
                counted = hits(
                    outcomes[self.label.column], self.label.threshold, self.label.positive
                )
                outcomes = outcomes[counted]
            self.named, _ = KeyIndex.fit(outcomes, list(on.values()))
            self.numeric = {b: _numeric(outcomes[o]) for b, o in on.items()}

    def __call__(self, frame: pd.DataFrame) -> pd.Series:
        if self.named is None:
            label = make_label(frame, self.label)
        else:
            on = list(self.label.on or {})
            kinds = {c: (self.numeric[c], _numeric(frame[c])) for c in on}
            if unlike := [c for c, (o, b) in kinds.items() if None not in (o, b) and o != b]:
                raise ValueError(
                    f"the label's outcome table {self.label.source!r} writes {unlike} as "
                    "numbers where the events write text, or the other way round: no row "
                    "could name an event; type them alike in the contracts"
                )
            found = (self.named.encode(frame, on) >= 0).astype("float64")
            named = frame[on].notna().all(axis=1).to_numpy()
            label = pd.Series(np.where(named, found, np.nan), index=frame.index)
        if self.labelled_until is not None:
            late = to_ns(frame[self.time]) > self.labelled_until.value  # type: ignore[index]
            label = label.where(~late, np.nan)
        return label


def _numeric(values: pd.Series) -> bool | None:
    """Whether a key column holds numbers; None when it holds nothing to compare."""
    return None if values.isna().all() else bool(pd.api.types.is_numeric_dtype(values))


def labelled_until(label: LabelSpec, newest: pd.Timestamp | None) -> pd.Timestamp | None:
    """The newest event time whose outcome is final, when outcomes come late
    (``known_after``); None when every event's label is final."""
    if label.known_after is None:
        return None
    if newest is None:
        raise ValueError("no event times to date the label from: the base table has no rows")
    return newest - label.known_after


def newest_event(timestamps: pd.Series) -> pd.Timestamp | None:
    """The newest of ``timestamps`` (UTC), None when there is none."""
    ns = to_ns(timestamps)
    ns = ns[ns != NAT]
    return pd.Timestamp(int(ns.max()), tz="UTC") if len(ns) else None


def assign_hash_split(frame: pd.DataFrame, split: HashSplit, columns: list[str]) -> pd.Series:
    """Split by a stable hash of each row's values: row-local, so batches agree."""
    hashes = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy(np.uint64)
    share = hashes.astype(np.float64) / 2.0**64
    test_from = 1.0 - split.test_fraction
    valid_from = test_from - split.valid_fraction
    return _split_names(share >= valid_from, share >= test_from, frame.index)


_SPLITS = np.array(["train", "valid", "test"], dtype=object)


def _split_names(past_train: np.ndarray, past_valid: np.ndarray, index: pd.Index) -> pd.Series:
    """The split per row, each taken from three shared strings: a string array made by
    ``np.where`` and turned into objects cost more than the comparisons."""
    codes = past_train.astype(np.intp) + past_valid
    return pd.Series(_SPLITS[codes], index=index, dtype=object)


def assign_split(timestamps: pd.Series, split: TimeSplit) -> pd.Series:
    """Split by event time, so no validation or test row predates a training row."""
    # In ns since the epoch (already parsed times are not parsed again, as to_datetime would).
    ts = to_ns(timestamps)
    train_end, valid_end = to_ns(pd.DatetimeIndex([split.train_end, split.valid_end]))
    return _split_names(ts >= train_end, ts >= valid_end, timestamps.index)


def dated_split(spec: DatasetSpec, newest: pd.Timestamp | None) -> TimeSplit | HashSplit:
    """The split rows are assigned by: a ``RecentSplit`` dated back from the newest event
    whose label is final (``newest``: of every base row, not one batch's), any other split
    as it is."""
    if not isinstance(spec.split, RecentSplit):
        return spec.split
    if newest is None:
        raise ValueError("no event times to date the split from: the base table has no rows")
    return spec.split.at((labelled_until(spec.label, newest) or newest).to_pydatetime())


def lookup_keys(spec: DatasetSpec) -> list[str]:
    """Every base column the lookups, as-of joins and feature views find rows by (entity
    keys and model inputs among them)."""
    keys = [c for j in [*spec.lookups, *spec.as_of_joins] for c in j.on]
    keys += [k for v in spec.feature_views for k in v.entity.join_keys]
    return list(dict.fromkeys(keys))


def request_keys(spec: DatasetSpec) -> list[str]:
    """The lookup keys a caller sends besides the entity keys and the model's inputs (a
    feature set keeps them, so its rows can be replayed as requests)."""
    known = {*spec.entity_keys, *spec.input_columns}
    return [k for k in lookup_keys(spec) if k not in known]


RightRows = Callable[[LookupJoin | AsOfJoin], pd.DataFrame]


def join_lookups(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    right: RightRows,
    prepared: PreparedJoins | None = None,
    copy: bool = True,
) -> pd.DataFrame:
    """The spec's lookups, in order. ``right(join)`` gives a join's right rows: the whole
    table in training, the rows the online store holds for a request's keys in serving.
    ``prepared``: the right tables already indexed (batch assembly indexes them once).
    ``copy=False``: ``frame`` is the caller's to drop, the result takes its arrays."""
    for i, lookup in enumerate(spec.lookups):
        if prepared is not None:
            frame = prepared.lookups[i].join(frame, copy=copy)
        else:
            frame = lookup_join(frame, right(lookup), lookup.on, lookup.columns, copy=copy)
        copy = False  # a frame made here is this call's own
    return frame


def join_as_of(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    right: RightRows,
    prepared: PreparedJoins | None = None,
    copy: bool = True,
) -> pd.DataFrame:
    """The spec's as-of joins, in order, on its event time (training and serving alike);
    ``copy`` as in :func:`join_lookups`."""
    for i, join in enumerate(spec.as_of_joins):
        frame = point_in_time_join(
            frame,
            right(join),
            on=join.on,
            left_time=spec.event_timestamp,  # type: ignore[arg-type]
            right_time=join.timestamp,
            columns=join.columns,
            tolerance=join.tolerance,
            availability_lag=join.availability_lag,
            index=prepared.as_of[i] if prepared is not None else None,
            copy=copy,
        )
        copy = False
    return frame


class PreparedJoins:
    """The spec's lookups and as-of joins with their right tables indexed once, for
    assembling many batches of base rows against the same tables."""

    def __init__(self, spec: DatasetSpec, tables: dict[str, pd.DataFrame]) -> None:
        self.lookups = [LookupIndex(tables[j.source], j.on, j.columns) for j in spec.lookups]
        self.as_of = [
            AsOfIndex(
                tables[j.source],
                on=j.on,
                right_time=j.timestamp,
                columns=j.columns,
                availability_lag=j.availability_lag,
            )
            for j in spec.as_of_joins
        ]


def assemble_features(
    tables: dict[str, pd.DataFrame],
    spec: DatasetSpec,
    base: pd.DataFrame | None = None,
    store: OfflineStore | None = None,
    joins: PreparedJoins | None = None,
    split: TimeSplit | HashSplit | None = None,
    labels: EventLabels | None = None,
) -> pd.DataFrame:
    """One row per base event: keys, event time, raw feature inputs, label and split.

    ``base`` (default: ``tables[spec.base]``) are the rows to assemble, e.g. one batch of the
    base table; the joins and the feature views read ``tables``, which must then hold the
    whole of every source a view reads, the base table included: a batch's history is not
    in the batch. Each output row depends only on its base row and ``tables``. Batch callers
    pass ``store`` and ``joins`` built once from ``tables``, and ``split`` dated once for the
    whole base table (``dated_split``), and ``labels`` prepared once for it; without them,
    a ``RecentSplit`` and a label's ``known_after`` are dated from ``tables[spec.base]``,
    or from ``base`` when the tables do not hold it.
    """
    base = tables[spec.base] if base is None else base
    if missing := sorted(set(spec.base_columns) - set(base.columns)):
        raise ValueError(f"base table {spec.base!r} lacks columns {missing}")

    def whole(join: LookupJoin | AsOfJoin) -> pd.DataFrame:
        return tables[join.source]

    # One copy of the base columns; every join after it takes the frame before it as is.
    frame = join_lookups(base[spec.base_columns].copy(), spec, whole, joins, copy=False)
    frame = join_as_of(frame, spec, whole, joins, copy=False)
    if spec.feature_views:
        # The training path of the feature store: the same call serves any entity rows.
        # Batch callers pass one store, so each view's sources are indexed once, not per batch.
        store = store or OfflineStore(spec.feature_views, tables)
        frame = store.get_historical_features(
            frame, spec.view_features, timestamp=spec.event_timestamp, copy=False
        )
    dated = split is None and isinstance(spec.split, RecentSplit)
    newest = None
    if dated or (labels is None and spec.label.known_after is not None):
        every = tables.get(spec.base, base)  # the whole base table, where the caller has it
        newest = newest_event(every[spec.event_timestamp])  # type: ignore[index]
    labels = labels or EventLabels(spec.label, spec.event_timestamp, tables, newest)
    label = labels(frame)
    if dated:
        split = dated_split(spec, newest)
    rule = split or spec.split
    if isinstance(rule, HashSplit):
        hashed = rule.columns or [*spec.input_columns, *spec.label_columns]
        split_of = assign_hash_split(frame, rule, list(dict.fromkeys(hashed)))
    else:
        split_of = assign_split(frame[spec.event_timestamp], rule)  # type: ignore[arg-type]
    # What a caller knows (keys, event time) rides along, so rows can be replayed as requests.
    keep = [*spec.entity_keys, *request_keys(spec), *spec.input_columns]
    keep += filter(None, [spec.event_timestamp])
    columns = {
        c: column_values(frame[c]) for c in dict.fromkeys(keep) if c not in (spec.label.name, SPLIT)
    }
    columns |= {spec.label.name: column_values(label), SPLIT: column_values(split_of)}
    # Built from the columns without copying them again: ``frame`` is this call's own.
    return pd.DataFrame(columns, copy=False)
