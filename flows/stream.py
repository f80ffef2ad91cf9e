"""Real-time features: drain a dataset's event log in micro-batches, keeping its window
views as the offline store computes them, as of the stream's watermark, and writing each
micro-batch's changed entities to the online store (where serving reads them). A run that
ends behind its log (lag above a threshold) emits ``mlsys.stream.lagging``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.online import online_sources
from mlsys_core.stream.features import (
    FeatureBatchOutcome,
    event_log_dir,
    feature_stream_job,
    stream_lag,
)
from mlsys_core.stream.online import stream_key_kinds
from tasks.metrics import metered
from tasks.stream import emit_lagging, feature_micro_batch, sync_stream_online


@flow(name="stream-features", log_prints=True)
@metered(rows=lambda r: sum(b.events_in for b in r))
def stream_features(
    spec: SpecRef | None = None,
    stream: str | None = None,
    log_dir: str | None = None,
    max_batches: Annotated[int, Field(ge=1, le=100_000)] = 1000,
    max_segments: Annotated[int, Field(ge=1, le=100_000)] = 100,
    flush: bool = False,
    online: bool = True,
    max_lag_s: Annotated[float | None, Field(ge=0)] = None,
    max_pending_segments: Annotated[int | None, Field(ge=0)] = None,
    from_history: bool = True,
) -> list[FeatureBatchOutcome]:
    """Run micro-batches of one of the dataset's event streams (default: its first) until
    the log holds nothing new; the log defaults to ``<state>/events/<dataset>/<stream>``.

    ``flush`` moves the watermark to the newest event at the end: for a bounded replay.
    ``online`` writes each micro-batch's changed entities to the online store (the
    ``MLSYS_ONLINE_STORE`` setting). At the end, a lag (newest event in the log minus the
    watermark, seconds) above ``max_lag_s`` or more unconsumed segments than
    ``max_pending_segments`` emits ``mlsys.stream.lagging``. ``from_history``: a job that
    has committed nothing starts from the source's newest clean snapshot (the rows from
    before the log's first event), so its windows hold what the offline store's do.
    """
    settings = Settings()
    dataset = spec_or_default(spec, settings.dataset)
    job = feature_stream_job(dataset, stream, max_segments)
    log = log_dir or str(event_log_dir(settings.root, dataset.name, job.stream.name))
    kinds = stream_key_kinds(online_sources(dataset), job) if online else None
    if kinds is not None:  # a store behind the stream's last commit (new, or a crash) catches up
        sync_stream_online(job, settings, kinds)
    outcomes = []
    for _ in range(max_batches):
        outcome, wrote = feature_micro_batch(
            job, log, settings, key_kinds=kinds, from_history=from_history
        )
        if not outcome.segments:
            break
        outcomes.append(outcome)
        if outcome.seeded:
            print(f"started from {outcome.seeded} rows of {job.stream.source} before the log")
        print(
            f"{len(outcome.segments)} segments, {outcome.events_in} events "
            f"({outcome.late} late, {outcome.invalid} invalid) -> entities updated "
            f"{outcome.updated}; watermark {outcome.watermark}"
            + (f"; online {wrote.written}" if wrote else "")
        )
        if outcome.invalid_reasons:
            reasons = "; ".join(f"{r} ({n})" for r, n in outcome.invalid_reasons.items())
            print(f"  set aside in the late table of {job.name}: {reasons}")
    if flush:
        flushed, _ = feature_micro_batch(
            job, log, settings, flush=True, key_kinds=kinds, from_history=from_history
        )
        outcomes.append(flushed)
    if max_lag_s is not None or max_pending_segments is not None:
        lag = stream_lag(job, Path(log), Lake(settings.lake_dir))
        if lag.above(max_lag_s, max_pending_segments):
            print(f"stream {job.name} is lagging: {lag.lag_s} s, {lag.pending_segments} segments")
            emit_lagging(lag, max_lag_s, max_pending_segments)
    return outcomes
