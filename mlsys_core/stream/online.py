"""The stream's side of the online store: each micro-batch's view updates, written through
the same interface materialization writes (``OnlineStoreBase.write_view``), with the time
they are exact as of (their event-time freshness).

A stored view written by the stream holds, per entity, the values known strictly before the
stream's watermark ``W``; its state's ``watermark_ns`` is ``W``. A micro-batch's update holds
only the entities whose values changed since the previous watermark, so it is upserted only
on top of exactly those values (the stored watermark equals the update's ``since``).
Anything else (an empty store, a store materialized by the batch path as of another time, a
crash between the lake commit and the online write, a changed definition) gets the view
rewritten whole from the stream's committed state (:func:`sync_online`). A store already
ahead of the stream (materialized as of a later time) is left alone: values never go back.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.data.lake import Lake
from mlsys_core.features.online import (
    KeyKind,
    OnlineRow,
    OnlineStoreBase,
    ViewState,
    _defaults,
    _payloads,
    encode_keys,
)
from mlsys_core.spec.definitions import WindowView, definitions_hash
from mlsys_core.stream.features import FeatureStreamJob, ViewUpdate, current_values


class OnlineWrite(BaseModel):
    """What one micro-batch wrote online, per view: entities and how (small: a result)."""

    model_config = ConfigDict(frozen=True)

    written: dict[str, int]
    mode: dict[str, str]  # "upsert", "rewrite" or "ahead" (store newer: left alone)
    as_of: str | None


def _dtype(view: WindowView, feature: str) -> str:
    function = next(a.function for a in view.aggregations if a.name == feature)
    return "int64" if function == "count" else "float64"


def _state(
    view: WindowView, kinds: list[KeyKind], as_of_ns: int, snapshot: str | None
) -> ViewState:
    """The stored state of a stream-written view: what materialization would record for it
    as of the same time (same definition hash, defaults and key types)."""
    return ViewState(
        name=view.name,
        kind=view.kind,
        definition=definitions_hash([view]),
        source=view.source,
        join_keys=view.entity.join_keys,
        key_kinds=kinds,
        columns={f: _dtype(view, f) for f in view.features},
        features=view.features,
        defaults=_defaults(view),
        watermark_ns=as_of_ns,
        source_snapshot=snapshot,
    )


def _rows(update: ViewUpdate, kinds: list[KeyKind], as_of_ns: int) -> list[OnlineRow]:
    frame = update.rows.dropna(subset=update.join_keys)
    if frame.empty:
        return []
    keys = encode_keys(frame, update.join_keys, kinds)
    payloads = _payloads(frame, update.features)
    return [OnlineRow(k, p, as_of_ns) for k, p in zip(keys, payloads, strict=True)]


def _fits(state: ViewState | None, view: WindowView, kinds: list[KeyKind]) -> bool:
    return (
        state is not None
        and state.definition == definitions_hash([view])
        and list(state.key_kinds) == list(kinds)
        and state.watermark_ns is not None
    )


def write_updates(
    store: OnlineStoreBase,
    lake: Lake,
    job: FeatureStreamJob,
    updates: list[ViewUpdate],
    key_kinds: dict[str, list[KeyKind]],
    snapshot: str | None = None,
    rewind: bool = False,
) -> OnlineWrite:
    """Write one micro-batch's updates online: an upsert where the store holds the previous
    watermark's values of the view, else the whole view from the stream's state.
    ``rewind`` writes over a store that is ahead (a replay of the past, as the demo does)."""
    views = {v.name: v for v in job.views}
    states = store.load_states()
    written: dict[str, int] = {}
    mode: dict[str, str] = {}
    rewrite: list[str] = []
    as_of = None
    for update in updates:
        if pd.isna(update.as_of):
            continue
        view = views[update.view]
        kinds = key_kinds[view.name]
        as_of_ns = update.as_of.value
        as_of = update.as_of.isoformat()
        state = states.get(view.name)
        ahead = _fits(state, view, kinds) and state.watermark_ns > as_of_ns  # type: ignore[union-attr,operator]
        if ahead and not rewind:
            mode[view.name] = "ahead"
            written[view.name] = 0
        elif (
            _fits(state, view, kinds)
            and update.since is not None
            and state.watermark_ns == update.since.value  # type: ignore[union-attr]
        ):
            rows = _rows(update, kinds, as_of_ns)
            store.write_view(_state(view, kinds, as_of_ns, snapshot), rows, replace=False)
            mode[view.name] = "upsert"
            written[view.name] = len(rows)
        else:
            rewrite.append(view.name)
    if rewrite:
        done = sync_online(store, lake, job, key_kinds, views=rewrite, force=True, rewind=rewind)
        written |= done.written
        mode |= done.mode
    return OnlineWrite(written=written, mode=mode, as_of=as_of)


def sync_online(
    store: OnlineStoreBase,
    lake: Lake,
    job: FeatureStreamJob,
    key_kinds: dict[str, list[KeyKind]],
    views: list[str] | None = None,
    force: bool = False,
    rewind: bool = False,
) -> OnlineWrite:
    """Bring the store's stream views to the stream's committed watermark: each view the
    store does not hold as of exactly that time (unless it is ahead) is rewritten whole from
    the stream's state. A stream that has not run writes nothing."""
    if lake.latest("stream", job.name) is None:
        return OnlineWrite(written={}, mode={}, as_of=None)
    snapshot = lake.latest("stream", job.name)
    source = f"stream/{job.name}/{snapshot.snapshot_id}" if snapshot else None
    by_name = {v.name: v for v in job.views}
    states = store.load_states()
    written: dict[str, int] = {}
    mode: dict[str, str] = {}
    as_of = None
    for update in current_values(lake, job.name):
        if (views is not None and update.view not in views) or pd.isna(update.as_of):
            continue
        view = by_name[update.view]
        kinds = key_kinds[view.name]
        as_of_ns = update.as_of.value
        as_of = update.as_of.isoformat()
        state = states.get(view.name)
        if _fits(state, view, kinds) and not rewind:
            assert state is not None and state.watermark_ns is not None
            if state.watermark_ns > as_of_ns or (state.watermark_ns == as_of_ns and not force):
                mode[view.name] = "ahead" if state.watermark_ns > as_of_ns else "current"
                written[view.name] = 0
                continue
        rows = _rows(update, kinds, as_of_ns)
        store.write_view(_state(view, kinds, as_of_ns, source), rows, replace=True)
        mode[view.name] = "rewrite"
        written[view.name] = len(rows)
    return OnlineWrite(written=written, mode=mode, as_of=as_of)


def stream_key_kinds(sources: dict[str, Any], job: FeatureStreamJob) -> dict[str, list[KeyKind]]:
    """Each view's key types from ``online_sources(spec)`` (the spec's contracts say them)."""
    return {v.name: list(sources[v.name].key_kinds) for v in job.views}
